"""Random appearance (intensity) augmentation, so that a segmenter trained on CT stops relying on CT's grey values.

Single-source domain generalization from CT to MR re-renders each training image with new grey
values while keeping its anatomy. Two families are implemented here, written for this bundle from
the papers' descriptions:

- :class:`RandLocationScaleIntensity` (after SLAug, Su et al., AAAI 2023): a random monotone (possibly
  inverted) Bezier curve remaps intensities, then a random scale and shift ("location-scale") is
  applied, to the whole image (global) or, given a label, separately inside and outside each class
  (class-level: organs change contrast against their neighbours, as they do between CT and MR).
- :class:`RandConvIntensity` (the global intensity non-linear augmentation of Ouyang et al., IEEE TMI
  2022): the image passes through a shallow convolutional network whose weights are drawn afresh for
  every sample, and the result is blended with the original.

Images are expected in the normalized training range (``[-1, 1]`` here) and stay in it, because the
DALACE generators render into that range and the reconstruction losses compare with it. Both come in
array and dictionary forms, as MONAI's randomizable transforms do.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.transforms import MapTransform, RandomizableTransform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_tensor

__all__ = [
    "RandConvIntensity",
    "RandConvIntensityd",
    "RandLocationScaleIntensity",
    "RandLocationScaleIntensityd",
    "bezier_curve",
]


def bezier_curve(p1: Sequence[float], p2: Sequence[float], num_points: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Points of the cubic Bezier curve from (0, 0) to (1, 1) with inner control points ``p1`` and ``p2``.

    With ``p1[0] <= p2[0]`` in [0, 1] the x coordinate never decreases along the curve, so the curve is
    a function y(x) that ``np.interp`` can evaluate.
    """
    t = np.linspace(0.0, 1.0, num_points)
    b1, b2, b3 = 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3
    x = b1 * p1[0] + b2 * p2[0] + b3
    y = b1 * p1[1] + b2 * p2[1] + b3
    return x, y


