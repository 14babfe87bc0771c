"""The inference network: one image slice in, segmentation logits out (what ``models/model.pt`` holds)."""

from __future__ import annotations

import torch
from torch import nn

from .encoders import AnatomyEncoder
from .generator import StyleGenerator

__all__ = ["DomainAgnosticSegmenter"]


class DomainAgnosticSegmenter(nn.Module):
    """Image -> anatomy encoder -> domain-agnostic image -> segmenter -> logits.

    This is DALACE at test time for one modality: the modality encoder is not needed, because the
    segmenter only ever sees domain-agnostic images. The module is one tensor in, one tensor out and
    scripts with TorchScript, so MONAI's ``ckpt_export`` and ``verify_net_in_out`` accept it.

    Build it either from hyperparameters (as ``network_def`` in ``inference.yaml`` does) or around the
    parts of a trained :class:`~custom.networks.DALACE` (``DALACE.inference_network``); the state_dict
    keys are the same: ``anatomy_encoder.*``, ``generator.*``, ``segmenter.*``.

    Args:
        segmenter: the U-Net, (B, in_channels, H, W) -> (B, num_classes, H, W) logits.
        in_channels, base_channels, num_downsample, num_res_blocks, code_dim, mlp_channels, mlp_layers:
            as :class:`~custom.networks.DALACE`.
        anatomy_encoder, generator: existing modules to wrap instead of building new ones.
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
        super().__init__()
        if anatomy_encoder is None:
            anatomy_encoder = AnatomyEncoder(in_channels, base_channels, num_downsample, num_res_blocks)
        if generator is None:
            generator = StyleGenerator(
                out_channels=in_channels,
                in_channels=base_channels * 2**num_downsample,
                code_dim=code_dim,
                num_res_blocks=num_res_blocks,
                num_upsample=num_downsample,
                mlp_channels=mlp_channels,
                mlp_layers=mlp_layers,
            )
        self.anatomy_encoder = anatomy_encoder
        self.generator = generator
        self.segmenter = segmenter

    def domain_agnostic_image(self, x: torch.Tensor) -> torch.Tensor:
        """The paper's domain-agnostic image of ``x`` (Fig. 7): its anatomy rendered without a modality."""
        return self.generator(self.anatomy_encoder(x), None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.segmenter(self.domain_agnostic_image(x))
