"""Anatomy and modality encoders (paper section 3.3; MUNIT's content and style encoders)."""

from __future__ import annotations

import torch
from torch import nn

from .blocks import ConvNormAct, ResBlock

__all__ = ["AnatomyEncoder", "ModalityEncoder"]


class AnatomyEncoder(nn.Module):
    """Image -> anatomy code, a feature map of ``base_channels * 2**num_downsample`` x H/4 x W/4.

    Paper: conv 64 stride 1, convs 128 and 256 stride 2, 4 residual blocks of 256, batch norm.
    Kernels (7x7 first, 4x4 strided, 3x3 residual) follow MUNIT, as the paper is silent on them.

    Args:
        in_channels: image channels.
        base_channels: filters of the first convolution, doubled by each stride-2 convolution.
        num_downsample: stride-2 convolutions; the code is ``2**num_downsample`` times smaller.
        num_res_blocks: residual blocks at the code's width.
        norm: normalization of every layer (batch norm in the paper).
    """

    def __init__(
        self,
        in_channels: int = 1,
        base_channels: int = 64,
        num_downsample: int = 2,
        num_res_blocks: int = 4,
        norm: str | tuple = "batch",
        act: str | tuple = "relu",
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [ConvNormAct(in_channels, base_channels, 7, norm=norm, act=act)]
        channels = base_channels
        for _ in range(num_downsample):
            layers.append(ConvNormAct(channels, channels * 2, 4, stride=2, norm=norm, act=act))
            channels *= 2
        layers += [ResBlock(channels, norm=norm, act=act) for _ in range(num_res_blocks)]
        self.model = nn.Sequential(*layers)
        self.out_channels = channels
        self.num_downsample, self.num_res_blocks = num_downsample, num_res_blocks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class ModalityEncoder(nn.Module):
    """Image -> modality code, a vector of ``code_dim`` (8 in the paper).

    Paper: conv 64 stride 1, four stride-2 convs (128, 256, 256, 256), global average pooling, a
    fully connected layer to 8, no normalization (normalization would erase the very statistics
    that carry the modality).

    Args:
        in_channels: image channels.
        base_channels: filters of the first convolution.
        num_downsample: stride-2 convolutions; widths double up to ``4 * base_channels``.
        code_dim: length of the modality code.
    """

    def __init__(
        self,
        in_channels: int = 1,
        base_channels: int = 64,
        num_downsample: int = 4,
        code_dim: int = 8,
        act: str | tuple = "relu",
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [ConvNormAct(in_channels, base_channels, 7, norm=None, act=act)]
        channels = base_channels
        for i in range(num_downsample):
            out = base_channels * 2 ** min(i + 1, 2)
            layers.append(ConvNormAct(channels, out, 4, stride=2, norm=None, act=act))
            channels = out
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(1)]
        self.model = nn.Sequential(*layers)
        self.fc = nn.Linear(channels, code_dim)
        self.code_dim = code_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.model(x))
