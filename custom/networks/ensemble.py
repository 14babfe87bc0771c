"""Several segmentation networks as one: their class probabilities averaged (an inference option).

DALACE and the CT-only U-Net trained with the appearance augmentation both over-segment MR, but
mostly in different volumes and voxels: averaged, they segment CHAOS T2 better than either
(``docs/README.md``, Performance). ``configs/ensemble.yaml`` builds this module around inference.yaml's
DALACE network and a U-Net; its weights are one state_dict (:func:`ensemble_state`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import List

import torch
from torch import nn

__all__ = ["ProbabilityEnsemble", "ensemble_state", "log_mean_softmax"]


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
