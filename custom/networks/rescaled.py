"""A network trained at another pixel spacing, run on the inference's slices.

A DALACE training at 2 mm and one at 3 mm see the same anatomy at different scales and err on different
voxels; in an ensemble each must see slices at its own scale. Rather than resample the volume once per
member, the 3 mm pipeline's slices are resized for the 2 mm member and its logits resized back: measured
on the cross-validation folds, that member segments as it does on its own 2 mm grid (per case within
0.005 Dice; ``docs/README.md``, Performance).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["RescaledInput"]


class RescaledInput(nn.Module):
    """``network``, trained on slices of ``trained_spacing`` mm pixels, taking slices of ``spacing`` mm.

    The slice is resized by ``spacing / trained_spacing`` (bilinear; antialiased when it shrinks), goes
    through ``network``, and its logits are resized back to the slice's pixels. The state_dict is
    ``network.*`` and ``trained_spacing`` (in-plane, mm), so an ensemble's file says which member was
    trained at which spacing.

    Args:
        network: image slice (B, C, H, W) -> logits (B, K, H, W).
        trained_spacing: the in-plane pixel spacing of its training, mm (one value or two).
        spacing: the in-plane pixel spacing of the slices it is given, mm (one value or two).
    """

    def __init__(self, network: nn.Module, trained_spacing: float | Sequence[float], spacing: float | Sequence[float]) -> None:
        super().__init__()
        self.network = network
        trained = torch.as_tensor(trained_spacing, dtype=torch.float32).flatten()[:2].expand(2).clone()
        given = torch.as_tensor(spacing, dtype=torch.float32).flatten()[:2].expand(2)
        if (trained <= 0).any() or (given <= 0).any():
            raise ValueError(f"RescaledInput: spacings must be positive, got trained {trained.tolist()} and given {given.tolist()} mm.")
        self.register_buffer("trained_spacing", trained)
        self.register_buffer("spacing", given.clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        scale = (self.spacing / self.trained_spacing).tolist()  # the file's trained_spacing, once loaded
        if scale == [1.0, 1.0]:
            return self.network(x)
        shape = [max(1, int(round(n * s))) for n, s in zip(size, scale)]
        y = F.interpolate(x, size=shape, mode="bilinear", align_corners=False, antialias=min(scale) < 1)
        return F.interpolate(self.network(y), size=tuple(size), mode="bilinear", align_corners=False)
