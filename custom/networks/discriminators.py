"""Discriminators: D_CT and D_MR of the Domain-Agnostic Module, and the APM's pair discriminator.

Both are MONAI's PatchGAN (``monai.networks.nets.PatchDiscriminator``), the CycleGAN/pix2pix
classifier the paper's "convolutional binary classifiers" most likely were: 4x4 convolutions, leaky
ReLU 0.2, instance norm (batch statistics would mix real and fake batches), one logit per patch.
"""

from __future__ import annotations

import torch
from monai.networks.nets import PatchDiscriminator

__all__ = ["ImageDiscriminator", "PairDiscriminator"]


class ImageDiscriminator(PatchDiscriminator):
    """Real-or-translated classifier for the images of one modality; returns patch logits (B, 1, h, w).

    Args:
        in_channels: image channels.
        channels: filters of the first layer, doubled by each following layer.
        num_layers: layers after the first (3 gives the 70x70 receptive field of CycleGAN).
        norm: normalization inside the layers.
    """

    def __init__(self, in_channels: int = 1, channels: int = 64, num_layers: int = 3, norm: str | tuple = "instance") -> None:
        super().__init__(
            spatial_dims=2, channels=channels, in_channels=in_channels, out_channels=1, num_layers_d=num_layers, norm=norm
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x)[-1]


class PairDiscriminator(ImageDiscriminator):
    """Conditional discriminator of (domain-agnostic image, predicted mask) pairs (APM, equation 8).

    It learns to tell pairs that came from CT (label 'real') from pairs that came from MR, so the
    encoders and generators are pushed to make MR's anatomical images segment like CT's.

    Args:
        image_channels: channels of the domain-agnostic image.
        num_classes: channels of the mask, given as softmax probabilities.
    """

    def __init__(
        self,
        image_channels: int = 1,
        num_classes: int = 2,
        channels: int = 64,
        num_layers: int = 3,
        norm: str | tuple = "instance",
    ) -> None:
        super().__init__(in_channels=image_channels + num_classes, channels=channels, num_layers=num_layers, norm=norm)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(torch.cat([image, mask], dim=1))
