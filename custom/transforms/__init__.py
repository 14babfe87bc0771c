"""MONAI transforms that MONAI lacks, for the DALACE preprocessing chains.

Everything else in the chains (reading, orientation, resampling, normalization, slice sampling,
augmentation, inversion) is MONAI's own; see the bundle's ``configs/train.yaml`` and ``inference.yaml``.

- :class:`N4BiasFieldCorrectiond`: MR bias-field correction with ITK's N4, fitted on a shrunk copy and
  applied at full resolution.
- :class:`LiverLabeld`: binary liver mask from a label map whose liver value is declared in the datalist.
- :class:`AtomicSaveImaged`: ``SaveImaged`` that writes each file to a temporary name and renames it.
- :class:`SafeSpacingd`: ``Spacingd`` that tolerates MONAI Label's ``image_path`` string key.
- :class:`ScaleIntensityRangePercentilesCappedd` (and array form): MR percentile scaling whose upper
  bound a large bright structure (cyst, fluid) cannot stretch beyond a multiple of a lower percentile.
- :class:`ForegroundStandardized` (and array form): MR normalization by the mean and spread of the
  voxels above the volume's mean, which a large bright cyst does not skew as it does percentiles.
- :class:`DetachThinBridgesd` (and array form): keeps the liver mask's part within a radius of the
  largest component of its opening, cutting off neighbours joined to it through thin bridges.
- :class:`KeepContinuousSlicesd` (and array form): drops the pieces of the liver mask that drift out of
  the liver from one axial slice to the next (into the bowel below its tip), walking out from its
  largest slice.
- :class:`NeighbouringSlicesd` (and array form): each slice with its neighbours (at a distance in mm)
  as channels, through-plane context for the 2D networks (``slice_context``).
- :class:`RandLocationScaleIntensityd`, :class:`RandConvIntensityd` (and array forms): random
  appearance augmentation of the CT training slices (Bezier/location-scale, random convolutions).
"""

from .appearance import (
    RandConvIntensity,
    RandConvIntensityd,
    RandLocationScaleIntensity,
    RandLocationScaleIntensityd,
    bezier_curve,
)
from .intensity import (
    ForegroundStandardize,
    ForegroundStandardized,
    ScaleIntensityRangePercentilesCapped,
    ScaleIntensityRangePercentilesCappedd,
)
from .continuity import (
    KeepContinuousSlices,
    KeepContinuousSlicesd,
    axial_axis_and_spacing,
    axial_axis_and_step,
    keep_continuous_slices,
)
from .io import AtomicSaveImaged
from .morphology import DetachThinBridges, DetachThinBridgesd, detach_thin_bridges
from .labels import LiverLabeld
from .neighbours import NeighbouringSlices, NeighbouringSlicesd
from .n4 import N4BiasFieldCorrection, N4BiasFieldCorrectiond
from .spacing import SafeSpacingd

__all__ = [
    "AtomicSaveImaged",
    "DetachThinBridges",
    "DetachThinBridgesd",
    "ForegroundStandardize",
    "KeepContinuousSlices",
    "KeepContinuousSlicesd",
    "ForegroundStandardized",
    "LiverLabeld",
    "N4BiasFieldCorrection",
    "N4BiasFieldCorrectiond",
    "NeighbouringSlices",
    "NeighbouringSlicesd",
    "RandConvIntensity",
    "RandConvIntensityd",
    "RandLocationScaleIntensity",
    "RandLocationScaleIntensityd",
    "SafeSpacingd",
    "ScaleIntensityRangePercentilesCapped",
    "ScaleIntensityRangePercentilesCappedd",
    "axial_axis_and_spacing",
    "axial_axis_and_step",
    "bezier_curve",
    "detach_thin_bridges",
    "keep_continuous_slices",
]
