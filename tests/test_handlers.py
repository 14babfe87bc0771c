"""The training handlers of custom/handlers: weight averaging and per-epoch seeding."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from monai.transforms import Compose, RandGaussianNoised

from custom.data.unpaired import UnpairedDataset
from custom.handlers import EpochSeedHandler, ExponentialMovingAverage, averaged_copy


def _run(engine_fn, handler, iterations, start=0):
    """A trivial engine of ``iterations`` iterations with ``handler``; ``start``: resumed at that iteration."""
    engine = Engine(engine_fn)
    if start:  # what resuming from a checkpoint does to the engine
        engine.load_state_dict({"iteration": start, "max_epochs": iterations, "epoch_length": 1})
    handler.attach(engine)
    engine.run([0], max_epochs=iterations)
    return engine


def test_moving_average_follows_the_formula():
    net = torch.nn.Linear(1, 1, bias=False)
    avg = averaged_copy(net, 0.9)
    values = [1.0, 2.0, 3.0, 4.0] * 5
    expected = float(net.weight.detach())
    for step, w in enumerate(values):
        d = min(0.9, (1 + step) / (10 + step))
        expected = d * expected + (1 - d) * w
    _run(lambda e, b: net.weight.data.fill_(values[e.state.iteration - 1]), ExponentialMovingAverage([net], [avg], 0.9), len(values))
    assert float(avg.weight) == pytest.approx(expected, rel=1e-6)
    assert float(net.weight.detach()) == 4.0  # the network itself is untouched
    assert not avg.weight.requires_grad and not avg.training


def test_average_starts_from_the_weights_loaded_before_training_and_resumes():
    net = torch.nn.Linear(2, 2)
    avg = averaged_copy(net, 0.99)
    assert averaged_copy(None, 0.99) is None
    ema = ExponentialMovingAverage([net, None], [avg, None], decay=0.99)
    assert ema.networks == [net] and ema.averages == [avg]
    engine = Engine(lambda e, b: None)
    engine.add_event_handler(Events.STARTED, lambda e: net.weight.data.fill_(5.0))  # as a checkpoint loader would
    ema.attach(engine)
    engine.run([0, 1, 2], max_epochs=1)
    assert torch.allclose(avg.weight, torch.full((2, 2), 5.0))
    # resumed: the checkpoint's average and iteration count, and the average goes on as if never stopped
    steps = lambda net: lambda e, b: net.weight.data.add_(float(e.state.iteration))  # noqa: E731
    whole_net = torch.nn.Linear(2, 2)
    first_net = copy.deepcopy(whole_net)
    whole_avg = averaged_copy(whole_net, 0.9)
    _run(steps(whole_net), ExponentialMovingAverage([whole_net], [whole_avg], 0.9), 8)
    first_avg = averaged_copy(first_net, 0.9)
    _run(steps(first_net), ExponentialMovingAverage([first_net], [first_avg], 0.9), 3)  # "killed" after 3
    net2, avg2 = torch.nn.Linear(2, 2), averaged_copy(torch.nn.Linear(2, 2), 0.9)
    net2.load_state_dict(first_net.state_dict())  # what the checkpoint loader restores
    avg2.load_state_dict(first_avg.state_dict())
    _run(steps(net2), ExponentialMovingAverage([net2], [avg2], 0.9), 8, start=3)
    assert torch.equal(avg2.weight, whole_avg.weight) and torch.equal(net2.weight, whole_net.weight)


def test_decay_zero_switches_averaging_off():
    net = torch.nn.Linear(2, 2)
    assert averaged_copy(net, 0.0) is net
    ema = ExponentialMovingAverage([net], [averaged_copy(net, 0.0)], decay=0.0)
    engine = Engine(lambda e, b: None)
    ema.attach(engine)
    assert not engine.has_event_handler(ema._completed, Events.ITERATION_COMPLETED)
    with pytest.raises(ValueError, match="decay"):
        averaged_copy(net, 1.0)
    with pytest.raises(ValueError, match="averaged_copy"):
        ExponentialMovingAverage([net], [net], decay=0.9)


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


def test_image_grids_show_the_slice_itself_of_neighbouring_slice_channels(tmp_path):
    """With slice_context the images carry a slice and its neighbours: the grids show the middle channel,
    and the generated images (as many channels as the input) still get their rows."""
    from monai.networks.nets import BasicUNet

    from custom.handlers import ImageGridHandler
    from custom.networks import DALACE
    from tests.helpers import TINY_NET

    torch.manual_seed(0)
    unet = BasicUNet(spatial_dims=2, in_channels=3, out_channels=2, features=(4, 4, 8, 8, 16, 4))
    handler = ImageGridHandler(DALACE(unet, in_channels=3, **TINY_NET), str(tmp_path), max_images=2)
    batch = {"ct_image": torch.rand(2, 3, 32, 32) * 2 - 1, "mr_image": torch.rand(2, 3, 32, 32) * 2 - 1,
             "ct_label": (torch.rand(2, 1, 32, 32) > 0.5).float()}
    rows = handler.rows(batch)
    np.testing.assert_array_equal(rows["CT"][1], batch["ct_image"][1, 1].numpy())
    np.testing.assert_array_equal(rows["CT ground truth"][0], batch["ct_label"][0, 0].numpy())
    generated = [k for k in rows if k not in ("CT", "CT ground truth", "MR") and "probability" not in k]
    assert generated and all(rows[k][0].shape == (32, 32) for k in generated)
