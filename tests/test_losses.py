"""Each DALACE loss term against a value computed by hand, and where each term's gradients go."""

import math

import pytest
import torch
from torch import nn

from custom.losses import DALACELoss
from custom.networks import DALACE
from tests.helpers import TINY_NET, tiny_unet


class ConstantDiscriminator(nn.Module):
    """Returns a fixed logit map, whatever the input: makes adversarial values computable by hand."""

    def __init__(self, logit: float):
        super().__init__()
        self.logit = logit

    def forward(self, x, mask=None):
        return torch.full((x.shape[0], 1, 2, 2), self.logit)


def test_reconstruction_by_hand():
    zeros = torch.zeros(1, 1, 2, 2)
    paths = {
        "rec_ct": torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]]),  # L1 to zeros: 1.5
        "rec_mr": torch.full((1, 1, 2, 2), -0.5),  # L1 to zeros: 0.5
        "a_ct": torch.zeros(1, 2, 1, 1), "a_ct_rec": torch.tensor([1.0, 3.0]).view(1, 2, 1, 1),  # 2.0
        "a_mr": torch.ones(1, 2, 1, 1), "a_mr_rec": torch.ones(1, 2, 1, 1),  # 0.0
        "m_ct": torch.zeros(1, 4), "m_ct_rec": torch.tensor([[4.0, 0.0, 0.0, 0.0]]),  # 1.0
        "m_mr": torch.zeros(1, 4), "m_mr_rec": torch.full((1, 4), 0.25),  # 0.25
    }
    terms = DALACELoss(alpha=2.5, beta=0.01).reconstruction(paths, zeros, zeros)
    assert terms["img_ct"].item() == pytest.approx(1.5)
    assert terms["img_mr"].item() == pytest.approx(0.5)
    assert terms["latent_a_ct"].item() == pytest.approx(2.0)
    assert terms["latent_m_ct"].item() == pytest.approx(1.0)
    assert terms["latent_a_mr"].item() == pytest.approx(0.0)
    assert terms["latent_m_mr"].item() == pytest.approx(0.25)
    assert terms["total"].item() == pytest.approx(2.5 * 2.0 + 0.01 * 3.25)


@pytest.mark.parametrize("criterion", ["bce", "least_squares"])
def test_cross_adversarial_by_hand(criterion):
    p_real, p_fake = 0.75, 0.25  # the discriminators' outputs after the sigmoid (bce) or raw (lsgan)
    logit = (lambda p: math.log(p / (1 - p))) if criterion == "bce" else (lambda p: p)
    loss = DALACELoss(gan_criterion=criterion, adv_weight=2.0)
    x = torch.zeros(1, 1, 4, 4)
    paths = {"ct2mr": x, "mr2ct": x}
    gen = loss.cross_adversarial_generator(nn.ModuleDict({"ct": ConstantDiscriminator(logit(p_fake)), "mr": ConstantDiscriminator(logit(p_fake))}), paths)
    if criterion == "bce":
        want_gen, want_disc = -math.log(p_fake), -math.log(p_real) - math.log(1 - p_fake)
    else:
        want_gen, want_disc = (p_fake - 1) ** 2, (p_real - 1) ** 2 + p_fake**2
    assert gen["adv_ct2mr"].item() == pytest.approx(want_gen, rel=1e-5)
    assert gen["total"].item() == pytest.approx(2.0 * 2 * want_gen, rel=1e-5)

    class RealOrFake(nn.Module):  # real images are zeros, translated ones are ones
        def forward(self, img):
            return torch.full((img.shape[0], 1, 2, 2), logit(p_real) if img.sum() == 0 else logit(p_fake))

    fake = torch.ones(1, 1, 4, 4)
    disc = loss.cross_adversarial_discriminator(nn.ModuleDict({"ct": RealOrFake(), "mr": RealOrFake()}), {"ct2mr": fake, "mr2ct": fake}, x, x)
    assert disc["d_mr"].item() == pytest.approx(want_disc, rel=1e-5)
    assert disc["d_ct"].item() == pytest.approx(want_disc, rel=1e-5)
    assert disc["total"].item() == pytest.approx(2 * want_disc, rel=1e-5)


def test_segmentation_cross_entropy_by_hand():
    logits = torch.tensor([2.0, 0.0, 0.0, 1.0]).view(1, 2, 1, 2)  # pixel 0: (2, 0), pixel 1: (0, 1)
    label = torch.tensor([0, 0]).view(1, 1, 1, 2)
    want = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(1))) / 2
    assert DALACELoss().segmentation(logits, label).item() == pytest.approx(want, rel=1e-6)


