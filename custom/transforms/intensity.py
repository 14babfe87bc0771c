"""MR intensity normalization that a large bright structure does not skew.

Percentile scaling (MONAI's ``ScaleIntensityRangePercentiles``) maps a volume's upper percentile to 1;
when a large bright cyst or much fluid holds that percentile, the liver of that volume comes out far
darker than in others (CHAOS T2 case 36: median liver -0.70 against -0.46 to +0.03 for the rest).
Standardizing by the mean and spread of the voxels brighter than the volume's mean (the body, mostly
soft tissue) keeps the liver where it is in the other volumes (-0.21 to +0.26, case 36 included).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends
from monai.utils.type_conversion import convert_to_tensor

__all__ = ["ForegroundStandardize", "ForegroundStandardized"]


class ForegroundStandardize(Transform):
    """``(x - mean) / (num_std * std)`` clipped to [-1, 1], with the mean and standard deviation of the
    voxels above the image's mean. The background is not at -1 (about -0.4 to -0.6 on CHAOS T2): pad
    with the image's minimum, as training's slice padding (``mode: minimum``) does.

    Args:
        num_std: how many standard deviations map to 1.
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, num_std: float = 3.0) -> None:
        if not num_std > 0:
            raise ValueError(f"ForegroundStandardize: num_std must be positive, got {num_std}.")
        self.num_std = float(num_std)

    def __call__(self, img: NdarrayOrTensor) -> torch.Tensor:
        img_t = convert_to_tensor(img, track_meta=True)
        values = img_t.float()
        foreground = values[values > values.mean()]
        if foreground.numel() < 2 or float(foreground.std()) == 0.0:
            raise ValueError("ForegroundStandardize: the image has no spread above its mean (constant or nearly so).")
        return ((values - foreground.mean()) / (self.num_std * foreground.std())).clamp(-1.0, 1.0)


class ForegroundStandardized(MapTransform):
    """Dictionary form of :class:`ForegroundStandardize`."""

    def __init__(self, keys: KeysCollection, num_std: float = 3.0, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.standardize = ForegroundStandardize(num_std)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.standardize(d[key])
        return d
