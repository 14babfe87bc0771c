"""The DALACE trainer: which parameters each optimizer moves, the pair game's warm-up, the ablations."""

import pytest
import torch
from ignite.engine import Events

from custom.engines import DALACETrainer
from custom.losses import DALACELoss
from custom.networks import DALACE
from tests.helpers import TINY_NET, tiny_unet


def make(batches=2, mr_label=False, **kwargs):
    torch.manual_seed(0)
    net = DALACE(tiny_unet(), **TINY_NET)
    groups = net.parameter_groups()
    opts = {k: torch.optim.Adam(v, lr=1e-3) for k, v in groups.items()}
    data = []
    for _ in range(batches):
        item = {
            "ct_image": torch.rand(2, 1, 32, 32) * 2 - 1,
            "ct_label": (torch.rand(2, 1, 32, 32) > 0.5).float(),
            "mr_image": torch.rand(2, 1, 32, 32) * 2 - 1,
        }
        if mr_label:
            item["mr_label"] = (torch.rand(2, 1, 32, 32) > 0.5).float()
        data.append(item)
    loss = DALACELoss(**kwargs.pop("loss_kwargs", {}))
    trainer = DALACETrainer("cpu", kwargs.pop("max_epochs", 1), data, net, opts, loss, **kwargs)
    outputs = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.append((e.state.epoch, dict(e.state.output))))
    return trainer, net, opts, outputs


def snapshot(net):
    return {n: p.detach().clone() for n, p in net.named_parameters()}


def moved(net, before):
    return {n for n, p in net.named_parameters() if not torch.equal(p, before[n])}


@pytest.mark.parametrize("active", ["autoencoder", "image_discriminators", "segmenter", "anatomy", "pair_discriminator"])
def test_each_optimizer_moves_only_its_networks(active):
    """Silence every optimizer but one: only that optimizer's networks may change."""
    trainer, net, opts, _ = make(batches=1, pair_warmup_epochs=0)
    for name, opt in opts.items():
        for g in opt.param_groups:
            g["lr"] = 1e-2 if name == active else 0.0
    before = snapshot(net)
    trainer.run()
    allowed = {id(p) for p in net.parameter_groups()[active]}
    names = {n for n, p in net.named_parameters() if id(p) in allowed}
    changed = moved(net, before)
    assert changed, f"{active} moved nothing"
    assert changed <= names, f"{active} moved {sorted(changed - names)[:5]}"


def test_pair_game_waits_for_warmup():
    trainer, net, _, outputs = make(batches=2, max_epochs=3, pair_warmup_epochs=2)
    before = snapshot(net)
    pair = {n for n, _ in net.named_parameters() if n.startswith("pair_discriminator")}
    trainer.state.max_epochs = 2
    trainer.run()
    assert not moved(net, before) & pair, "the pair discriminator trained during warm-up"
    trainer.state.max_epochs = 3
    trainer.run()  # continues from epoch 2
    assert moved(net, before) & pair
    by_epoch = {e: o for e, o in outputs}
    assert by_epoch[1]["pair_game"] == 0.0 and "apm/pair_gen" not in by_epoch[2]
    assert by_epoch[3]["pair_game"] == 1.0 and "apm/pair_gen" in by_epoch[3] and "apm/pair_disc" in by_epoch[3]


def test_losses_are_finite_and_every_term_is_logged():
    trainer, _, _, outputs = make(batches=2, pair_warmup_epochs=0)
    trainer.run()
    out = outputs[-1][1]
    for key in ("recon/img_ct", "recon/latent_a_mr", "dam/adv_ct2mr", "dam/d_ct", "apm/ce_ct", "apm/pair_gen", "apm/pair_disc"):
        assert key in out and torch.isfinite(torch.tensor(out[key]))


def test_dadr_ablation_has_no_pair_game_and_cuts_ce_from_the_encoders():
    trainer, net, opts, outputs = make(batches=1, use_apm=False, pair_warmup_epochs=0)
    for name, opt in opts.items():
        for g in opt.param_groups:
            g["lr"] = 0.0 if name == "autoencoder" else 1e-2
    before = snapshot(net)
    trainer.run()
    changed = moved(net, before)
    assert not any(n.startswith(("anatomy_encoders", "generators", "pair_discriminator")) for n in changed)
    assert any(n.startswith("segmenter") for n in changed)
    assert "apm/pair_gen" not in outputs[0][1]


def test_no_dam_ablation_trains_no_image_discriminator():
    trainer, net, _, outputs = make(batches=1, use_dam=False)
    before = snapshot(net)
    trainer.run()
    assert not any(n.startswith("image_discriminators") for n in moved(net, before))
    assert not any(k.startswith("dam/") for k in outputs[0][1])


def test_joint_learning_uses_mr_labels():
    trainer, _, _, outputs = make(batches=1, mr_label=True, mr_supervised=True)
    trainer.run()
    assert "apm/ce_mr" in outputs[0][1]
    trainer, *_ = make(batches=1, mr_label=False, mr_supervised=True)
    with pytest.raises(ValueError, match="mr_label"):
        trainer.run()


def test_missing_optimizer_is_a_clear_error():
    net = DALACE(tiny_unet(), **TINY_NET)
    with pytest.raises(ValueError, match="pair_discriminator"):
        DALACETrainer("cpu", 1, [], net, {"autoencoder": None, "segmenter": None, "image_discriminators": None, "anatomy": None}, DALACELoss())


