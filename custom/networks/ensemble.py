"""Several segmentation networks as one: their class probabilities averaged.

Trainings that differ only in their seed err on different MR volumes and voxels, and so do DALACE
and the CT-only U-Net: averaged, they segment CHAOS T2 better than any one of them (``docs/README.md``,
Performance). MR's default is four DALACE trainings (``models/model_seed_ensemble.pt``; one trained at
2 mm pixels, run through :class:`~custom.networks.RescaledInput`), built by
:func:`network_for_checkpoint` from inference.yaml's one-training network; ``configs/ensemble.yaml``
builds DALACE and a U-Net. The weights are one state_dict (:func:`ensemble_state`).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import List

import torch
from torch import nn

__all__ = ["ProbabilityEnsemble", "checkpoint_members", "ensemble_state", "log_mean_softmax", "network_for_checkpoint"]


def log_mean_softmax(logits: List[torch.Tensor]) -> torch.Tensor:  # noqa: UP006 (TorchScript)
    """The logarithm of the mean of the logits' softmax over channels: logits whose softmax is the
    average of the inputs' class probabilities (the merge of both paths and of an ensemble)."""
    probabilities = torch.stack([torch.softmax(x.float(), dim=1) for x in logits]).mean(0)
    return torch.log(probabilities.clamp_min(1e-12))


class ProbabilityEnsemble(nn.Module):
    """Image slice in, logits out, as each member: logits whose softmax is the members' mean softmax.

    Args:
        members: name -> network, each (B, C, H, W) -> (B, num_classes, H, W) logits; the state_dict
            keys are ``members.<name>.*``.
    """

    def __init__(self, members: Mapping[str, nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("ProbabilityEnsemble needs at least one member network.")
        self.members = nn.ModuleDict(dict(members))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: List[torch.Tensor] = []  # noqa: UP006
        for member in self.members.values():
            logits.append(member(x))
        return log_mean_softmax(logits)

    def domain_agnostic_image(self, x: torch.Tensor) -> torch.Tensor:
        """That of the first member that renders one (DALACE's; inference.yaml's save_domain_agnostic)."""
        for member in self.members.values():
            if hasattr(member, "domain_agnostic_image"):
                return member.domain_agnostic_image(x)
        raise AttributeError("no member of this ensemble renders a domain-agnostic image")


def ensemble_state(states: Mapping[str, Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The state_dict of a :class:`ProbabilityEnsemble` from its members' (name -> state_dict)."""
    return {f"members.{name}.{k}": v for name, state in states.items() for k, v in state.items()}


def checkpoint_members(keys: Iterable[str]) -> list[str]:
    """The member names in an ensemble's state_dict keys (``members.<name>.*``), in the file's order; []
    for one network's."""
    names = [k.split(".")[1] for k in keys if k.startswith("members.") and k.count(".") > 1]
    return list(dict.fromkeys(names))


def network_for_checkpoint(path: str | os.PathLike, network: nn.Module, spacing: float | Sequence[float] | None = None) -> nn.Module:
    """The network whose weights ``path`` holds: ``network`` itself, or, where the file is an ensemble of
    networks like it (``members.<name>.*`` each with ``network``'s keys), a :class:`ProbabilityEnsemble` of
    ``network`` and copies of it under the file's names. So one inference config segments with one
    training's ``model.pt`` or with several trainings' ensemble, whichever its ``ckpt_path`` names.
    A member trained at another pixel spacing (``members.<name>.network.*`` and ``.trained_spacing``,
    as ``python -m custom.networks seed_ensemble --spacings`` writes it) becomes a
    :class:`~custom.networks.RescaledInput` of its copy, given slices of ``spacing`` mm.

    A file that is missing or does not load gives ``network`` back: the inference's checks that follow
    (``require_file``, ``check_checkpoint``) name the file and its problem."""
    from .rescaled import RescaledInput

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return network
    if not isinstance(state, Mapping):
        return network
    names = checkpoint_members(state)
    keys = set(network.state_dict())
    if not names or set(state) == keys:
        return network
    members: dict[str, nn.Module] = {}
    for i, name in enumerate(names):
        prefix = f"members.{name}."
        own = {k[len(prefix) :] for k in state if k.startswith(prefix)}
        member = network if i == 0 else copy.deepcopy(network)
        if own == keys:
            members[name] = member
        elif own == {f"network.{k}" for k in keys} | {"trained_spacing"} and spacing is not None:
            members[name] = RescaledInput(member, state[f"{prefix}trained_spacing"].tolist(), spacing)
        else:
            return network  # members of another kind (ensemble.yaml's U-Net): check_checkpoint lists the keys
    return ProbabilityEnsemble(members)
