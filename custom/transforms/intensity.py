"""MR intensity normalizations that a large bright structure does not skew.

Percentile scaling (MONAI's ``ScaleIntensityRangePercentiles``) maps a volume's upper percentile to 1;
when a large bright cyst or much fluid holds that percentile, the liver of that volume comes out far
darker than in others (CHAOS T2 case 36: median liver -0.70 against -0.46 to +0.03 for the rest).
Two answers:

- :class:`ScaleIntensityRangePercentilesCappedd` (the bundle's): percentile scaling whose upper bound a
  bright tail cannot stretch beyond ``max_ratio`` times the ``reference`` percentile (from the lower
  bound). Volumes without such a tail are scaled exactly as by percentiles; in case 36 (its 99.5th
  percentile 4.4 times as far from the 0.5th as its 90th, 2.1 to 3.0 in the other CHAOS T2) the cyst saturates instead.
- :class:`ForegroundStandardized`: standardizing by the mean and spread of the voxels brighter than the
  volume's mean (the body, mostly soft tissue), which changes every volume's scaling (measured, not
  adopted: docs/README.md).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.transforms import MapTransform, ScaleIntensityRange, Transform
from monai.transforms.utils_pytorch_numpy_unification import percentile
from monai.utils import TransformBackends
from monai.utils.type_conversion import convert_to_tensor

__all__ = [
    "ForegroundStandardize",
    "ForegroundStandardized",
    "ScaleIntensityRangePercentilesCapped",
    "ScaleIntensityRangePercentilesCappedd",
]


class ScaleIntensityRangePercentilesCapped(Transform):
    """MONAI's ``ScaleIntensityRangePercentiles`` (``lower`` and ``upper`` percentiles to ``b_min`` and
    ``b_max``) with the upper bound at most ``lower + max_ratio * (reference - lower)``, the percentiles
    taken as intensities: a bright structure that holds more than ``100 - reference`` percent of the
    volume can no longer compress the rest of its range. ``max_ratio`` 0 (or None) scales by the
    percentiles alone.

    Args:
        lower, upper: percentiles (0-100) mapped to ``b_min`` and ``b_max``.
        b_min, b_max: the output range.
        clip: clip the output to [b_min, b_max].
        reference: the percentile the cap is measured from; below ``upper``, above ``lower``.
        max_ratio: the cap, in multiples of ``reference - lower``; at least 1, or 0 for no cap.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        lower: float,
        upper: float,
        b_min: float = -1.0,
        b_max: float = 1.0,
        clip: bool = True,
        reference: float = 90.0,
        max_ratio: float | None = 3.0,
    ) -> None:
        lower, upper, reference = float(lower), float(upper), float(reference)
        max_ratio_given = max_ratio
        if not 0.0 <= lower < reference < upper <= 100.0:
            raise ValueError(
                "ScaleIntensityRangePercentilesCapped: need 0 <= lower < reference < upper <= 100, got "
                f"lower={lower:g}, reference={reference:g}, upper={upper:g}."
            )
        try:
            max_ratio = float(max_ratio or 0.0)
        except (TypeError, ValueError):
            max_ratio = float("nan")  # refused below, with what was given
        if max_ratio != 0.0 and not max_ratio >= 1.0:
            raise ValueError(
                "ScaleIntensityRangePercentilesCapped: max_ratio (the bundle's mr_tail_cap) must be 0 (no cap) "
                f"or a number of at least 1, got {max_ratio_given!r}."
            )
        self.lower, self.upper, self.reference, self.max_ratio = lower, upper, reference, max_ratio
        self.b_min, self.b_max, self.clip = float(b_min), float(b_max), bool(clip)

    def range(self, img: NdarrayOrTensor) -> tuple[float, float]:
        """The intensities mapped to ``b_min`` and ``b_max``."""
        a_min, a_max, a_ref = (float(v) for v in percentile(img, [self.lower, self.upper, self.reference]))  # one pass
        if self.max_ratio:
            a_max = min(a_max, a_min + self.max_ratio * (a_ref - a_min))
        return a_min, a_max

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        a_min, a_max = self.range(img)
        return ScaleIntensityRange(a_min, a_max, self.b_min, self.b_max, clip=self.clip)(img)


class ScaleIntensityRangePercentilesCappedd(MapTransform):
    """Dictionary form of :class:`ScaleIntensityRangePercentilesCapped`."""

    def __init__(
        self,
        keys: KeysCollection,
        lower: float,
        upper: float,
        b_min: float = -1.0,
        b_max: float = 1.0,
        clip: bool = True,
        reference: float = 90.0,
        max_ratio: float | None = 3.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.scale = ScaleIntensityRangePercentilesCapped(lower, upper, b_min, b_max, clip, reference, max_ratio)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.scale(d[key])
        return d


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
