"""The training handlers of custom/handlers: weight averaging and per-epoch seeding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from monai.transforms import Compose, RandGaussianNoised

from custom.data.unpaired import UnpairedDataset
from custom.handlers import EpochSeedHandler, ExponentialMovingAverage


def test_moving_average_follows_the_formula():
    net = torch.nn.Linear(1, 1, bias=False)
    ema = ExponentialMovingAverage({"model": net}, decay=0.9)
    ema.reset()
    expected = float(net.weight.detach())
    for step, w in enumerate([1.0, 2.0, 3.0, 4.0] * 5):
        with torch.no_grad():
            net.weight.fill_(w)
        ema.update()
        d = min(0.9, (1 + step) / (10 + step))
        expected = d * expected + (1 - d) * w
    assert float(ema.averaged["model"].weight) == pytest.approx(expected, rel=1e-6)
    assert float(net.weight.detach()) == 4.0  # the network itself is untouched
    assert not ema.averaged["model"].weight.requires_grad


def test_average_starts_from_the_weights_loaded_before_training_and_resumes():
    net = torch.nn.Linear(2, 2)
    ema = ExponentialMovingAverage({"model": net, "off": None}, decay=0.99)
    assert list(ema.averaged) == ["model"]
    engine = Engine(lambda e, b: None)
    engine.add_event_handler(Events.STARTED, lambda e: net.weight.data.fill_(5.0))  # as a checkpoint loader would
    ema.attach(engine)
    engine.run([0, 1, 2], max_epochs=1)
    assert torch.allclose(ema.averaged["model"].weight, torch.full((2, 2), 5.0))
    assert ema.num_updates == 3
    again = ExponentialMovingAverage({"model": torch.nn.Linear(2, 2)}, decay=0.99)
    again.load_state_dict(ema.state_dict())
    assert again.num_updates == 3 and torch.equal(again.averaged["model"].weight, ema.averaged["model"].weight)
    with pytest.raises(KeyError, match="model"):
        again.load_state_dict({"num_updates": 1})


def test_decay_zero_switches_averaging_off():
    net = torch.nn.Linear(2, 2)
    ema = ExponentialMovingAverage({"model": net}, decay=0.0)
    assert ema.averaged["model"] is net and ema.state_dict() == {"num_updates": 0}
    engine = Engine(lambda e, b: None)
    ema.attach(engine)
    assert not engine.has_event_handler(ema.update, Events.ITERATION_COMPLETED)
    with pytest.raises(ValueError, match="decay"):
        ExponentialMovingAverage({"model": net}, decay=1.0)


def _draws(dataset, epochs, handler, start=0):
    """The CT images drawn in each epoch of a trivial engine over ``dataset``."""
    seen = []
    engine = Engine(lambda e, b: seen.append((e.state.epoch, b)))
    handler.attach(engine)
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, shuffle=True)
    if start:  # what resuming from a checkpoint of epoch ``start`` does to the engine
        engine.load_state_dict({"iteration": start * len(loader), "max_epochs": epochs, "epoch_length": len(loader)})
    engine.run(loader, max_epochs=epochs)
    return {ep: torch.cat([b["ct_image"] for e, b in seen if e == ep]) for ep in sorted({e for e, _ in seen})}


def test_each_epoch_draws_the_same_samples_whether_or_not_the_run_was_resumed():
    items = [{"image": np.full((1, 4, 4), float(i), np.float32)} for i in range(6)]
    noise = Compose([RandGaussianNoised(keys="image", prob=1.0, std=1.0)])
    make = lambda: UnpairedDataset({"ct": items, "mr": items[:3]}, noise, noise, length=6, num_workers=0)  # noqa: E731
    whole_ds = make()
    whole = _draws(whole_ds, 3, EpochSeedHandler(4, whole_ds))
    resumed_ds = make()
    resumed = _draws(resumed_ds, 3, EpochSeedHandler(4, resumed_ds), start=2)  # epochs 1-2 were "before the kill"
    assert list(whole) == [1, 2, 3] and list(resumed) == [3]
    assert torch.equal(whole[3], resumed[3])
    assert not torch.equal(whole[2], whole[3])  # the epochs still differ from each other
    other_ds = make()
    assert not torch.equal(_draws(other_ds, 3, EpochSeedHandler(5, other_ds))[3], whole[3])
