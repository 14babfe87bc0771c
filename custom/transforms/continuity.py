"""Drop the parts of a liver mask that drift away from the liver from one axial slice to the next.

The 2D networks segment one axial slice at a time, and on MR they often carry the liver on into the
bowel, kidney or stomach below its tip: a chain of slices in which each piece overlaps the one before
only in part, so the mask stays one connected component and neither the largest-component step nor
cutting thin bridges removes it. A liver's cross-sections shrink towards its dome and its tip while
staying inside those nearer its middle. So, starting from the axial slice where the mask is largest,
each 2D piece of the mask is kept only if at least ``min_overlap`` of its area lies inside what was
kept ``distance_mm`` nearer that slice; a piece that drifts out of the liver goes, and so does all that
hangs on it further out. Axial means the patient's superior-inferior axis, read from the affine.

A mask that misses much of the liver in a few middle slices looks the same from one slice to the next:
the pieces beyond that waist overlap it in part, and the walk would drop them with the liver they hold.
The bowel below the tip was at most a quarter of the masks it was dropped from on CHAOS T2, while such a
waist put 46 % of one mask beyond it, so when more than ``max_removed`` of the mask would go, the
mask is left whole (and the log says so; it also says how much of each mask it removes).
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence

import nibabel as nib
import numpy as np
import torch
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends
from monai.utils.type_conversion import convert_to_dst_type
from scipy.ndimage import label as label_components

logger = logging.getLogger(__name__)

__all__ = ["KeepContinuousSlices", "KeepContinuousSlicesd", "axial_axis_and_spacing", "axial_axis_and_step", "keep_continuous_slices"]


def keep_continuous_slices(
    mask: np.ndarray, min_overlap: float, axis: int, step: int = 1, max_removed: float = 1.0, name: str = "the image"
) -> np.ndarray:
    """The voxels of the boolean 3D ``mask`` that survive the walk described in the module's docstring:
    slices along ``axis``, each 2D piece (8-connected) kept when at least ``min_overlap`` of it lies in
    the kept mask ``step`` slices nearer the largest slice (or in that slice, for those closer to it).
    The largest slice is kept whole; so is the mask if more than ``max_removed`` of it would go (a
    warning naming ``name``; what is removed is logged too)."""
    mask = np.asarray(mask, dtype=bool)
    if min_overlap <= 0 or not mask.any():
        return mask
    m = np.moveaxis(mask, axis, 0)
    kept = np.zeros_like(m)
    seed = int(np.argmax(m.reshape(m.shape[0], -1).sum(axis=1)))
    kept[seed] = m[seed]
    connectivity = np.ones((3, 3), dtype=bool)
    for outward, inward in ((range(seed + 1, m.shape[0]), -1), (range(seed - 1, -1, -1), 1)):
        for k in outward:
            ref = k + inward * step
            if (ref - seed) * inward > 0:  # past the largest slice: compare with it
                ref = seed
            pieces, n = label_components(m[k], structure=connectivity)
            if not n:
                continue
            area = np.bincount(pieces.ravel(), minlength=n + 1)
            inside = np.bincount(pieces[kept[ref]], minlength=n + 1)
            keep = inside >= min_overlap * area
            keep[0] = False  # the background
            kept[k] = keep[pieces]
    removed = 1 - kept.sum() / m.sum()
    if removed > max_removed:
        logger.warning(
            f"slice continuity: would remove {removed:.0%} of the mask of {name}, more than slice_continuity_max_removed "
            f"({max_removed:.0%}): the mask is left whole (a slice in its middle may miss part of the liver)"
        )
        return mask
    if removed > 0:
        logger.info(f"slice continuity: removed {removed:.1%} of the mask of {name}")
    return np.moveaxis(kept, 0, axis)


def axial_axis_and_spacing(affine: np.ndarray) -> tuple[int, float]:
    """The voxel axis nearest the patient's superior-inferior axis, and the spacing along it in mm."""
    affine = np.asarray(affine, dtype=float)
    axis = int(np.nonzero(nib.orientations.io_orientation(affine)[:, 0] == 2)[0][0])
    return axis, float(np.linalg.norm(affine[:3, axis]))


def axial_axis_and_step(affine: np.ndarray, distance_mm: float) -> tuple[int, int]:
    """The axial axis, and the whole number of its slices (at least one) nearest ``distance_mm``."""
    axis, spacing = axial_axis_and_spacing(affine)
    return axis, max(1, int(round(distance_mm / spacing)))


