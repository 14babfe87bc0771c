"""Neighbouring slices as channels: through-plane context for the 2D networks (2.5D; beyond the paper).

A 2D network that sees one axial slice cannot tell where the liver ends along the body's axis; most of
what DALACE's masks add to the liver lies above its dome or below its tip, or in slices where bowel and
stomach lie against it (docs/README.md, Performance). Giving each slice its neighbours as extra channels
lets the networks see that context at a 2D network's cost. The neighbours are taken at a fixed distance
in millimetres, read from the image's affine, so a volume segmented on its own thick slices
(``keep_slices``) sees the same physical context as the training's isotropic grid: between stored slices
they are interpolated linearly. Measured cross-validated on CHAOS T2 (docs/shipped/tableA_accuracy_2500_context.md),
the masks added less along z but missed more liver, no better overall: ``slice_context`` is off by default.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import convert_to_dst_type, convert_to_tensor

__all__ = ["NeighbouringSlices", "NeighbouringSlicesd"]


class NeighbouringSlices(Transform):
    """A one-channel volume -> ``2 * num_neighbours + 1`` channels: each slice with its neighbours.

    Channel ``num_neighbours + k`` of slice ``z`` holds the image at ``z + k * distance_mm`` along
    ``slice_dim`` (``k`` from ``-num_neighbours`` to ``num_neighbours``; channel ``num_neighbours`` is
    the slice itself), linearly interpolated between stored slices and repeating the first or last
    slice beyond the volume. The slice spacing comes from the affine (a MetaTensor's, or ``affine``).

    Args:
        num_neighbours: neighbours on each side; 0 returns the image unchanged.
        distance_mm: the distance between neighbours, in mm (the training grid's slice spacing).
        slice_dim: the spatial axis the 2D networks slice along (2 after ``Orientationd`` to RAS: superior).
    """

    def __init__(self, num_neighbours: int, distance_mm: float, slice_dim: int = 2) -> None:
        if int(num_neighbours) != num_neighbours or num_neighbours < 0:
            raise ValueError(f"num_neighbours must be a non-negative integer, got {num_neighbours!r}.")
        if not float(distance_mm) > 0:
            raise ValueError(f"distance_mm must be positive, got {distance_mm!r}.")
        self.num_neighbours = int(num_neighbours)
        self.distance_mm = float(distance_mm)
        self.slice_dim = int(slice_dim)

    def __call__(self, img: NdarrayOrTensor, affine: NdarrayOrTensor | None = None) -> NdarrayOrTensor:
        if not self.num_neighbours:
            return img
        x = convert_to_tensor(img, track_meta=False)
        if x.ndim != 4 or x.shape[0] != 1:
            raise ValueError(f"NeighbouringSlices expects a one-channel 3D image (1, H, W, D), got shape {tuple(x.shape)}.")
        if affine is None:
            if not isinstance(img, MetaTensor):
                raise ValueError("NeighbouringSlices needs the image's affine (a MetaTensor, or affine=...) for its slice spacing.")
            affine = img.affine
        spacing = float(np.linalg.norm(np.asarray(convert_to_tensor(affine, track_meta=False).cpu(), dtype=float)[:3, self.slice_dim]))
        if not spacing > 0:
            raise ValueError(f"NeighbouringSlices: the affine gives no spacing along axis {self.slice_dim}.")
        axis = self.slice_dim + 1
        n = x.shape[axis]
        index = torch.arange(n, dtype=torch.float64)
        channels = []
        for k in range(-self.num_neighbours, self.num_neighbours + 1):
            position = (index + k * self.distance_mm / spacing).clamp(0, n - 1)
            lower = position.floor().long()
            upper = (lower + 1).clamp(max=n - 1)
            weight = (position - lower).to(x.dtype)
            shape = [1] * x.ndim
            shape[axis] = n
            a, b = x.index_select(axis, lower), x.index_select(axis, upper)
            channels.append(torch.where(weight.view(shape) > 0, a + (b - a) * weight.view(shape), a))
        out = torch.cat(channels, dim=0)
        return convert_to_dst_type(out, img)[0]


class NeighbouringSlicesd(MapTransform):
    """Dictionary form of :class:`NeighbouringSlices` (images only: a label keeps its one channel)."""

    def __init__(self, keys: KeysCollection, num_neighbours: int, distance_mm: float, slice_dim: int = 2,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = NeighbouringSlices(num_neighbours, distance_mm, slice_dim)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d
