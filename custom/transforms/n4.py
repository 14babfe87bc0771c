"""N4 bias-field correction for MR (Tustison et al., IEEE TMI 2010) as MONAI transforms.

MR intensities drift smoothly across the field of view (coil sensitivity); the paper corrects MR
for it before training. ITK's N4 is fitted on a shrunk copy of the volume so that it runs in
seconds, and its B-spline log bias field is then evaluated at every full-resolution voxel and
divided out, so no detail of the image is lost to the shrinking.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type, ensure_tuple_rep, optional_import
from scipy import ndimage
from skimage.filters import threshold_otsu

itk, _ = optional_import("itk")

__all__ = ["N4BiasFieldCorrection", "N4BiasFieldCorrectiond"]


class N4BiasFieldCorrection(Transform):
    """Divide a channel-first image by the smooth multiplicative bias field N4 estimates.

    Args:
        shrink_factor: the fit runs on the image subsampled by this factor per spatial axis (an axis
            is never shrunk below ``min_shrunk_size`` voxels, so thick-slice MR keeps its slices).
        num_iterations: maximum iterations per fitting level (one value for all levels or one per level).
        num_fitting_levels: B-spline refinement levels; the control grid doubles at each level.
        num_control_points: control points per axis at the first level (at least spline order + 1).
        convergence_threshold, spline_order, wiener_filter_noise, bias_field_fwhm, num_histogram_bins:
            passed to ``itk.N4BiasFieldCorrectionImageFilter``.
        min_shrunk_size: see ``shrink_factor``.
        otsu: without an explicit mask, fit only on voxels above Otsu's threshold of the log intensities
            (the body), so air does not dilute the intensity histogram that N4 sharpens.

    N4 works on log intensities: an image with non-positive values is shifted to be positive for the
    fit and shifted back afterwards, so background values stay where they were.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        shrink_factor: int | Sequence[int] = 4,
        num_iterations: int | Sequence[int] = 50,
        num_fitting_levels: int = 4,
        num_control_points: int = 4,
        convergence_threshold: float = 1e-3,
        spline_order: int = 3,
        wiener_filter_noise: float = 0.01,
        bias_field_fwhm: float = 0.15,
        num_histogram_bins: int = 200,
        min_shrunk_size: int = 8,
        otsu: bool = True,
    ) -> None:
        self.shrink_factor = shrink_factor
        iters = [int(i) for i in ensure_tuple_rep(num_iterations, num_fitting_levels)]
        if len(iters) != num_fitting_levels:
            raise ValueError(f"num_iterations has {len(iters)} values for {num_fitting_levels} fitting levels.")
        if num_control_points < spline_order + 1:
            raise ValueError("num_control_points must be at least spline_order + 1.")
        self.num_iterations = iters
        self.num_fitting_levels = num_fitting_levels
        self.num_control_points = num_control_points
        self.convergence_threshold = convergence_threshold
        self.spline_order = spline_order
        self.wiener_filter_noise = wiener_filter_noise
        self.bias_field_fwhm = bias_field_fwhm
        self.num_histogram_bins = num_histogram_bins
        self.min_shrunk_size = min_shrunk_size
        self.otsu = otsu

    def __call__(self, img: torch.Tensor | np.ndarray, mask: torch.Tensor | np.ndarray | None = None):
        """``img``: (C, spatial...), each channel corrected on its own; ``mask``: (1 or C, spatial...) or None."""
        arr = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
        spacing = np.ones(arr.ndim - 1)
        if isinstance(img, MetaTensor):
            spacing = np.asarray(img.pixdim, dtype=np.float64)[: arr.ndim - 1]
        mask_arr = None
        if mask is not None:
            mask_arr = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
            mask_arr = mask_arr > 0
        out = np.empty(arr.shape, dtype=np.float32)
        for c in range(arr.shape[0]):
            m = None if mask_arr is None else mask_arr[min(c, mask_arr.shape[0] - 1)]
            out[c] = self._correct(arr[c].astype(np.float32), m, spacing)
        return convert_to_dst_type(out, img, dtype=torch.float32 if isinstance(img, torch.Tensor) else np.float32)[0]

    def log_bias_field(self, image: np.ndarray, mask: np.ndarray | None, spacing: Sequence[float]) -> np.ndarray:
        """The estimated log bias field of a positive, channel-less ``image``, at its full resolution."""
        shrink = self._shrink_factors(image.shape)
        sub = tuple(slice(None, None, s) for s in shrink)
        small = np.ascontiguousarray(image[sub], dtype=np.float32)
        small_mask = np.ascontiguousarray(mask[sub], dtype=np.uint8)

        itk_image = itk.image_from_array(small.T.copy())  # itk arrays are (z, y, x)
        itk_image.SetSpacing([float(sp * s) for sp, s in zip(spacing, shrink)])
        itk_mask = itk.image_from_array(small_mask.T.copy())
        itk_mask.CopyInformation(itk_image)

        n4 = itk.N4BiasFieldCorrectionImageFilter[type(itk_image), type(itk_mask), type(itk_image)].New()
        n4.SetInput(itk_image)
        n4.SetMaskImage(itk_mask)
        n4.SetMaskLabel(1)
        n4.SetMaximumNumberOfIterations(self.num_iterations)
        n4.SetNumberOfFittingLevels(self.num_fitting_levels)
        n4.SetNumberOfControlPoints(self.num_control_points)
        n4.SetConvergenceThreshold(self.convergence_threshold)
        n4.SetSplineOrder(self.spline_order)
        n4.SetWienerFilterNoise(self.wiener_filter_noise)
        n4.SetBiasFieldFullWidthAtHalfMaximum(self.bias_field_fwhm)
        n4.SetNumberOfHistogramBins(self.num_histogram_bins)
        n4.Update()
        lattice = self._lattice_array(n4.GetLogBiasFieldControlPointLattice())
        return self._evaluate_lattice(lattice, image.shape, small.shape, shrink)

    @staticmethod
    def _lattice_array(lattice) -> np.ndarray:
        """The control-point image (vector pixels, which itk's numpy bridge lacks) as an (x, y, z) array."""
        size = tuple(int(n) for n in lattice.GetLargestPossibleRegion().GetSize())
        out = np.empty(size, dtype=np.float64)
        for idx in np.ndindex(*size):
            out[idx] = lattice.GetPixel([int(i) for i in idx])[0]
        return out

    def _evaluate_lattice(self, lattice, full_shape, small_shape, shrink) -> np.ndarray:
        """Evaluate the B-spline control lattice at full-resolution voxels.

        ITK's lattice spans the shrunk image's physical extent, from its first to its last voxel centre,
        with ``n - order`` spline spans; ``scipy.ndimage.map_coordinates`` with ``prefilter=False``
        evaluates a uniform B-spline from its coefficients, on which the parametric origin sits at
        index ``(order - 1) / 2`` (1 for cubic splines).
        """
        coords = []
        for axis, n in enumerate(full_shape):
            spans = lattice.shape[axis] - self.spline_order
            extent = max((small_shape[axis] - 1) * shrink[axis], 1)
            u = np.clip(np.arange(n, dtype=np.float64) / extent, 0.0, 1.0) * spans
            coords.append(u + (self.spline_order - 1) / 2.0)
        field = np.empty(full_shape, dtype=np.float32)
        # one axial plane at a time keeps the coordinate arrays small
        grid = np.meshgrid(*coords[:-1], indexing="ij")
        for k, zc in enumerate(coords[-1]):
            pts = [g.ravel() for g in grid] + [np.full(grid[0].size, zc)]
            field[..., k] = ndimage.map_coordinates(
                lattice, pts, order=self.spline_order, prefilter=False, mode="nearest"
            ).reshape(grid[0].shape)
        return field

    def _shrink_factors(self, shape: Sequence[int]) -> list[int]:
        factors = ensure_tuple_rep(self.shrink_factor, len(shape))
        return [max(1, min(int(f), int(n) // self.min_shrunk_size)) for f, n in zip(factors, shape)]

    def _correct(self, image: np.ndarray, mask: np.ndarray | None, spacing) -> np.ndarray:
        finite = np.isfinite(image)
        if not finite.any():
            return image
        lo, hi = float(image[finite].min()), float(image[finite].max())
        shift = 0.0
        if lo <= 0:  # N4 takes logarithms: fit on a positive copy
            shift = -lo + max(1e-3 * (hi - lo), 1e-6)
        positive = np.where(finite, image + shift, 1.0).astype(np.float32)
        if mask is None:
            mask = finite
            if self.otsu:  # on log intensities: on linear ones, dark organs (T1 liver) fall below it
                log_img = np.log(positive)
                mask = finite & (log_img > threshold_otsu(log_img[finite], nbins=256))
        mask = mask & finite
        if mask.sum() < 2 ** image.ndim * 8:
            return image  # nothing to fit on: leave the image as it is
        log_field = self.log_bias_field(positive, mask, spacing)
        return (positive / np.exp(log_field) - shift).astype(np.float32)


class N4BiasFieldCorrectiond(MapTransform):
    """Dictionary wrapper of :class:`N4BiasFieldCorrection`; keeps each MetaTensor's metadata and affine.

    Args:
        keys: images to correct.
        mask_key: optional key of a foreground mask (nonzero = fit here); by default Otsu's mask.
        kwargs: see :class:`N4BiasFieldCorrection`.

    The correction is not invertible and records no applied operation, so ``Invertd`` passes over it.
    It is deterministic: put it before the first random transform so that MONAI's cache datasets run
    it once per volume.
    """

    def __init__(
        self,
        keys: KeysCollection,
        mask_key: str | None = None,
        shrink_factor: int | Sequence[int] = 4,
        num_iterations: int | Sequence[int] = 50,
        num_fitting_levels: int = 4,
        num_control_points: int = 4,
        convergence_threshold: float = 1e-3,
        spline_order: int = 3,
        wiener_filter_noise: float = 0.01,
        bias_field_fwhm: float = 0.15,
        num_histogram_bins: int = 200,
        min_shrunk_size: int = 8,
        otsu: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mask_key = mask_key
        self.corrector = N4BiasFieldCorrection(
            shrink_factor=shrink_factor,
            num_iterations=num_iterations,
            num_fitting_levels=num_fitting_levels,
            num_control_points=num_control_points,
            convergence_threshold=convergence_threshold,
            spline_order=spline_order,
            wiener_filter_noise=wiener_filter_noise,
            bias_field_fwhm=bias_field_fwhm,
            num_histogram_bins=num_histogram_bins,
            min_shrunk_size=min_shrunk_size,
            otsu=otsu,
        )

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        mask = d[self.mask_key] if self.mask_key is not None else None
        for key in self.key_iterator(d):
            d[key] = self.corrector(d[key], mask)
        return d
