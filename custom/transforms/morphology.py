"""Cut the liver mask free of neighbours that touch it through thin bridges.

Both DALACE and the CT-only U-Net over-segment MR into the stomach, bowel and gallbladder beside the
liver, and the excess is usually joined to the liver, so keeping the largest connected component keeps
it. Where the join is narrower than the liver itself, an opening (erosion then dilation by a ball of
``radius_mm``) breaks it: the largest component of the opened mask is the liver's core, and the mask's
voxels within ``radius_mm`` of that core are kept, so the liver's own border and thin tips survive
while a neighbour beyond the bridge goes. Distances are in mm, from the image's affine, so anisotropic
MR (1.25 x 1.25 x 7.7 mm in CHAOS T2) is opened by a true ball.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.data import MetaTensor
from monai.data.utils import affine_to_spacing
from monai.transforms import MapTransform, Transform
from monai.transforms.utils import get_largest_connected_component_mask
from monai.utils import TransformBackends
from monai.utils.type_conversion import convert_to_dst_type
from scipy.ndimage import distance_transform_edt

__all__ = ["DetachThinBridges", "DetachThinBridgesd", "detach_thin_bridges"]


def detach_thin_bridges(mask: np.ndarray, radius_mm: float, spacing: Sequence[float], connectivity: int | None = None) -> np.ndarray:
    """The voxels of the boolean spatial ``mask`` within ``radius_mm`` of the largest component of its
    opening by a ball of ``radius_mm``. A mask with nothing thicker than the ball is returned whole:
    there is no core to keep, and removing everything would lose the segmentation."""
    mask = np.asarray(mask, dtype=bool)
    if radius_mm <= 0 or not mask.any():
        return mask
    # work in the mask's bounding box, padded so that distances to the outside are those of the full image
    pad = [int(np.ceil(radius_mm / s)) + 1 for s in spacing]
    nz = np.nonzero(mask)
    box = tuple(slice(max(int(i.min()) - p, 0), min(int(i.max()) + p + 1, n)) for i, p, n in zip(nz, pad, mask.shape))
    sub = mask[box]
    eroded = distance_transform_edt(sub, sampling=spacing) > radius_mm
    if not eroded.any():
        return mask
    opened = distance_transform_edt(~eroded, sampling=spacing) <= radius_mm
    core = get_largest_connected_component_mask(opened & sub, connectivity=connectivity)
    kept = sub & (distance_transform_edt(~core, sampling=spacing) <= radius_mm)
    out = np.zeros_like(mask)
    out[box] = kept
    return out


class DetachThinBridges(Transform):
    """Set to 0 the voxels of ``applied_labels`` that :func:`detach_thin_bridges` does not keep, in each
    channel of a channel-first label image (after ``AsDiscrete``/``KeepLargestConnectedComponent``).

    Args:
        radius_mm: the ball's radius; 0 leaves the image unchanged.
        applied_labels: label values that form the mask (the liver: 1).
        connectivity: of the components, as MONAI's ``KeepLargestConnectedComponent`` (None: full).
    """

    backend = [TransformBackends.NUMPY]

    def __init__(self, radius_mm: float, applied_labels: Sequence[int] = (1,), connectivity: int | None = None) -> None:
        if isinstance(radius_mm, bool) or not isinstance(radius_mm, (int, float)) or not radius_mm >= 0:
            raise ValueError(f"DetachThinBridges: radius_mm (inference.yaml's bridge_radius_mm) must be a number, 0 or more; got {radius_mm!r}.")
        self.radius_mm = float(radius_mm)
        self.applied_labels = [int(v) for v in applied_labels]
        self.connectivity = connectivity

    def __call__(self, img: NdarrayOrTensor, spacing: Sequence[float] | None = None) -> NdarrayOrTensor:
        """``spacing`` (mm per spatial axis) defaults to the affine's of a ``MetaTensor``."""
        if self.radius_mm == 0:
            return img
        if spacing is None:
            if not isinstance(img, MetaTensor):
                raise ValueError("DetachThinBridges: the image carries no affine (not a MetaTensor); pass spacing.")
            spacing = affine_to_spacing(img.affine, r=img.ndim - 1).tolist()
        spacing = [float(s) for s in spacing]
        if len(spacing) != img.ndim - 1:
            raise ValueError(f"DetachThinBridges: {len(spacing)} spacings for {img.ndim - 1} spatial dimensions.")
        arr = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
        out = arr.copy()
        for c in range(arr.shape[0]):
            mask = np.isin(arr[c], self.applied_labels)
            out[c][mask & ~detach_thin_bridges(mask, self.radius_mm, spacing, self.connectivity)] = 0
        return convert_to_dst_type(out, img)[0]


class DetachThinBridgesd(MapTransform):
    """Dictionary form of :class:`DetachThinBridges`; the spacing comes from each key's affine."""

    backend = DetachThinBridges.backend

    def __init__(
        self,
        keys: KeysCollection,
        radius_mm: float,
        applied_labels: Sequence[int] = (1,),
        connectivity: int | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.detach = DetachThinBridges(radius_mm, applied_labels, connectivity)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            if self.detach.radius_mm and not isinstance(d[key], MetaTensor):
                raise ValueError(f"DetachThinBridgesd: '{key}' carries no affine (not a MetaTensor), so its spacing is unknown.")
            d[key] = self.detach(d[key])
        return d
