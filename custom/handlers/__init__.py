"""Ignite/MONAI event handlers of the DALACE workflows (attached to trainers and evaluators by the configs)."""

from .checkpoint import AtomicCheckpointSaver, ResumeCheckpointLoader, check_checkpoint, latest_checkpoint, require_member, require_members
from .epoch_seed import EpochSeedHandler
from .figures import ImageGridHandler, LossLogger, save_image_grid
from .input_check import InputCheck, InputError, refuse_unused_terms, require_booleans, require_file, require_writable_dir
from .key_metric import KeyMetricState
from .metrics import MetricsReport, SpacingMetricHandler
from .weight_averaging import ExponentialMovingAverage, averaged_copy

__all__ = [
    "AtomicCheckpointSaver",
    "EpochSeedHandler",
    "ExponentialMovingAverage",
    "ImageGridHandler",
    "InputCheck",
    "InputError",
    "KeyMetricState",
    "LossLogger",
    "MetricsReport",
    "ResumeCheckpointLoader",
    "SpacingMetricHandler",
    "averaged_copy",
    "check_checkpoint",
    "latest_checkpoint",
    "refuse_unused_terms",
    "require_booleans",
    "require_file",
    "require_member",
    "require_members",
    "require_writable_dir",
    "save_image_grid",
]
