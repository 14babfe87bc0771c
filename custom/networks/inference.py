"""The inference network: one image slice in, segmentation logits out (what ``models/model.pt`` holds)."""

from __future__ import annotations

import torch
from torch import nn

from .translator import AnatomyTranslator

__all__ = ["DomainAgnosticSegmenter"]


class DomainAgnosticSegmenter(AnatomyTranslator):
    """Image -> anatomy encoder -> domain-agnostic image -> segmenter -> logits.

    This is DALACE at test time for one modality: the modality encoder is not needed, because the
    segmenter only ever sees domain-agnostic images. The module is one tensor in, one tensor out and
    scripts with TorchScript, so MONAI's ``ckpt_export`` and ``verify_net_in_out`` accept it.

    Build it either from hyperparameters (as ``network_def`` in ``inference.yaml`` does) or around the
    parts of a trained network (``DALACE.inference_network``, ``CycleGAN.inference_network``); the
    state_dict keys are the same: ``anatomy_encoder.*``, ``generator.*``, ``segmenter.*``.

    Args:
        segmenter: the U-Net, (B, in_channels, H, W) -> (B, num_classes, H, W) logits.
        others: of :class:`~custom.networks.AnatomyTranslator`.
    """

    def __init__(
        self,
        segmenter: nn.Module,
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
        super().__init__(
            in_channels, base_channels, num_downsample, num_res_blocks, code_dim, mlp_channels, mlp_layers,
            anatomy_encoder=anatomy_encoder, generator=generator,
        )
        self.segmenter = segmenter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.segmenter(self.domain_agnostic_image(x))
