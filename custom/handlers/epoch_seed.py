"""Reseeding at every epoch, so that a resumed training draws the same slices and augmentations as an uninterrupted one."""

from __future__ import annotations

import random

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.data.utils import set_rnd
from monai.utils.misc import MAX_SEED

__all__ = ["EpochSeedHandler"]


class EpochSeedHandler:
    """At the start of every epoch, seed torch, numpy, ``random`` and the dataset's random transforms
    from ``(seed, epoch)``.

    A checkpoint holds weights, optimizers and the epoch, but not the state of every random number
    generator in the data pipeline. Deriving all of them from the epoch number makes each epoch a
    function of the checkpoint alone, so a run resumed from epoch N continues exactly as the
    uninterrupted run did (on CPU; CUDA kernels may add their own nondeterminism).

    Args:
        seed: the run's seed.
        dataset: the training dataset whose randomizable transforms to reseed (``monai.data.utils.set_rnd``).
    """

    def __init__(self, seed: int, dataset: object | None = None) -> None:
        self.seed = int(seed)
        self.dataset = dataset

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def epoch_seed(self, epoch: int) -> int:
        return (self.seed * 1_000_003 + int(epoch)) % MAX_SEED

    def __call__(self, engine: Engine) -> None:
        s = self.epoch_seed(engine.state.epoch)
        torch.manual_seed(s)
        np.random.seed(s)
        random.seed(s)
        if self.dataset is not None:
            set_rnd(self.dataset, s)
