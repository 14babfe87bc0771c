"""Style-based generator: anatomy code + modality code -> image (paper section 3.3; MUNIT's decoder)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .blocks import AdaINResBlock, ConvNormAct

__all__ = ["StyleGenerator"]


class StyleGenerator(nn.Module):
    """Renders an anatomy code in the style given by a modality code.

    Paper: an MLP maps the modality code to AdaIN parameters; 4 residual blocks of 256 with AdaIN,
    two 2x upsampling stages and one output convolution. As in MUNIT the upsampling stages are
    nearest-neighbour 2x then a 5x5 convolution with layer norm (group norm with one group), which
    keeps the AdaIN style instead of normalizing it away, and the output is ``tanh`` in [-1, 1],
    the range the normalization transforms produce.

    Domain-agnostic rendering: called with ``modality=None``, every AdaIN takes scale 1 and shift 0,
    that is plain instance normalization. The image is then drawn by the same weights from the
    anatomy code alone, with no modality's statistics injected and no extra parameters; the APM's
    losses on these images train exactly that path.

    Args:
        out_channels: image channels.
        in_channels: channels of the anatomy code.
        code_dim: length of the modality code.
        num_res_blocks: AdaIN residual blocks.
        num_upsample: 2x upsampling stages (must match the anatomy encoder's ``num_downsample``).
        mlp_channels: hidden width of the MLP.
        mlp_layers: linear layers of the MLP.
    """

    def __init__(
        self,
        out_channels: int = 1,
        in_channels: int = 256,
        code_dim: int = 8,
        num_res_blocks: int = 4,
        num_upsample: int = 2,
        mlp_channels: int = 256,
        mlp_layers: int = 3,
        act: str | tuple = "relu",
    ) -> None:
        super().__init__()
        self.res_blocks = nn.ModuleList([AdaINResBlock(in_channels, act=act) for _ in range(num_res_blocks)])
        self.style_dim = 4 * in_channels
        self.num_style_params = num_res_blocks * self.style_dim

        mlp: list[nn.Module] = []
        width = code_dim
        for _ in range(mlp_layers - 1):
            mlp += [nn.Linear(width, mlp_channels), nn.ReLU(inplace=True)]
            width = mlp_channels
        mlp.append(nn.Linear(width, self.num_style_params))
        self.mlp = nn.Sequential(*mlp)

        up: list[nn.Module] = []
        channels = in_channels
        for _ in range(num_upsample):
            up += [
                nn.Upsample(scale_factor=2.0, mode="nearest"),
                ConvNormAct(channels, channels // 2, 5, norm=("group", {"num_groups": 1}), act=act),
            ]
            channels //= 2
        self.upsample = nn.Sequential(*up)
        self.output = nn.Sequential(ConvNormAct(channels, out_channels, 7, norm=None, act=None), nn.Tanh())

    def style_parameters(self, modality: Optional[torch.Tensor], anatomy: torch.Tensor) -> torch.Tensor:
        """AdaIN parameters (B, num_style_params), laid out per block as [scale1, shift1, scale2, shift2].

        The MLP predicts scales as offsets from 1 so that a zero-initialised MLP output is the neutral
        style. Without a modality code the neutral style itself is returned.
        """
        batch = anatomy.shape[0]
        neutral = anatomy.new_zeros(batch, len(self.res_blocks), 4, self.style_dim // 4)
        neutral[:, :, 0] = 1.0
        neutral[:, :, 2] = 1.0
        neutral = neutral.reshape(batch, self.num_style_params)
        if modality is None:
            return neutral
        return neutral + self.mlp(modality)

    def forward(self, anatomy: torch.Tensor, modality: Optional[torch.Tensor] = None) -> torch.Tensor:
        style = self.style_parameters(modality, anatomy)
        x = anatomy
        for i, block in enumerate(self.res_blocks):
            x = block(x, style[:, i * self.style_dim : (i + 1) * self.style_dim])
        return self.output(self.upsample(x))
