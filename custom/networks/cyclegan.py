"""Pixel-level translation baselines of the paper (CycleGAN and TD-GAN, Tables 1-3).

The translators are CycleGAN's ResNet generator (downsampling convolutions, residual blocks,
upsampling) built from DALACE's own pair, :class:`~custom.networks.AnatomyTranslator` (an anatomy
encoder followed by a generator in neutral style), so that the comparison changes the method, not
the capacity. TD-GAN's test-time network,
MR -> CT translator -> segmenter, then has the very structure of DALACE's inference network and loads
into the same ``inference.yaml``.
"""

from __future__ import annotations

import torch
from torch import nn

from .discriminators import ImageDiscriminator
from .inference import DomainAgnosticSegmenter
from .translator import AnatomyTranslator

__all__ = ["CycleGAN"]


class CycleGAN(nn.Module):
    """Translators CT->MR and MR->CT, discriminators D_CT and D_MR, and the segmenter S.

    :meth:`forward` returns ``ct2mr, mr2ct`` translations and ``ct_cycle, mr_cycle`` round trips; the
    trainer segments only the images its flavour needs (CycleGAN: translated CT; TD-GAN: real CT and
    the CT round trip), so no segmenter pass is spent on images no loss uses.

    Args:
        segmenter: the U-Net S.
        base_channels, num_downsample, num_res_blocks, mlp_channels: the translators (as DALACE's).
        disc_channels, disc_layers, disc_norm: the PatchGAN discriminators.
    """

    def __init__(
        self,
        segmenter: nn.Module,
        in_channels: int = 1,
        base_channels: int = 64,
        num_downsample: int = 2,
        num_res_blocks: int = 4,
        mlp_channels: int = 256,
        disc_channels: int = 64,
        disc_layers: int = 3,
        disc_norm: str | tuple = "instance",
    ) -> None:
        super().__init__()
        self.translators = nn.ModuleDict(
            {
                d: AnatomyTranslator(in_channels, base_channels, num_downsample, num_res_blocks, mlp_channels=mlp_channels)
                for d in ("ct2mr", "mr2ct")
            }
        )
        self.image_discriminators = nn.ModuleDict(
            {m: ImageDiscriminator(in_channels, disc_channels, disc_layers, disc_norm) for m in ("ct", "mr")}
        )
        self.segmenter = segmenter

    def forward(self, x_ct: torch.Tensor, x_mr: torch.Tensor) -> dict[str, torch.Tensor]:
        ct2mr = self.translators["ct2mr"](x_ct)
        mr2ct = self.translators["mr2ct"](x_mr)
        return {
            "ct2mr": ct2mr,
            "mr2ct": mr2ct,
            "ct_cycle": self.translators["mr2ct"](ct2mr),
            "mr_cycle": self.translators["ct2mr"](mr2ct),
        }

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {
            "translators": list(self.translators.parameters()),
            "image_discriminators": list(self.image_discriminators.parameters()),
            "segmenter": list(self.segmenter.parameters()),
        }

    def inference_network(self, modality: str = "mr", task_driven: bool = False) -> nn.Module:
        """The test-time network for ``modality``; its state_dict is what ``models/model.pt`` stores.

        S segments the modality it was trained on as it is: MR for CycleGAN (S learned on CT translated
        to MR), CT for TD-GAN (S learned on CT). The other modality is translated first, a
        :class:`DomainAgnosticSegmenter`-shaped network (translator + S) that loads into ``inference.yaml``.
        """
        if modality not in ("ct", "mr"):
            raise ValueError(f"modality must be 'ct' or 'mr', got {modality!r}.")
        if (modality == "mr") != task_driven:
            return self.segmenter
        translator = self.translators["mr2ct" if modality == "mr" else "ct2mr"]
        return DomainAgnosticSegmenter(
            self.segmenter, anatomy_encoder=translator.anatomy_encoder, generator=translator.generator
        )