def test_pair_adversarial_by_hand():
    loss = DALACELoss()
    paths = {k: torch.zeros(1, 1, 4, 4) for k in ("agn_ct", "agn_mr")}
    paths.update(seg_ct=torch.zeros(1, 2, 4, 4), seg_mr=torch.zeros(1, 2, 4, 4))
    d = ConstantDiscriminator(0.0)  # sigmoid(0) = 0.5 everywhere
    assert loss.pair_generator(d, paths).item() == pytest.approx(math.log(2), rel=1e-6)
    assert loss.pair_discriminator(d, paths).item() == pytest.approx(2 * math.log(2), rel=1e-6)


def test_pair_discriminator_receives_softmax_masks():
    seen = {}

    class Spy(nn.Module):
        def forward(self, image, mask):
            seen["mask"] = mask
            return torch.zeros(1, 1, 1, 1)

    logits = torch.randn(1, 2, 4, 4)
    DALACELoss().pair_generator(Spy(), {"agn_mr": torch.zeros(1, 1, 4, 4), "seg_mr": logits})
    torch.testing.assert_close(seen["mask"], logits.softmax(1))


# ------------------------------------------------------------------------------- gradient routing
def _reached(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    parts = {
        "anatomy_encoders.ct": model.anatomy_encoders["ct"], "anatomy_encoders.mr": model.anatomy_encoders["mr"],
        "modality_encoders.ct": model.modality_encoders["ct"], "modality_encoders.mr": model.modality_encoders["mr"],
        "generators.ct": model.generators["ct"], "generators.mr": model.generators["mr"],
        "generators.ct.mlp": model.generators["ct"].mlp, "generators.mr.mlp": model.generators["mr"].mlp,
        "image_discriminators": model.image_discriminators, "pair_discriminator": model.pair_discriminator,
        "segmenter": model.segmenter,
    }
    return {k for k, m in parts.items() if any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())}


@pytest.fixture
def batch():
    torch.manual_seed(0)
    model = DALACE(tiny_unet(), **TINY_NET)
    x_ct, x_mr = torch.rand(2, 1, 32, 32) * 2 - 1, torch.rand(2, 1, 32, 32) * 2 - 1
    label = (torch.rand(2, 1, 32, 32) > 0.5).long()
    return model, x_ct, x_mr, label


def test_reconstruction_reaches_encoders_and_generators_only(batch):
    model, x_ct, x_mr, _ = batch
    reached = _reached(model, DALACELoss().reconstruction(model(x_ct, x_mr), x_ct, x_mr)["total"])
    assert reached == {
        "anatomy_encoders.ct", "anatomy_encoders.mr", "modality_encoders.ct", "modality_encoders.mr",
        "generators.ct", "generators.mr", "generators.ct.mlp", "generators.mr.mlp",
    }


def test_cross_entropy_reaches_ct_anatomy_path_and_segmenter_only(batch):
    model, x_ct, x_mr, label = batch
    reached = _reached(model, DALACELoss().segmentation(model(x_ct, x_mr)["seg_ct"], label))
    # the domain-agnostic path has no modality code, so the generator's MLP gets nothing
    assert reached == {"anatomy_encoders.ct", "generators.ct", "segmenter"}


def test_discriminator_terms_reach_discriminators_only(batch):
    model, x_ct, x_mr, _ = batch
    loss, paths = DALACELoss(), model(x_ct, x_mr)
    assert _reached(model, loss.cross_adversarial_discriminator(model.image_discriminators, paths, x_ct, x_mr)["total"]) == {
        "image_discriminators"
    }
    paths = model(x_ct, x_mr)
    assert _reached(model, loss.pair_discriminator(model.pair_discriminator, paths)) == {"pair_discriminator"}


def test_generator_adversarial_terms_reach_translation_paths(batch):
    model, x_ct, x_mr, _ = batch
    loss = DALACELoss()
    reached = _reached(model, loss.cross_adversarial_generator(model.image_discriminators, model(x_ct, x_mr))["total"])
    # ct2mr = G_MR(E_a^CT, E_m^MR) and mr2ct = G_CT(E_a^MR, E_m^CT): every encoder and generator;
    # the discriminators are on the path too, which is why the trainer steps only the generators' side.
    assert reached >= {"anatomy_encoders.ct", "anatomy_encoders.mr", "modality_encoders.ct", "modality_encoders.mr", "generators.ct", "generators.mr"}
    assert "segmenter" not in reached and "pair_discriminator" not in reached
    reached = _reached(model, loss.pair_generator(model.pair_discriminator, model(x_ct, x_mr)))
    assert {"anatomy_encoders.mr", "generators.mr"} <= reached
    assert not reached & {"anatomy_encoders.ct", "modality_encoders.ct", "modality_encoders.mr", "image_discriminators"}