class KeepContinuousSlices(Transform):
    """Set to 0 the voxels of ``applied_labels`` that :func:`keep_continuous_slices` does not keep, in
    each channel of a channel-first 3D label image with an affine (a ``MetaTensor``), after
    ``KeepLargestConnectedComponent``.

    Args:
        min_overlap: the fraction of a slice's piece that must lie in the kept mask ``distance_mm``
            nearer the largest slice (inference.yaml's ``slice_continuity``); 0 leaves the image unchanged.
        distance_mm: how far apart the compared slices are: the nearest whole number of slices, at
            least one (CHAOS T2's 7.7 mm slices: adjacent ones; a 1 mm CT: 8 slices apart).
        max_removed: the largest fraction of a mask the step may remove; a mask of which it would
            remove more is left whole (``slice_continuity_max_removed``).
        applied_labels: label values that form the mask (the liver: 1).
    """

    backend = [TransformBackends.NUMPY]

    def __init__(
        self, min_overlap: float, distance_mm: float = 7.5, max_removed: float = 1 / 3, applied_labels: Sequence[int] = (1,)
    ) -> None:
        if isinstance(min_overlap, bool) or not isinstance(min_overlap, (int, float)) or not 0 <= min_overlap <= 1:
            raise ValueError(
                f"KeepContinuousSlices: min_overlap (inference.yaml's slice_continuity) must be a fraction from 0 to 1; got {min_overlap!r}."
            )
        if isinstance(distance_mm, bool) or not isinstance(distance_mm, (int, float)) or not distance_mm > 0:
            raise ValueError(
                f"KeepContinuousSlices: distance_mm (inference.yaml's slice_continuity_mm) must be a number above 0; got {distance_mm!r}."
            )
        if isinstance(max_removed, bool) or not isinstance(max_removed, (int, float)) or not 0 <= max_removed <= 1:
            raise ValueError(
                f"KeepContinuousSlices: max_removed (inference.yaml's slice_continuity_max_removed) must be a fraction from 0 to 1; got {max_removed!r}."
            )
        self.min_overlap = float(min_overlap)
        self.distance_mm = float(distance_mm)
        self.max_removed = float(max_removed)
        self.applied_labels = [int(v) for v in applied_labels]

    def __call__(self, img: NdarrayOrTensor, affine: np.ndarray | None = None) -> NdarrayOrTensor:
        """``affine`` defaults to a ``MetaTensor``'s own."""
        if self.min_overlap == 0:
            return img
        if affine is None:
            if not isinstance(img, MetaTensor):
                raise ValueError("KeepContinuousSlices: the image carries no affine (not a MetaTensor); pass affine.")
            affine = img.affine
        if img.ndim != 4:
            raise ValueError(f"KeepContinuousSlices: expected a channel-first 3D image, got shape {tuple(img.shape)}.")
        affine = affine.detach().cpu().numpy() if isinstance(affine, torch.Tensor) else np.asarray(affine)
        axis, step = axial_axis_and_step(affine, self.distance_mm)
        name = str(img.meta.get("filename_or_obj", "the image")) if isinstance(img, MetaTensor) else "the image"
        arr = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
        out = arr.copy()
        for c in range(arr.shape[0]):
            mask = np.isin(arr[c], self.applied_labels)
            kept = keep_continuous_slices(mask, self.min_overlap, axis, step, self.max_removed, name)
            out[c][mask & ~kept] = 0
        return convert_to_dst_type(out, img)[0]


class KeepContinuousSlicesd(MapTransform):
    """Dictionary form of :class:`KeepContinuousSlices`; the axial axis and its spacing come from each
    key's affine."""

    backend = KeepContinuousSlices.backend

    def __init__(
        self,
        keys: KeysCollection,
        min_overlap: float,
        distance_mm: float = 7.5,
        max_removed: float = 1 / 3,
        applied_labels: Sequence[int] = (1,),
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.keep = KeepContinuousSlices(min_overlap, distance_mm, max_removed, applied_labels)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            if self.keep.min_overlap and not isinstance(d[key], MetaTensor):
                raise ValueError(f"KeepContinuousSlicesd: '{key}' carries no affine (not a MetaTensor), so its axial axis is unknown.")
            d[key] = self.keep(d[key])
        return d
