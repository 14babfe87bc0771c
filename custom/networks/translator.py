"""The anatomy encoder + style generator pair, image -> anatomy code -> image: the one place its sizes are tied.

DALACE holds one pair per modality, CycleGAN's translators are pairs rendered in neutral style (so
that the baselines change the method, not the capacity), and the inference network is a pair followed
by the segmenter.
"""

from __future__ import annotations

import torch
from torch import nn

from .encoders import AnatomyEncoder
from .generator import StyleGenerator

__all__ = ["AnatomyTranslator", "matching_generator"]


def matching_generator(
    encoder: AnatomyEncoder, out_channels: int = 1, code_dim: int = 8, mlp_channels: int = 256, mlp_layers: int = 3
) -> StyleGenerator:
    """The generator that renders ``encoder``'s anatomy code: its width, residual blocks and upsampling
    follow the encoder's (built apart so that DALACE keeps its parameters' creation order)."""
    return StyleGenerator(
        out_channels=out_channels,
        in_channels=encoder.out_channels,
        code_dim=code_dim,
        num_res_blocks=encoder.num_res_blocks,
        num_upsample=encoder.num_downsample,
        mlp_channels=mlp_channels,
        mlp_layers=mlp_layers,
    )


class AnatomyTranslator(nn.Module):
    """Image -> anatomy encoder -> generator without a modality code (neutral style) -> image.

    State-dict keys ``anatomy_encoder.*``, ``generator.*``, whether built here from sizes or wrapped
    around the modules of a trained composite (``anatomy_encoder``, ``generator``: then no size is read).

    Args:
        in_channels, base_channels, num_downsample, num_res_blocks, code_dim, mlp_channels, mlp_layers:
            as :class:`~custom.networks.DALACE`.
        anatomy_encoder, generator: existing modules to wrap instead of building new ones.
    """

    def __init__(
        self,
        in_channels: int = 1,
        base_channels: int = 64,
        num_downsample: int = 2,
        num_res_blocks: int = 4,
        code_dim: int = 8,
        mlp_channels: int = 256,
        mlp_layers: int = 3,
        anatomy_encoder: nn.Module | None = None,
        generator: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if anatomy_encoder is None:
            anatomy_encoder = AnatomyEncoder(in_channels, base_channels, num_downsample, num_res_blocks)
        if generator is None:
            generator = matching_generator(anatomy_encoder, in_channels, code_dim, mlp_channels, mlp_layers)
        self.anatomy_encoder = anatomy_encoder
        self.generator = generator

    def domain_agnostic_image(self, x: torch.Tensor) -> torch.Tensor:
        """The paper's domain-agnostic image of ``x`` (Fig. 7): its anatomy rendered without a modality."""
        return self.generator(self.anatomy_encoder(x), None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.domain_agnostic_image(x)
