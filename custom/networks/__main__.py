"""Command line for checkpoints: ``python -m custom.networks <command> --help``.

Commands::

    # models/model_ensemble.pt for configs/ensemble.yaml: DALACE's model.pt (both paths) and a
    # CT-only U-Net's model.pt (unet_ct.yaml at the same sizes)
    python -m custom.networks ensemble bundle/models/model.pt <unet run>/models/model.pt bundle/models/model_ensemble.pt
"""

from __future__ import annotations

import fire
import torch

from custom.handlers import check_checkpoint, require_file
from custom.utils import atomic_save

from .ensemble import ensemble_state


def _state(path: str, what: str) -> dict:
    """The state_dict in ``path``, loaded with ``weights_only=True``; errors name the file and the problem."""
    check_checkpoint(require_file(path, what), what)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{what} {path!r} is not a bare state_dict (as models/model.pt is).")
    return state


def ensemble(dalace: str, unet: str, output: str) -> str:
    """Write ``output``: the state_dict of configs/ensemble.yaml's network from its members' files."""
    dalace_state, unet_state = _state(dalace, "DALACE model"), _state(unet, "U-Net model")
    if not any(k.startswith("anatomy_encoder.") for k in dalace_state):
        raise ValueError(f"DALACE model {dalace!r} has no anatomy_encoder.* weights: is it the U-Net's?")
    if any(k.startswith(("anatomy_encoder.", "segmenter.")) for k in unet_state):
        raise ValueError(f"U-Net model {unet!r} holds DALACE's weights (anatomy_encoder.* or segmenter.*), not a plain U-Net's.")
    atomic_save(ensemble_state({"dalace": dalace_state, "unet_ct": unet_state}), output)
    return output


if __name__ == "__main__":
    fire.Fire({"ensemble": ensemble})
