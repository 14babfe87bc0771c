"""MONAI workflows for DALACE: the adversarial trainer, atomic checkpoints, figures."""

from .checkpoint import (
    AtomicCheckpointSaver,
    ResumeCheckpointLoader,
    atomic_path,
    atomic_save,
    check_checkpoint,
    latest_checkpoint,
)
from .figures import ImageGridHandler, LossLogger, save_image_grid
from .trainer import DALACETrainer, MultiOptimizerTrainer, prepare_unpaired_batch
from .translation import CycleGANTrainer

__all__ = [
    "AtomicCheckpointSaver",
    "CycleGANTrainer",
    "DALACETrainer",
    "ImageGridHandler",
    "LossLogger",
    "MultiOptimizerTrainer",
    "ResumeCheckpointLoader",
    "atomic_path",
    "atomic_save",
    "check_checkpoint",
    "latest_checkpoint",
    "prepare_unpaired_batch",
    "save_image_grid",
]
