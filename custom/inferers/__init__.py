"""MONAI inferers that MONAI lacks.

- :class:`TestTimeAugmentationInferer`: any inferer's class probabilities averaged over the image as
  it is and deterministic variants of it that training's augmentation covers (gammas, in-plane zooms).
- :class:`AutocastInferer`: any inferer with the network's calls under autocast (bfloat16 on CPU as on
  CUDA), windows and passes merged in float32; :func:`native_bfloat16`: whether a device computes it
  in hardware (inference.yaml's default for ``amp``).
"""

from .autocast import AutocastInferer, native_bfloat16
from .test_time import TestTimeAugmentationInferer, gamma_on_range

__all__ = ["AutocastInferer", "native_bfloat16", "TestTimeAugmentationInferer", "gamma_on_range"]
