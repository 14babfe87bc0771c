"""Ignite/MONAI event handlers of the DALACE workflows (attached to trainers and evaluators by the configs)."""

from .epoch_seed import EpochSeedHandler
from .key_metric import KeyMetricState
from .weight_averaging import ExponentialMovingAverage

__all__ = ["EpochSeedHandler", "ExponentialMovingAverage", "KeyMetricState"]
