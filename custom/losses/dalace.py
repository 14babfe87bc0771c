"""Loss terms of DALACE, equations (1)-(8) of the paper, and two beyond it, off unless weighted: the CT labels
on MR's path (:meth:`DALACELoss.mr_path_segmentation`) and the consistency of the segmentation of unlabelled MR
under appearance changes (:meth:`DALACELoss.mr_consistency`).

Each method returns a dictionary of named scalar terms (for logging every term separately) with the
weighted sum the optimizer steps on under ``"total"``. The adversarial terms use MONAI's
``PatchAdversarialLoss``: ``"bce"`` is the paper's log loss (the generator side in its
non-saturating form, -log D(fake)), ``"least_squares"`` is LSGAN. Discriminator terms are the
negated equations (5), (6) and (8), i.e. binary cross-entropies summed over the real and the fake
side; generator inputs to them are detached so that they reach the discriminators only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import PatchAdversarialLoss
from torch import nn

__all__ = ["DALACELoss"]


class DALACELoss:
    """The paper's objective, term by term.

    Args:
        alpha: weight of the image reconstruction L1, L_img (2.5).
        beta: weight of the latent reconstruction L1 of anatomy and modality codes, L_latent (0.01).
        adv_weight: weight of the cross-domain adversarial terms for the generators (DAM, eq. 4-6).
        ce_weight: weight of the segmenter's cross-entropy on CT domain-agnostic images (eq. 7).
        pair_weight: weight of the pair adversarial term for the generators (APM, eq. 8).
        translated_ce_weight: beyond the paper, weight of the cross-entropy of MR's path (anatomy
            encoder, generator, segmenter) on CT->MR translations against the CT labels (0: off).
        cross_ce_weight: beyond the paper, the same on the (appearance-augmented) CT images themselves.
        consistency_weight: beyond the paper, weight of :meth:`mr_consistency` (0: off).
        consistency_threshold: the teacher's class probability from which a pixel of MR joins it.
        gan_criterion: ``"bce"`` (the paper's log loss) or ``"least_squares"``.
        segmentation_loss: loss of logits (B, C, H, W) against integer labels (B, 1, H, W); default
            pixel-wise cross-entropy as in the paper (MONAI's ``DiceCELoss`` is a drop-in option).
    """

    def __init__(
        self,
        alpha: float = 2.5,
        beta: float = 0.01,
        adv_weight: float = 1.0,
        ce_weight: float = 1.0,
        pair_weight: float = 1.0,
        translated_ce_weight: float = 0.0,
        cross_ce_weight: float = 0.0,
        consistency_weight: float = 0.0,
        consistency_threshold: float = 0.9,
        gan_criterion: str = "bce",
        segmentation_loss: nn.Module | None = None,
    ) -> None:
        if gan_criterion not in ("bce", "least_squares"):
            raise ValueError(f"gan_criterion must be 'bce' or 'least_squares', got {gan_criterion!r}.")
        self.alpha, self.beta = alpha, beta
        self.adv_weight, self.ce_weight, self.pair_weight = adv_weight, ce_weight, pair_weight
        self.translated_ce_weight, self.cross_ce_weight = translated_ce_weight, cross_ce_weight
        if consistency_weight < 0:
            raise ValueError(f"consistency_weight must be 0 (off) or positive, got {consistency_weight!r}.")
        if not 0.5 <= consistency_threshold < 1.0:
            raise ValueError(f"consistency_threshold must be in [0.5, 1), got {consistency_threshold!r}.")
        self.consistency_weight, self.consistency_threshold = consistency_weight, consistency_threshold
        self.adversarial = PatchAdversarialLoss(criterion=gan_criterion, no_activation_leastsq=True)
        self.segmentation_loss = segmentation_loss

    # ------------------------------------------------------------------ eq. (1)-(3): reconstruction
    def reconstruction(self, paths: dict[str, torch.Tensor], x_ct: torch.Tensor, x_mr: torch.Tensor) -> dict:
        """alpha * (L_CT + L_MR) + beta * (L_a^CT + L_m^CT + L_a^MR + L_m^MR)."""
        terms = {
            "img_ct": F.l1_loss(paths["rec_ct"], x_ct),
            "img_mr": F.l1_loss(paths["rec_mr"], x_mr),
            "latent_a_ct": F.l1_loss(paths["a_ct_rec"], paths["a_ct"]),
            "latent_m_ct": F.l1_loss(paths["m_ct_rec"], paths["m_ct"]),
            "latent_a_mr": F.l1_loss(paths["a_mr_rec"], paths["a_mr"]),
            "latent_m_mr": F.l1_loss(paths["m_mr_rec"], paths["m_mr"]),
        }
        image = terms["img_ct"] + terms["img_mr"]
        latent = terms["latent_a_ct"] + terms["latent_m_ct"] + terms["latent_a_mr"] + terms["latent_m_mr"]
        terms["total"] = self.alpha * image + self.beta * latent
        return terms

    # --------------------------------------------------------------- eq. (4)-(6): cross-domain GAN
    def cross_adversarial_generator(
        self, discriminators: nn.ModuleDict, paths: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """The encoders' and generators' side: translated images should pass as real."""
        terms = {
            "adv_ct2mr": self._gen(discriminators["mr"](paths["ct2mr"])),
            "adv_mr2ct": self._gen(discriminators["ct"](paths["mr2ct"])),
        }
        terms["total"] = self.adv_weight * (terms["adv_ct2mr"] + terms["adv_mr2ct"])
        return terms

    def cross_adversarial_discriminator(
        self, discriminators: nn.ModuleDict, paths: dict[str, torch.Tensor], x_ct: torch.Tensor, x_mr: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """D_MR: real MR vs CT->MR (eq. 5); D_CT: real CT vs MR->CT (eq. 6)."""
        terms = {
            "d_mr": self._disc(discriminators["mr"](x_mr), discriminators["mr"](paths["ct2mr"].detach())),
            "d_ct": self._disc(discriminators["ct"](x_ct), discriminators["ct"](paths["mr2ct"].detach())),
        }
        terms["total"] = terms["d_mr"] + terms["d_ct"]
        return terms

    # ----------------------------------------------------------------------- eq. (7)-(8): APM
    def segmentation(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Pixel-wise cross-entropy of the segmenter's logits against integer labels (B, 1, H, W)."""
        if self.segmentation_loss is not None:
            return self.segmentation_loss(logits, label)
        return F.cross_entropy(logits, label[:, 0].long())

    @property
    def supervises_mr_path(self) -> bool:
        """Whether the CT labels also supervise MR's path (the forward must then run ``cross_paths``)."""
        return bool(self.translated_ce_weight or self.cross_ce_weight)

    def mr_path_segmentation(self, paths: dict[str, torch.Tensor], label: torch.Tensor) -> dict[str, torch.Tensor]:
        """The CT labels on MR's path: its segmentation of CT->MR translations and of the CT images.

        Why: the pair game alone reaches MR's anatomy encoder only through a discriminator; these terms
        give it the labels' signal on MR-like (translated) and randomly re-rendered (augmented) CT content.
        """
        terms = {
            "ce_ct2mr": self.segmentation(paths["seg_ct2mr"].float(), label),
            "ce_ct_via_mr": self.segmentation(paths["seg_ct_via_mr"].float(), label),
        }
        terms["total"] = self.translated_ce_weight * terms["ce_ct2mr"] + self.cross_ce_weight * terms["ce_ct_via_mr"]
        return terms

    def mr_consistency(self, teacher_logits: torch.Tensor, student_logits: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Cross-entropy of each student's logits on a re-rendered MR slice against the teacher's mask of
        the slice as it is, on the pixels where the teacher's class probability reaches the threshold,
        averaged over all pixels (FixMatch's form).

        Why: the pair game and the CT labels never tell the segmenter that an MR slice and the same slice
        with other intensities hold one liver; test-time augmentation showed that its masks of the two
        differ, and averaging them helped. This teaches the agreement in training, on unlabelled MR.
        """
        with torch.no_grad():
            confidence, pseudo = torch.softmax(teacher_logits.detach().float(), dim=1).max(dim=1)
            mask = (confidence >= self.consistency_threshold).float()
        terms = {
            f"consistency_{name}": (F.cross_entropy(logits.float(), pseudo, reduction="none") * mask).mean()
            for name, logits in student_logits.items()
        }
        terms["total"] = self.consistency_weight * sum(terms.values())
        terms["confident"] = mask.mean()
        return terms

    def pair_generator(self, pair_discriminator: nn.Module, paths: dict[str, torch.Tensor]) -> torch.Tensor:
        """MR's (domain-agnostic image, predicted mask) pair should pass as a CT pair."""
        return self._gen(pair_discriminator(paths["agn_mr"], torch.softmax(paths["seg_mr"], dim=1)))

    def pair_discriminator(self, pair_discriminator: nn.Module, paths: dict[str, torch.Tensor]) -> torch.Tensor:
        """CT pairs are 'real', MR pairs 'fake' (eq. 8)."""
        ct = pair_discriminator(paths["agn_ct"].detach(), torch.softmax(paths["seg_ct"].detach(), dim=1))
        mr = pair_discriminator(paths["agn_mr"].detach(), torch.softmax(paths["seg_mr"].detach(), dim=1))
        return self._disc(ct, mr)

    # ---------------------------------------------------------------------------------- helpers
    # binary cross-entropy is unsafe under autocast: the GAN criterion always runs in float32
    def _gen(self, fake_logits: torch.Tensor) -> torch.Tensor:
        with torch.autocast(fake_logits.device.type, enabled=False):
            return self.adversarial(fake_logits.float(), target_is_real=True, for_discriminator=False)

    def _disc(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        with torch.autocast(real_logits.device.type, enabled=False):
            real = self.adversarial(real_logits.float(), target_is_real=True, for_discriminator=True)
            fake = self.adversarial(fake_logits.float(), target_is_real=False, for_discriminator=True)
        return real + fake
