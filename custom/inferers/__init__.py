"""MONAI inferers that MONAI lacks.

- :class:`TestTimeAugmentationInferer`: any inferer's class probabilities averaged over the image as
  it is and deterministic variants of it that training's augmentation covers (gammas, in-plane zooms).
"""

from .test_time import TestTimeAugmentationInferer, gamma_on_range

__all__ = ["TestTimeAugmentationInferer", "gamma_on_range"]