class RandLocationScaleIntensity(RandomizableTransform):
    """Random Bezier remapping and location-scale of intensities, global or per class.

    Args:
        prob: probability of augmenting a sample.
        value_range: the (min, max) the image lives in; the output is clipped to it.
        invert_prob: probability that the Bezier curve is decreasing (bright becomes dark).
        scale_range: range of the random contrast factor (applied around the mid-grey of the range).
        shift_range: range of the random shift, as a fraction of the range's width.
        class_prob: with a label given to ``__call__``, the probability that each class (background
            and every label value) gets its own curve and location-scale instead of one global one.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        prob: float = 0.5,
        value_range: Sequence[float] = (-1.0, 1.0),
        invert_prob: float = 0.5,
        scale_range: Sequence[float] = (0.7, 1.3),
        shift_range: Sequence[float] = (-0.15, 0.15),
        class_prob: float = 0.5,
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        self.low, self.high = float(value_range[0]), float(value_range[1])
        if not self.high > self.low:
            raise ValueError(f"value_range must be increasing, got {value_range}.")
        self.invert_prob = invert_prob
        self.scale_range = tuple(float(v) for v in scale_range)
        self.shift_range = tuple(float(v) for v in shift_range)
        self.class_prob = class_prob
        self._class_level = False

    def randomize(self, data=None) -> None:
        super().randomize(None)
        self._class_level = bool(self.R.rand() < self.class_prob)

    def _draw_mapping(self) -> tuple[np.ndarray, np.ndarray, float, float]:
        xs = np.sort(self.R.uniform(0.0, 1.0, 2))
        ys = self.R.uniform(0.0, 1.0, 2)
        x, y = bezier_curve((xs[0], ys[0]), (xs[1], ys[1]))
        if self.R.rand() < self.invert_prob:
            y = 1.0 - y
        scale = self.R.uniform(*self.scale_range)
        shift = self.R.uniform(*self.shift_range)
        return x, y, scale, shift

    @staticmethod
    def _apply(u: np.ndarray, mapping: tuple[np.ndarray, np.ndarray, float, float]) -> np.ndarray:
        x, y, scale, shift = mapping
        return (np.interp(u, x, y) - 0.5) * scale + 0.5 + shift

    def __call__(self, img: NdarrayOrTensor, label: NdarrayOrTensor | None = None, randomize: bool = True) -> NdarrayOrTensor:
        if randomize:
            self.randomize()
        if not self._do_transform:
            return img
        arr = convert_to_tensor(img, track_meta=False).detach().cpu().float().numpy()
        u = np.clip((arr - self.low) / (self.high - self.low), 0.0, 1.0)
        if label is not None and self._class_level:
            lab = convert_to_tensor(label, track_meta=False).cpu().numpy()
            if lab.shape[-u.ndim + 1 :] != u.shape[1:]:
                raise ValueError(f"label of spatial shape {lab.shape[1:]} does not match the image's {u.shape[1:]}.")
            lab = np.broadcast_to(lab, u.shape)
            out = np.empty_like(u)
            for value in np.unique(lab):
                inside = lab == value
                out[inside] = self._apply(u[inside], self._draw_mapping())
        else:
            out = self._apply(u, self._draw_mapping())
        out = np.clip(out, 0.0, 1.0) * (self.high - self.low) + self.low
        return convert_to_dst_type(out.astype(np.float32), img, dtype=torch.float32 if isinstance(img, torch.Tensor) else np.float32)[0]


class _RandArrayd(RandomizableTransform, MapTransform):
    """What the dictionary forms share: one random decision per sample (``prob``), the array
    transform's random state set with this one's, and every key through :meth:`_transform`."""

    def __init__(self, keys: KeysCollection, transform: RandomizableTransform, prob: float, allow_missing_keys: bool) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.transform = transform

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        super().set_random_state(seed, state)
        self.transform.set_random_state(seed, state)
        return self

    def _transform(self, d: dict, key: Hashable) -> NdarrayOrTensor:
        raise NotImplementedError

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            d[key] = self._transform(d, key)
        return d


class RandLocationScaleIntensityd(_RandArrayd):
    """Dictionary form of :class:`RandLocationScaleIntensity`; ``label_key`` enables the class-level mode."""

    backend = RandLocationScaleIntensity.backend

    def __init__(
        self,
        keys: KeysCollection,
        label_key: str | None = None,
        prob: float = 0.5,
        allow_missing_keys: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(keys, RandLocationScaleIntensity(prob=1.0, **kwargs), prob, allow_missing_keys)
        self.label_key = label_key

    def _transform(self, d: dict, key: Hashable) -> NdarrayOrTensor:
        self.transform.randomize()
        return self.transform(d[key], label=d.get(self.label_key) if self.label_key else None, randomize=False)


class RandConvIntensity(RandomizableTransform):
    """Re-render an image through a shallow random convolutional network, blended with the original.

    Each call draws new weights: ``num_layers`` convolutions of kernel size drawn from
    ``kernel_sizes``, ``channels`` intermediate channels, leaky ReLU between them; the output is
    standardised to the input's mean and standard deviation (inside the value range), mixed with the
    input by a random weight in ``mix_range``, and clipped to ``value_range``. The channels of a
    multi-channel image (neighbouring slices) go through the same network, so they keep one appearance.

    Args:
        prob: probability of augmenting a sample.
        num_layers, channels, kernel_sizes: the random network.
        mix_range: range of the weight of the re-rendered image in the blend (1: re-rendered only).
        value_range: the (min, max) the image lives in.
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        prob: float = 0.5,
        num_layers: int = 4,
        channels: int = 2,
        kernel_sizes: Sequence[int] = (1, 3),
        mix_range: Sequence[float] = (0.0, 1.0),
        value_range: Sequence[float] = (-1.0, 1.0),
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}.")
        self.num_layers, self.channels = int(num_layers), int(channels)
        self.kernel_sizes = tuple(int(k) for k in kernel_sizes)
        self.mix_range = tuple(float(v) for v in mix_range)
        self.low, self.high = float(value_range[0]), float(value_range[1])

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        if randomize:
            self.randomize(None)
        if not self._do_transform:
            return img
        x = convert_to_tensor(img, track_meta=False).detach().cpu().float()
        spatial = x.ndim - 1
        if spatial not in (2, 3):
            raise ValueError(f"RandConvIntensity expects a channel-first 2D or 3D image, got shape {tuple(x.shape)}.")
        conv = F.conv2d if spatial == 2 else F.conv3d
        h = x[:, None]  # each channel (a slice's neighbour, slice_context) through the same network
        for i in range(self.num_layers):
            k = int(self.R.choice(self.kernel_sizes))
            out_ch = 1 if i == self.num_layers - 1 else self.channels
            fan_in = h.shape[1] * k**spatial
            w = torch.from_numpy(self.R.normal(0.0, 1.0 / np.sqrt(fan_in), (out_ch, h.shape[1]) + (k,) * spatial).astype(np.float32))
            b = torch.from_numpy(self.R.normal(0.0, 0.1, out_ch).astype(np.float32))
            h = conv(h, w, b, padding=k // 2)
            if i < self.num_layers - 1:
                h = F.leaky_relu(h, 0.2)
        h = h[:, 0]
        # back to the input's statistics, so the blend changes contrast, not overall brightness
        dims = tuple(range(1, x.ndim))
        h = (h - h.mean(dims, keepdim=True)) / h.std(dims, keepdim=True).clamp_min(1e-6)
        h = h * x.std(dims, keepdim=True) + x.mean(dims, keepdim=True)
        alpha = float(self.R.uniform(*self.mix_range))
        out = (alpha * h + (1 - alpha) * x).clamp(self.low, self.high)
        return convert_to_dst_type(out, img, dtype=torch.float32 if isinstance(img, torch.Tensor) else np.float32)[0]


class RandConvIntensityd(_RandArrayd):
    """Dictionary form of :class:`RandConvIntensity`."""

    backend = RandConvIntensity.backend

    def __init__(self, keys: KeysCollection, prob: float = 0.5, allow_missing_keys: bool = False, **kwargs) -> None:
        super().__init__(keys, RandConvIntensity(prob=1.0, **kwargs), prob, allow_missing_keys)

    def _transform(self, d: dict, key: Hashable) -> NdarrayOrTensor:
        return self.transform(d[key], randomize=True)