def test_mr_path_supervision_reaches_mr_anatomy_path_and_segmenter(batch):
    """CT labels on MR's path: the translation term reaches MR's anatomy encoder through the translation
    (and the CT encoder and MR generator that made it); the direct term reaches only MR's path."""
    model, x_ct, x_mr, label = batch
    loss = DALACELoss(translated_ce_weight=1.0, cross_ce_weight=1.0)
    assert loss.supervises_mr_path and not DALACELoss().supervises_mr_path
    assert "seg_ct2mr" not in model(x_ct, x_mr)
    paths = model(x_ct, x_mr, cross_paths=True)
    assert paths["seg_ct2mr"].shape == paths["seg_ct_via_mr"].shape == paths["seg_ct"].shape
    terms = loss.mr_path_segmentation(paths, label)
    torch.testing.assert_close(terms["total"], terms["ce_ct2mr"] + terms["ce_ct_via_mr"])
    torch.testing.assert_close(terms["ce_ct_via_mr"], loss.segmentation(paths["seg_ct_via_mr"], label))
    direct = _reached(model, terms["ce_ct_via_mr"])
    assert direct == {"anatomy_encoders.mr", "generators.mr", "segmenter"}
    translated = _reached(model, loss.mr_path_segmentation(model(x_ct, x_mr, cross_paths=True), label)["ce_ct2mr"])
    assert {"anatomy_encoders.mr", "generators.mr", "segmenter", "anatomy_encoders.ct", "modality_encoders.mr"} <= translated
    assert not translated & {"image_discriminators", "pair_discriminator"}
    # weights scale the terms; with both at 0 the total is 0
    half = DALACELoss(translated_ce_weight=0.5).mr_path_segmentation(paths, label)
    torch.testing.assert_close(half["total"], 0.5 * terms["ce_ct2mr"])


# ---------------------------------------------------------------------- MR consistency (beyond the paper)
def test_mr_consistency_by_hand():
    """Cross-entropy against the teacher's argmax on its confident pixels, averaged over every pixel; the
    teacher gets no gradient."""
    # teacher probabilities of class 1 per pixel: 0.95, 0.6, 0.01, 0.92 -> confident at 0.9: 1, 0, 1, 1
    p1 = torch.tensor([0.95, 0.6, 0.01, 0.92]).view(1, 1, 2, 2)
    teacher = torch.log(torch.cat([1 - p1, p1], dim=1)).requires_grad_(True)
    pseudo = [1, 0, 0, 1]
    student = torch.randn(1, 2, 2, 2, requires_grad=True)
    log_p = torch.log_softmax(student.detach(), dim=1).view(2, 4)
    expected = -(log_p[pseudo[0], 0] + log_p[pseudo[2], 2] + log_p[pseudo[3], 3]) / 4
    terms = DALACELoss(consistency_weight=0.5).mr_consistency(teacher, {"mr": student, "ct": student * 2})
    torch.testing.assert_close(terms["consistency_mr"], expected)
    torch.testing.assert_close(terms["confident"], torch.tensor(0.75))
    torch.testing.assert_close(terms["total"], 0.5 * (terms["consistency_mr"] + terms["consistency_ct"]))
    terms["total"].backward()
    assert teacher.grad is None and student.grad.abs().sum() > 0
    # a stricter threshold drops the 0.92 pixel
    strict = DALACELoss(consistency_threshold=0.94).mr_consistency(teacher, {"mr": student})
    torch.testing.assert_close(strict["confident"], torch.tensor(0.5))


@pytest.mark.parametrize("kwargs, name", [({"consistency_threshold": 0.3}, "consistency_threshold"),
                                          ({"consistency_threshold": 1.0}, "consistency_threshold"),
                                          ({"consistency_weight": -1.0}, "consistency_weight")])
def test_mr_consistency_settings_out_of_range_are_refused(kwargs, name):
    with pytest.raises(ValueError, match=name):
        DALACELoss(**kwargs)
