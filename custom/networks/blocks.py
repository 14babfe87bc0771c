"""Building blocks shared by the DALACE networks.

Convolutions come from MONAI (``monai.networks.blocks.Convolution``); only adaptive instance
normalization, which MONAI does not have, is written here. Every block is TorchScript-friendly
because the inference module (anatomy encoder -> generator -> U-Net) must script.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from monai.networks.layers.utils import get_act_layer
from torch import nn

__all__ = ["ConvNormAct", "ResBlock", "AdaptiveInstanceNorm2d", "AdaINResBlock"]


class ConvNormAct(Convolution):
    """A 2D convolution followed by normalization and activation (MONAI's ``Convolution``, order NA).

    Padding is ``(kernel_size - 1) // 2`` so that a stride-2 convolution with an even kernel (4x4,
    as in MUNIT and CycleGAN) halves the size exactly. The bias is dropped where a norm follows.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        norm: str | tuple | None = "batch",
        act: str | tuple | None = "relu",
    ) -> None:
        super().__init__(
            spatial_dims=2,
            in_channels=in_channels,
            out_channels=out_channels,
            kernel_size=kernel_size,
            strides=stride,
            padding=(kernel_size - 1) // 2,
            adn_ordering="NA",
            norm=norm,
            act=act,
            bias=norm is None,
        )


class ResBlock(nn.Module):
    """Two 3x3 convolutions with a skip connection; the second has no activation (MUNIT's ResBlock)."""

    def __init__(self, channels: int, norm: str | tuple | None = "batch", act: str | tuple | None = "relu") -> None:
        super().__init__()
        self.conv1 = ConvNormAct(channels, channels, 3, norm=norm, act=act)
        self.conv2 = ConvNormAct(channels, channels, 3, norm=norm, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.conv1(x))


class AdaptiveInstanceNorm2d(nn.Module):
    """Instance normalization whose per-sample scale and shift are given at call time (AdaIN).

    Unlike MUNIT, which writes the parameters into module attributes before each call, the scale and
    shift are arguments here: the module stays stateless and scriptable. ``scale=1, shift=0`` is plain
    instance normalization, the neutral style used for domain-agnostic images.
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps

    def forward(self, x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        normalized = F.instance_norm(x, eps=self.eps)
        return normalized * scale[:, :, None, None] + shift[:, :, None, None]


class AdaINResBlock(nn.Module):
    """MUNIT's residual block with AdaIN after each convolution; takes 4 style vectors of ``channels``."""

    def __init__(self, channels: int, act: str | tuple = "relu") -> None:
        super().__init__()
        self.conv1 = ConvNormAct(channels, channels, 3, norm=None, act=None)
        self.norm1 = AdaptiveInstanceNorm2d(channels)
        self.act1 = get_act_layer(act)
        self.conv2 = ConvNormAct(channels, channels, 3, norm=None, act=None)
        self.norm2 = AdaptiveInstanceNorm2d(channels)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """``style``: (B, 4 * channels), the scale and shift of the first and second normalization."""
        scale1, shift1, scale2, shift2 = torch.chunk(style, 4, dim=1)
        y = self.act1(self.norm1(self.conv1(x), scale1, shift1))
        y = self.norm2(self.conv2(y), scale2, shift2)
        return x + y
