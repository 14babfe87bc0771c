"""MONAI trainers of DALACE and of the CycleGAN/TD-GAN baselines: one forward pass, several optimizers."""

from .cyclegan import CycleGANTrainer
from .trainer import DALACETrainer, MultiOptimizerTrainer, prepare_unpaired_batch

__all__ = ["CycleGANTrainer", "DALACETrainer", "MultiOptimizerTrainer", "prepare_unpaired_batch"]
