"""Exponential moving average of network weights, so that the weights shipped do not swing with the last step.

Adversarial games and strong augmentation move a segmenter's Dice by 0.1 or more between nearby
checkpoints, and domain adaptation has no target-domain label to pick a checkpoint with. Averaging the
weights over the last few hundred iterations removes most of that swing at no training cost.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping

import torch
from ignite.engine import Engine, Events
from torch import nn

__all__ = ["ExponentialMovingAverage"]


class ExponentialMovingAverage:
    """Keeps an exponential moving average (EMA) of each network's parameters during training.

    After every iteration, for each network ``net`` and its average ``avg``:
    ``avg = d * avg + (1 - d) * net`` with ``d = min(decay, (1 + n) / (10 + n))`` after ``n`` updates,
    so the average follows the network closely at first and settles to a horizon of about
    ``1 / (1 - decay)`` iterations. Buffers (e.g. normalization statistics) are copied as they are.

    The averages start from the networks' weights when training starts (after checkpoint loaders,
    if the handler is attached after them), and ``state_dict``/``load_state_dict`` put them in the
    training checkpoints, so a resumed run continues the same average.

    Args:
        networks: name -> network to average (``None`` values are ignored, so a config can switch one off).
        decay: the EMA decay per iteration, in [0, 1). 0 switches averaging off: ``averaged`` are then the
            networks themselves, so configs can always read the final weights from ``averaged``.
    """

    def __init__(self, networks: Mapping[str, nn.Module | None], decay: float = 0.998) -> None:
        if not 0.0 <= float(decay) < 1.0:
            raise ValueError(f"ExponentialMovingAverage: decay must be in [0, 1), got {decay}.")
        self.networks = {k: v for k, v in networks.items() if v is not None}
        if not self.networks:
            raise ValueError("ExponentialMovingAverage needs at least one network.")
        self.decay = float(decay)
        self.num_updates = 0
        self.averaged: dict[str, nn.Module] = {}
        for name, net in self.networks.items():
            if self.enabled:
                avg = copy.deepcopy(net).eval()
                avg.requires_grad_(False)
            else:
                avg = net
            self.averaged[name] = avg
        self.logger = logging.getLogger(__name__)

    @property
    def enabled(self) -> bool:
        return self.decay > 0.0

    def attach(self, engine: Engine) -> None:
        if not self.enabled:
            return
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.update)

    def _start(self, engine: Engine) -> None:
        if self.num_updates == 0:  # a fresh run (or fine-tuning from loaded weights): start from them
            self.reset()

    @torch.no_grad()
    def reset(self) -> None:
        """Set every average to its network's current weights."""
        for name, net in self.networks.items():
            self.averaged[name].load_state_dict(net.state_dict())
        self.num_updates = 0

    @torch.no_grad()
    def update(self, engine: Engine | None = None) -> None:
        d = min(self.decay, (1.0 + self.num_updates) / (10.0 + self.num_updates))
        for name, net in self.networks.items():
            avg = self.averaged[name]
            a_params = [p for p in avg.parameters()]
            n_params = [p.detach() for p in net.parameters()]
            torch._foreach_lerp_(a_params, n_params, 1.0 - d)
            for b_avg, b_net in zip(avg.buffers(), net.buffers()):
                b_avg.copy_(b_net)
        self.num_updates += 1

    def state_dict(self) -> dict:
        if not self.enabled:
            return {"num_updates": 0}
        return {"num_updates": self.num_updates, **{f"averaged.{k}": v.state_dict() for k, v in self.averaged.items()}}

    def load_state_dict(self, state: Mapping) -> None:
        if not self.enabled:
            return
        missing = [k for k in self.averaged if f"averaged.{k}" not in state]
        if missing:
            raise KeyError(f"ExponentialMovingAverage state lacks the averages of {missing}; it has {sorted(state)}.")
        for k, avg in self.averaged.items():
            avg.load_state_dict(state[f"averaged.{k}"])
        self.num_updates = int(state["num_updates"])
