"""MONAI inferers that MONAI lacks.

- :class:`TestTimeAugmentationInferer`: any inferer's class probabilities averaged over the image as
  it is and deterministic variants of it that training's augmentation covers (gammas, in-plane zooms).
- :class:`AutocastInferer`: any inferer with the network's calls under autocast (bfloat16 on CPU as on
  CUDA), windows and passes merged in float32.
"""

from .autocast import AutocastInferer
from .test_time import TestTimeAugmentationInferer, gamma_on_range

__all__ = ["AutocastInferer", "TestTimeAugmentationInferer", "gamma_on_range"]
