"""MONAI workflows for DALACE: the adversarial trainer, atomic checkpoints, figures."""

from .checkpoint import AtomicCheckpointSaver, atomic_save, latest_checkpoint
from .figures import ImageGridHandler, LossLogger, save_image_grid
from .trainer import DALACETrainer, prepare_unpaired_batch

__all__ = [
    "AtomicCheckpointSaver",
    "DALACETrainer",
    "ImageGridHandler",
    "LossLogger",
    "atomic_save",
    "latest_checkpoint",
    "prepare_unpaired_batch",
    "save_image_grid",
]
