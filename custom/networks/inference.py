"""The inference network: one image slice in, segmentation logits out (what ``models/model.pt`` holds)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from .ensemble import log_mean_softmax
from .translator import AnatomyTranslator

__all__ = ["DomainAgnosticSegmenter", "merge_paths"]


class DomainAgnosticSegmenter(AnatomyTranslator):
    """Image -> anatomy encoder -> domain-agnostic image -> segmenter -> logits.

    This is DALACE at test time for one modality: the modality encoder is not needed, because the
    segmenter only ever sees domain-agnostic images. The module is one tensor in, one tensor out and
    scripts with TorchScript, so MONAI's ``ckpt_export`` and ``verify_net_in_out`` accept it.

    With ``extra_paths`` (beyond the paper) the image also goes through other modalities' anatomy
    encoders and generators, and the segmenter's class probabilities are averaged over all paths;
    the output is then their logarithm (logits whose softmax is the average). Every anatomy encoder
    of DALACE maps its modality to the same domain-agnostic image, and CT's, trained on labelled,
    appearance-augmented slices, reads MR nearly as well as MR's own: the two err on different
    voxels, and their average beats either (docs/README.md, Table A).

    Build it either from hyperparameters (as ``network_def`` in ``inference.yaml`` does) or around the
    parts of a trained network (``DALACE.inference_network``, ``CycleGAN.inference_network``); the
    state_dict keys are the same: ``anatomy_encoder.*``, ``generator.*``, ``segmenter.*``, and
    ``extra_paths.<modality>.anatomy_encoder.*`` / ``.generator.*`` for each extra path.

    Args:
        segmenter: the U-Net, (B, in_channels, H, W) -> (B, num_classes, H, W) logits.
        extra_paths: names of the other paths to build from the sizes, or a mapping from name to an
            existing translator (an :class:`~custom.networks.AnatomyTranslator`) to wrap.
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
        extra_paths: Sequence[str] | Mapping[str, nn.Module] = (),
    ) -> None:
        sizes = (in_channels, base_channels, num_downsample, num_res_blocks, code_dim, mlp_channels, mlp_layers)
        super().__init__(*sizes, anatomy_encoder=anatomy_encoder, generator=generator)
        self.segmenter = segmenter
        if isinstance(extra_paths, str):
            raise TypeError(f"extra_paths must be a list of names, got the string {extra_paths!r}.")
        if not isinstance(extra_paths, Mapping):
            extra_paths = {name: AnatomyTranslator(*sizes) for name in extra_paths}
        self.extra_paths = nn.ModuleDict(dict(extra_paths))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.extra_paths) == 0:
            return self.segmenter(self.domain_agnostic_image(x))
        images = [self.domain_agnostic_image(x)]
        for path in self.extra_paths.values():
            images.append(path(x))
        return log_mean_softmax(list(torch.chunk(self.segmenter(torch.cat(images)), len(images), dim=0)))


def merge_paths(main: Mapping[str, torch.Tensor], extra: Mapping[str, Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The state_dict of a :class:`DomainAgnosticSegmenter` with ``extra_paths`` from single-path ones.

    ``main`` is the state_dict of the path whose name the result keeps (``model.pt``), ``extra`` maps
    each extra path's name to its single-path state_dict (``{"ct": model_ct.pt}``). One segmenter
    serves every path, so the segmenters must be equal (they are, for the two files of one training).
    """
    merged = {k: v for k, v in main.items() if not k.startswith("extra_paths.")}
    segmenter = {k: v for k, v in main.items() if k.startswith("segmenter.")}
    for name, state in extra.items():
        other = {k: v for k, v in state.items() if k.startswith("segmenter.")}
        if other.keys() != segmenter.keys() or any(not torch.equal(v, other[k]) for k, v in segmenter.items()):
            raise ValueError(
                f"path {name!r} has another segmenter than the main path: only the two inference networks "
                "of one training (model.pt and model_ct.pt) can be merged."
            )
        parts = {k: v for k, v in state.items() if k.startswith(("anatomy_encoder.", "generator."))}
        if not parts:
            raise ValueError(f"path {name!r} has no anatomy_encoder.* / generator.* weights.")
        merged.update({f"extra_paths.{name}.{k}": v for k, v in parts.items()})
    return merged
