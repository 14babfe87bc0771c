"""The DALACE composite: every network of the paper and its forward paths (section 3, Fig. 2)."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from .discriminators import ImageDiscriminator, PairDiscriminator
from .encoders import AnatomyEncoder, ModalityEncoder
from .inference import DomainAgnosticSegmenter
from .translator import AnatomyTranslator, matching_generator

__all__ = ["DALACE", "MODALITIES"]

#: The two modalities of the model. DAL mixes MR sequences and phases under one "mr" without domain labels.
MODALITIES = ("ct", "mr")


class DALACE(nn.Module):
    """Anatomy and modality encoders and a style generator per modality, D_CT and D_MR (DAM), and the
    segmenter with its pair discriminator (APM).

    :meth:`forward` runs the paper's paths on an unpaired CT batch and MR batch and returns them by
    name; the losses in :mod:`custom.losses` read that dictionary and the trainer decides which
    parameters each loss updates (:meth:`parameter_groups`).

    Args:
        segmenter: the U-Net S (a MONAI network from the config), image -> ``num_classes`` logits.
        in_channels: image channels.
        num_classes: segmentation classes including background.
        base_channels: width of the encoders' first layer (64 in the paper); the anatomy code has
            ``base_channels * 2**num_downsample`` channels (256).
        num_downsample: stride-2 layers of the anatomy encoder (2: code of H/4 x W/4).
        num_res_blocks: residual blocks in the anatomy encoder and the generator (4).
        code_dim: length of the modality code (8).
        modality_downsample: stride-2 layers of the modality encoder (4).
        mlp_channels, mlp_layers: the generator's MLP from modality code to AdaIN parameters.
        disc_channels, disc_layers, disc_norm: the three PatchGAN discriminators.
    """

    def __init__(
        self,
        segmenter: nn.Module,
        in_channels: int = 1,
        num_classes: int = 2,
        base_channels: int = 64,
        num_downsample: int = 2,
        num_res_blocks: int = 4,
        code_dim: int = 8,
        modality_downsample: int = 4,
        mlp_channels: int = 256,
        mlp_layers: int = 3,
        disc_channels: int = 64,
        disc_layers: int = 3,
        disc_norm: str | tuple = "instance",
    ) -> None:
        super().__init__()
        self.anatomy_encoders = nn.ModuleDict(
            {m: AnatomyEncoder(in_channels, base_channels, num_downsample, num_res_blocks) for m in MODALITIES}
        )
        self.modality_encoders = nn.ModuleDict(
            {m: ModalityEncoder(in_channels, base_channels, modality_downsample, code_dim) for m in MODALITIES}
        )
        self.generators = nn.ModuleDict(
            {m: matching_generator(self.anatomy_encoders[m], in_channels, code_dim, mlp_channels, mlp_layers) for m in MODALITIES}
        )
        self.image_discriminators = nn.ModuleDict(
            {m: ImageDiscriminator(in_channels, disc_channels, disc_layers, disc_norm) for m in MODALITIES}
        )
        self.pair_discriminator = PairDiscriminator(in_channels, num_classes, disc_channels, disc_layers, disc_norm)
        self.segmenter = segmenter

    # ----------------------------------------------------------------------------------- paths
    def encode(self, x: torch.Tensor, modality: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(anatomy code, modality code) of ``x`` with the encoders of ``modality``."""
        return self.anatomy_encoders[modality](x), self.modality_encoders[modality](x)

    def decode(self, anatomy: torch.Tensor, code: torch.Tensor | None, modality: str) -> torch.Tensor:
        """Render ``anatomy`` with the generator of ``modality``; ``code=None`` gives the domain-agnostic image."""
        return self.generators[modality](anatomy, code)

    def domain_agnostic_image(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        return self.decode(self.anatomy_encoders[modality](x), None, modality)

    def forward(
        self, x_ct: torch.Tensor, x_mr: torch.Tensor, detach_agnostic: bool = False, cross_paths: bool = False
    ) -> dict[str, torch.Tensor]:
        """All of Fig. 2 for one unpaired CT batch and MR batch (equal batch sizes).

        Returns, by key: ``a_ct, m_ct, a_mr, m_mr`` codes; ``rec_ct, rec_mr`` self-reconstructions
        (eq. 2); ``ct2mr, mr2ct`` modality swaps; ``a_ct_rec, m_mr_rec`` (re-encoded from ``ct2mr`` by
        the MR encoders) and ``a_mr_rec, m_ct_rec`` (from ``mr2ct`` by the CT encoders) for eq. 3;
        ``agn_ct, agn_mr`` domain-agnostic images and ``seg_ct, seg_mr`` the segmenter's logits on them
        (on detached images with ``detach_agnostic``, DADR's two-stage training).

        With ``cross_paths`` (beyond the paper) also the MR path on labelled CT content, whose CT
        labels then supervise it: ``seg_ct2mr`` segments the domain-agnostic image of the CT->MR
        translation by MR's anatomy encoder and generator, ``seg_ct_via_mr`` that of the CT image itself.
        """
        a_ct, m_ct = self.encode(x_ct, "ct")
        a_mr, m_mr = self.encode(x_mr, "mr")
        ct2mr = self.decode(a_ct, m_mr, "mr")
        mr2ct = self.decode(a_mr, m_ct, "ct")
        a_ct_rec, m_mr_rec = self.encode(ct2mr, "mr")
        a_mr_rec, m_ct_rec = self.encode(mr2ct, "ct")
        agn_ct = self.decode(a_ct, None, "ct")
        agn_mr = self.decode(a_mr, None, "mr")
        segment = (lambda x: self.segmenter(x.detach())) if detach_agnostic else self.segmenter
        cross = {}
        if cross_paths:
            agn_ct2mr = self.decode(a_ct_rec, None, "mr")
            agn_ct_via_mr = self.domain_agnostic_image(x_ct, "mr")
            cross = {
                "agn_ct2mr": agn_ct2mr,
                "seg_ct2mr": segment(agn_ct2mr),
                "agn_ct_via_mr": agn_ct_via_mr,
                "seg_ct_via_mr": segment(agn_ct_via_mr),
            }
        return {
            "a_ct": a_ct,
            "m_ct": m_ct,
            "a_mr": a_mr,
            "m_mr": m_mr,
            "rec_ct": self.decode(a_ct, m_ct, "ct"),
            "rec_mr": self.decode(a_mr, m_mr, "mr"),
            "ct2mr": ct2mr,
            "mr2ct": mr2ct,
            "a_ct_rec": a_ct_rec,
            "m_mr_rec": m_mr_rec,
            "a_mr_rec": a_mr_rec,
            "m_ct_rec": m_ct_rec,
            "agn_ct": agn_ct,
            "agn_mr": agn_mr,
            "seg_ct": segment(agn_ct),
            "seg_mr": segment(agn_mr),
            **cross,
        }

    # ------------------------------------------------------------------------------ parameters
    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """The parameters each optimizer of the paper's schedule (section 3.3) updates.

        ``autoencoder``: both modalities' encoders and generators (L_recon, L_cross_adv as generator);
        ``anatomy``: anatomy encoders and generators (L_CE and L_pair_adv as generator, eq. 7-8);
        ``image_discriminators``: D_CT and D_MR; ``pair_discriminator``; ``segmenter``.
        """
        autoencoder = [*self.anatomy_encoders.parameters(), *self.modality_encoders.parameters()]
        autoencoder += list(self.generators.parameters())
        return {
            "autoencoder": autoencoder,
            "anatomy": [*self.anatomy_encoders.parameters(), *self.generators.parameters()],
            "image_discriminators": list(self.image_discriminators.parameters()),
            "pair_discriminator": list(self.pair_discriminator.parameters()),
            "segmenter": list(self.segmenter.parameters()),
        }

    def inference_network(
        self, modality: str = "mr", copy_modules: bool = False, extra_paths: Sequence[str] = ()
    ) -> DomainAgnosticSegmenter:
        """The test-time network for ``modality``; its state_dict is what ``models/model.pt`` stores.

        ``extra_paths``: other modalities whose anatomy encoder and generator the image also goes
        through, the segmenter's probabilities averaged (beyond the paper; ``DomainAgnosticSegmenter``).
        The modules are shared with this model (so it tracks training) unless ``copy_modules``.
        """
        if isinstance(extra_paths, str) or modality in extra_paths or not set(extra_paths) <= set(MODALITIES):
            raise ValueError(
                f"extra_paths must list modalities of {MODALITIES} other than {modality!r}, got {extra_paths!r}."
            )
        translators = {
            m: AnatomyTranslator(anatomy_encoder=self.anatomy_encoders[m], generator=self.generators[m])
            for m in (modality, *extra_paths)
        }
        segmenter = self.segmenter
        if copy_modules:
            translators = copy.deepcopy(translators)
            segmenter = copy.deepcopy(segmenter)
        main = translators.pop(modality)
        return DomainAgnosticSegmenter(
            segmenter, anatomy_encoder=main.anatomy_encoder, generator=main.generator, extra_paths=translators
        )
