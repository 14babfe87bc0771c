"""Test-time augmentation as an inferer: probabilities averaged over gammas and in-plane zooms.

A segmenter trained on CT and adapted to unlabelled MR is unsure of the liver's edge where MR's contrast
differs from what it learned; its errors there change with the image's gamma and scale more than its
correct voxels do. Averaging the probabilities of a few deterministic variants inside what training
augments (``RandAdjustContrastd``'s gamma, ``RandAffined``'s scale) evens them out: on CHAOS T2 it
raised Dice in every cross-validated case (``docs/README.md``, Performance). It wraps any inferer (the
bundle's ``SliceInferer``) and any network, so checkpoints and MONAI Label are untouched. MONAI's
``monai.data.TestTimeAugmentation`` answers another question: random invertible transforms of a data
dict, re-run through a dataloader per volume, for the spread of the outputs; this is a fixed handful of
variants inside the evaluator's own inference call.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, Callable

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.inferers import Inferer

from custom.networks.ensemble import ProbabilityEnsemble, log_mean_softmax

__all__ = ["TestTimeAugmentationInferer", "gamma_on_range"]


def gamma_on_range(x: torch.Tensor, gamma: float, value_range: Sequence[float] = (-1.0, 1.0)) -> torch.Tensor:
    """``x`` with gamma ``gamma`` applied on ``value_range``, whose ends stay in place (training's
    ``RandAdjustContrastd`` on an image normalized to that range)."""
    low, high = float(value_range[0]), float(value_range[1])
    unit = ((x - low) / (high - low)).clamp(0.0, 1.0)
    return unit**gamma * (high - low) + low


def _numbers(name: str, values: Sequence[float]) -> list[float]:
    """``values`` as floats; a bare number or string (``--test_time_gammas 0.8``) named as an error."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"test-time {name} must be a list of numbers, e.g. [0.8, 1.25]; got {values!r}")
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError) as e:
        raise TypeError(f"test-time {name} must be a list of numbers, e.g. [0.8, 1.25]; got {values!r}") from e


class TestTimeAugmentationInferer(Inferer):
    """``inferer``'s logits for the image, its gammas and its zooms, merged as logits whose softmax is
    the mean of their class probabilities (so ``Activationsd(softmax=True)`` then yields that mean).

    Args:
        inferer: runs ``network`` over a (B, C, *spatial) image (the bundle's ``SliceInferer``).
        gammas: gammas applied on ``value_range`` (1.0 would repeat the plain pass).
        zooms: in-plane scale factors: the image is resampled by each (bilinear, every spatial axis but
            ``slice_dim``), segmented, and its probabilities resampled back to the image's grid.
        value_range: the normalized intensity range the gammas keep in place.
        slice_dim: the spatial axis not zoomed (the 2D networks' slice axis: ``SliceInferer``'s
            ``spatial_dim``); ``None`` zooms every axis.
        ensembles: augment a :class:`ProbabilityEnsemble` too; False gives one the plain pass alone (it
            averages networks already), decided per call, so one config augments one training and not
            several, whichever network it is handed (MONAI Label hands it ``network_def``).
    """

    def __init__(
        self,
        inferer: Inferer,
        gammas: Sequence[float] = (0.8, 1.25),
        zooms: Sequence[float] = (0.9, 1.1),
        value_range: Sequence[float] = (-1.0, 1.0),
        slice_dim: int | None = 2,
        ensembles: bool = True,
    ) -> None:
        super().__init__()
        self.inferer = inferer
        self.ensembles = bool(ensembles)
        self.gammas = _numbers("gammas", gammas)
        self.zooms = _numbers("zooms", zooms)
        bad = [g for g in self.gammas if not g > 0] + [z for z in self.zooms if not z > 0]
        if bad:
            raise ValueError(f"test-time gammas and zooms must be positive, got {bad}")
        if len(value_range) != 2 or not float(value_range[1]) > float(value_range[0]):
            raise ValueError(f"value_range must be (low, high) with low < high, got {value_range}")
        self.value_range = (float(value_range[0]), float(value_range[1]))
        self.slice_dim = slice_dim

    def zoom_factors(self, spatial_dims: int, zoom: float) -> tuple[float, ...]:
        return tuple(1.0 if d == self.slice_dim else zoom for d in range(spatial_dims))

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> torch.Tensor:
        if not self.ensembles and isinstance(inspect.unwrap(network), ProbabilityEnsemble):  # through AutocastInferer
            return self.inferer(inputs, network, *args, **kwargs)
        image = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs
        spatial = image.shape[2:]
        mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(spatial)]

        def logits(x: torch.Tensor) -> torch.Tensor:
            out = self.inferer(x, network, *args, **kwargs)
            return out.as_tensor() if isinstance(out, MetaTensor) else out

        passes = [logits(image)]
        passes += [logits(gamma_on_range(image, g, self.value_range)) for g in self.gammas]
        for z in self.zooms:
            zoomed = F.interpolate(image, scale_factor=self.zoom_factors(len(spatial), z), mode=mode, align_corners=False)
            probabilities = torch.softmax(logits(zoomed).float(), dim=1)
            back = F.interpolate(probabilities, size=tuple(spatial), mode=mode, align_corners=False)
            passes.append(torch.log(back.clamp_min(1e-12)))  # softmax of log-probabilities: the probabilities
        merged = log_mean_softmax(passes)
        if isinstance(inputs, MetaTensor):
            merged = MetaTensor(merged, meta=inputs.meta, applied_operations=inputs.applied_operations)
        return merged