@pytest.mark.parametrize("variant", [{}, {"use_apm": False}])
def test_mixed_precision_runs_the_networks_in_bfloat16(variant):
    """``amp=True`` autocasts the forward (bfloat16 here, on CPU) while the GAN criteria stay float32."""
    trainer, net, _, outputs = make(batches=1, pair_warmup_epochs=0, amp=True, **variant)
    dtypes = []
    net.anatomy_encoders["ct"].register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    before = snapshot(net)
    trainer.run()
    assert dtypes and all(d == torch.bfloat16 for d in dtypes)
    assert all(torch.isfinite(torch.tensor(v)) for v in outputs[0][1].values())
    assert moved(net, before)
    assert all(p.dtype == torch.float32 for p in net.parameters())  # weights stay float32


def test_iteration_fires_monai_iteration_events_in_order():
    """MONAI handlers that listen to IterationEvents (as on SupervisedTrainer) see them once per iteration."""
    from monai.engines import IterationEvents

    trainer, _, _, _ = make(batches=2, pair_warmup_epochs=0)
    fired = []
    for event in (IterationEvents.FORWARD_COMPLETED, IterationEvents.LOSS_COMPLETED,
                  IterationEvents.BACKWARD_COMPLETED, IterationEvents.MODEL_COMPLETED):
        trainer.add_event_handler(event, lambda e, name=event.name: fired.append(name))
    trainer.run()
    assert fired == ["FORWARD_COMPLETED", "LOSS_COMPLETED", "BACKWARD_COMPLETED", "MODEL_COMPLETED"] * 2


def test_amp_kwargs_default_to_bfloat16_and_train_step_is_one_iteration():
    trainer, net, _, _ = make(batches=1)
    assert trainer.amp_kwargs["dtype"] == torch.bfloat16 and trainer.scaler is None
    fp16, *_ = make(batches=1, amp=True, amp_kwargs={"dtype": "float16"})
    assert fp16.amp_kwargs["dtype"] == torch.float16 and fp16.scaler is not None
    before = snapshot(net)
    out = trainer.train_step(trainer.data_loader[0])
    assert trainer.state.iteration == 1 and moved(net, before) and torch.isfinite(torch.tensor(out["loss"]))


def test_mr_path_supervision_trains_mr_anatomy_encoder_before_the_pair_game():
    """Before the pair game only the CT labels move the anatomy optimizer: by default they reach CT's
    anatomy encoder alone; with MR path supervision MR's too, and both terms are logged."""
    for weight, mr_moves in ((0.0, False), (1.0, True)):
        trainer, net, opts, outputs = make(
            batches=1, pair_warmup_epochs=5, loss_kwargs={"translated_ce_weight": weight, "cross_ce_weight": weight}
        )
        for name, opt in opts.items():
            for g in opt.param_groups:
                g["lr"] = 1e-2 if name == "anatomy" else 0.0
        before = snapshot(net)
        trainer.run()
        changed = moved(net, before)
        assert any(n.startswith("anatomy_encoders.ct") for n in changed)
        assert any(n.startswith("anatomy_encoders.mr") for n in changed) == mr_moves
        assert ("apm/ce_ct2mr" in outputs[-1][1]) == mr_moves and ("apm/ce_ct_via_mr" in outputs[-1][1]) == mr_moves


class SignTeacher(torch.nn.Module):
    """Confident logits from the image's sign (liver where the slice is bright), with a parameter that
    must never move."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(10.0))

    def forward(self, x):
        return torch.cat([-x, x], dim=1) * self.scale


def with_strong_view(trainer):
    for item in trainer.data_loader:
        item["mr_image_strong"] = item["mr_image"] * 0.5 - 0.2
    return trainer


def test_mr_consistency_trains_mr_anatomy_path_from_its_warmup_and_never_the_teacher():
    """Before the pair game only the CT labels move the anatomy optimizer; with the consistency term MR's
    anatomy encoder moves too, from the epoch after its warm-up, and its terms are logged."""
    teacher = SignTeacher()
    trainer, net, opts, outputs = make(
        batches=1, max_epochs=2, pair_warmup_epochs=5, teacher=teacher, consistency_warmup_epochs=1,
        loss_kwargs={"consistency_weight": 1.0},
    )
    with_strong_view(trainer)
    for name, opt in opts.items():
        for g in opt.param_groups:
            g["lr"] = 1e-2 if name == "anatomy" else 0.0
    before = snapshot(net)
    trainer.state.max_epochs = 1
    trainer.run()
    assert not any(n.startswith("anatomy_encoders.mr") for n in moved(net, before))
    assert "apm/consistency_mr" not in outputs[-1][1]
    trainer.state.max_epochs = 2
    trainer.run()
    assert any(n.startswith("anatomy_encoders.mr") for n in moved(net, before))
    out = outputs[-1][1]
    assert out["apm/confident"] > 0.5 and out["apm/consistency_mr"] > 0 and out["apm/consistency_ct"] > 0
    assert teacher.scale.item() == 10.0 and teacher.scale.grad is None


def test_mr_consistency_without_teacher_or_strong_view_is_a_clear_error():
    with pytest.raises(ValueError, match="no teacher"):
        make(batches=1, loss_kwargs={"consistency_weight": 1.0})
    trainer, *_ = make(batches=1, teacher=SignTeacher(), loss_kwargs={"consistency_weight": 1.0})
    with pytest.raises(ValueError, match="image_strong"):
        trainer.run()
