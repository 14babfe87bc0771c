"""A network that refuses a state_dict which is not its own, however it is loaded.

PyTorch's ``load_state_dict(strict=False)`` loads the keys it knows and leaves the others at their
random initial values. MONAI Label loads the ``models/*.pt`` file a user picks (its ``model_filename``
option lists every one) into the bundle's ``network_def`` that way, so the shipped ensembles and
``model_ct.pt`` would segment MR with random weights and only a warning in the server's log.
"""

from __future__ import annotations

from torch import nn

from .ensemble import checkpoint_members

__all__ = ["refuse_partial_loads"]


def _examples(keys: list[str]) -> str:
    return ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")


def refuse_partial_loads(network: nn.Module) -> nn.Module:
    """``network``, which now raises a ``RuntimeError`` on any ``load_state_dict`` (strict or not) that
    leaves one of its weights unloaded or brings keys it does not have, naming what kind of file it was
    given. Copies (``copy.deepcopy``) keep the check."""

    def check(module: nn.Module, incompatible) -> None:
        missing, unexpected = list(incompatible.missing_keys), list(incompatible.unexpected_keys)
        if not missing and not unexpected:
            return
        members = checkpoint_members(unexpected)
        if members:
            given = f"an ensemble of {len(members)} networks ({', '.join(members)})"
        else:
            parts = [f"{len(missing)} of its {len(module.state_dict())} weights missing ({_examples(missing)})"] if missing else []
            parts += [f"{len(unexpected)} keys it does not have ({_examples(unexpected)})"] if unexpected else []
            given = "a state_dict with " + " and ".join(parts)
        raise RuntimeError(
            f"{type(module).__name__} takes the weights of one training's network (models/model.pt for MR, "
            f"model_ct.pt for CT), and was given {given}: it would "
            "segment with weights left at random. In MONAI Label, choose model.pt (the model_filename option); "
            "model_seed_ensemble.pt (MR) and model_ct.pt (CT) are for inference.yaml, which builds the network "
            "each file holds from its ckpt_path."
        )

    network.register_load_state_dict_post_hook(check)
    return network
