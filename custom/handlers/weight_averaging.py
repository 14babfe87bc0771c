"""Exponential moving average of network weights, so that the weights shipped do not swing with the last step.

Adversarial games and strong augmentation move a segmenter's Dice by 0.1 or more between nearby
checkpoints, and domain adaptation has no target-domain label to pick a checkpoint with. Averaging the
weights over the last few hundred iterations removes most of that swing at no training cost.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from ignite.engine import Engine, Events
from torch import nn

__all__ = ["ExponentialMovingAverage", "averaged_copy"]


def _check_decay(decay: float) -> float:
    if not 0.0 <= float(decay) < 1.0:
        raise ValueError(f"ExponentialMovingAverage: decay must be in [0, 1), got {decay}.")
    return float(decay)


def averaged_copy(network: nn.Module | None, decay: float) -> nn.Module | None:
    """What holds ``network``'s average: a frozen deep copy (eval mode, no gradients) when ``decay > 0``;
    the network itself when ``decay`` is 0 (averaging off); None for None (a config's switched-off network).

    Configs give it an id of its own (``final_network``), save it, validate it and checkpoint it as any
    module, and hand it to :class:`ExponentialMovingAverage` with its network.
    """
    if network is None or _check_decay(decay) == 0.0:
        return network
    avg = copy.deepcopy(network).eval()
    avg.requires_grad_(False)
    return avg


class ExponentialMovingAverage:
    """Keeps an exponential moving average (EMA) of each network's parameters during training.

    After every iteration, for each network ``net`` and its average ``avg``:
    ``avg = d * avg + (1 - d) * net`` with ``d = min(decay, (1 + n) / (10 + n))``, ``n`` the iterations
    the trainer had completed before this one, so the average follows the network closely at first and
    settles to a horizon of about ``1 / (1 - decay)`` iterations. Buffers (e.g. normalization
    statistics) are copied as they are.

    When a run starts at iteration 0 the averages are set to the networks' weights (after checkpoint
    loaders, if the handler is attached after them: fine-tuning averages from the loaded weights). A
    resumed run starts at the checkpoint's iteration and keeps the averages the checkpoint loaded (put
    the averages in the checkpoint's objects), so it continues exactly as an uninterrupted run.

    Args:
        networks: the networks to average; ``None`` entries (with their averages) are skipped, so a
            config can switch one off.
        averages: for each network, the module holding its average (:func:`averaged_copy`).
        decay: the EMA decay per iteration, in [0, 1). 0 switches averaging off (then the averages are
            the networks themselves, as :func:`averaged_copy` gives them) and the handler attaches nothing.
    """

    def __init__(self, networks: Sequence[nn.Module | None], averages: Sequence[nn.Module | None], decay: float = 0.998) -> None:
        self.decay = _check_decay(decay)
        if len(networks) != len(averages):
            raise ValueError(f"ExponentialMovingAverage: {len(networks)} networks but {len(averages)} averages.")
        pairs = [(n, a) for n, a in zip(networks, averages) if n is not None]
        if not pairs:
            raise ValueError("ExponentialMovingAverage needs at least one network.")
        if any(a is None for _, a in pairs):
            raise ValueError("ExponentialMovingAverage: every network needs its average (averaged_copy(network, decay)).")
        if self.enabled and any(a is n for n, a in pairs):
            raise ValueError("ExponentialMovingAverage: an average is its network itself; use averaged_copy(network, decay).")
        self.networks = [n for n, _ in pairs]
        self.averages = [a for _, a in pairs]

    @property
    def enabled(self) -> bool:
        return self.decay > 0.0

    def attach(self, engine: Engine) -> None:
        if not self.enabled:
            return
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._completed)

    def _start(self, engine: Engine) -> None:
        if engine.state.iteration == 0:  # a fresh run (or fine-tuning from loaded weights): start from them
            self.reset()

    def _completed(self, engine: Engine) -> None:
        self.update(engine.state.iteration - 1)

    @torch.no_grad()
    def reset(self) -> None:
        """Set every average to its network's current weights."""
        for net, avg in zip(self.networks, self.averages):
            avg.load_state_dict(net.state_dict())

    @torch.no_grad()
    def update(self, num_updates: int) -> None:
        """One step of the average, ``num_updates`` (the iterations before this one) setting the warm-up."""
        d = min(self.decay, (1.0 + num_updates) / (10.0 + num_updates))
        for net, avg in zip(self.networks, self.averages):
            torch._foreach_lerp_(list(avg.parameters()), [p.detach() for p in net.parameters()], 1.0 - d)
            for b_avg, b_net in zip(avg.buffers(), net.buffers()):
                b_avg.copy_(b_net)
