"""Every inference input checked before the first case, as training checks its datalist.

Without it a corrupt file stops a whole folder from inside a DataLoader worker, unnamed, after the
cases before it; a 2D or multi-channel image fails deep in the inferer; NaN voxels give an empty mask;
and a volume whose resampled grid is enormous runs until it is killed. :class:`InputCheck` reads
every input before the first case (:func:`custom.data.read_image`, the training's check), reports
every unusable one at once by name and cause, lets the good ones be segmented, and, attached to the
evaluator as a handler, ends the run with a summary line and an error when any input was skipped.
:func:`require_file` and :func:`require_writable_dir` fail before any compute when the weights are
missing or the output folder cannot be written.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Mapping, Sequence

import nibabel as nib
import numpy as np
from ignite.engine import Engine, Events
from monai.data.utils import AFFINE_TOL

from custom.data import read_image

__all__ = [
    "InputCheck",
    "InputError",
    "refuse_unused_terms",
    "require_booleans",
    "require_file",
    "require_writable_dir",
    "resampled_voxels",
]


class InputError(ValueError):
    """Unusable inference inputs. ``problems`` lists each as ``"<file>: <what>"``; the first line of the
    message is the problem itself when there is one, else a header (a count or a summary) above them."""

    def __init__(self, problems: Sequence[str], header: str | None = None) -> None:
        self.problems = list(problems)
        if header is None and len(self.problems) == 1:
            super().__init__(self.problems[0])
            return
        header = header or f"{len(self.problems)} unusable inference inputs"
        super().__init__(header + ":\n" + "\n".join(f"  - {p}" for p in self.problems))


def resampled_voxels(
    shape: Sequence[int], affine: np.ndarray, pixdim: Sequence[float], max_pixdim: Sequence[float] | None = None
) -> int:
    """Voxels of a volume of ``shape`` and voxel-to-RAS ``affine`` after RAS orientation and resampling
    to ``pixdim`` (per RAS axis; 0 keeps that axis' own spacing), as ``Orientationd`` + ``Spacingd`` do;
    with ``max_pixdim``, an axis whose own spacing lies between ``pixdim`` and ``max_pixdim`` is kept,
    as ``Spacingd(max_pixdim=...)`` keeps it."""
    affine = np.asarray(affine, dtype=np.float64)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    ras_axis = nib.orientations.io_orientation(affine)[:, 0]  # the RAS axis of each stored axis
    count = 1
    for n, s, axis in zip(shape, spacing, ras_axis):
        target = float(pixdim[int(axis)]) if not np.isnan(axis) else 0.0
        upper = target if max_pixdim is None or np.isnan(axis) else max(float(max_pixdim[int(axis)]), target)
        kept = target <= 0 or target - AFFINE_TOL <= s <= upper + AFFINE_TOL
        count *= n if kept else int(np.round((n - 1) * s / target)) + 1  # between voxel centres, as MONAI
    return int(count)


class InputCheck:
    """Checks inference inputs before any compute and reports how many were segmented.

    ``check(items)`` reads every file of every item (``keys``: the image, and the label where an
    evaluation has one): it exists and reads, is 3D or single-channel 4D, has only finite values, and
    its resampled grid has at most ``max_voxels`` voxels (memory and time). Every unusable item is
    logged at once by file and cause and left out; with none usable it raises :class:`InputError`.
    An image without a usable intensity range (constant, e.g. all zero; nothing between the MR
    percentiles; no voxel inside the CT window) is segmented with a warning: its mask is meaningless.

    Attached to the evaluator (``handlers``), it logs a summary line when the run completes and then
    raises :class:`InputError` if any input was skipped, so that the run exits non-zero.

    Args:
        pixdim: the spacing the preprocessing resamples to, per RAS axis (0 keeps the axis' own).
        max_pixdim: the preprocessing's ``max_pixdim`` (own spacings up to it are kept), or None.
        max_voxels: the largest resampled grid accepted, in voxels.
        percentiles: the MR normalization's percentiles (``mr_percentiles``), or None.
        window: the CT normalization's window (``ct_window``), or None.
        keys: the item keys that name files to check (absent ones are skipped).
    """

    def __init__(
        self,
        pixdim: Sequence[float],
        max_pixdim: Sequence[float] | None = None,
        max_voxels: float = 5e7,
        percentiles: Sequence[float] | None = None,
        window: Sequence[float] | None = None,
        keys: Sequence[str] = ("image", "label"),
        name: str | None = None,
    ) -> None:
        self.pixdim = [float(p) for p in pixdim]
        self.max_pixdim = None if max_pixdim is None else [float(p) for p in max_pixdim]
        self.max_voxels = int(max_voxels)
        self.percentiles = percentiles
        self.window = window
        self.keys = tuple(keys)
        self.logger = logging.getLogger(name or __name__)
        self.total = 0
        self.problems: list[str] = []  # of the skipped items, "<file>: <what>"
        self.skipped: list[str] = []  # their images

    def check(self, items: Sequence[Mapping]) -> list[dict]:
        """The usable items of ``items``; every unusable one is logged with its cause and recorded."""
        self.total, self.problems, self.skipped = len(items), [], []
        self.logger.info(f"checking {len(items)} inference input{'s' if len(items) != 1 else ''}")
        good = []
        for item in items:
            problems: list[str] = []
            for key in self.keys:
                if isinstance(item.get(key), str):
                    self._check_file(item[key], key == "image", problems)
            if problems:
                self.problems += problems
                self.skipped.append(str(item.get("image")))
            else:
                good.append(dict(item))
        if not good:
            raise InputError(self.problems, header=None if len(self.problems) == 1 else "no usable inference input")
        if self.skipped:
            self.logger.error(str(InputError(self.problems, header=f"skipping {len(self.skipped)} unusable inference inputs")))
        return good

    def _check_file(self, path: str, is_image: bool, problems: list[str]) -> None:
        img = read_image(path, problems, single_channel=True)
        if img is None or not is_image:
            return
        voxels = resampled_voxels(img.shape, img.affine, self.pixdim, self.max_pixdim)
        if voxels > self.max_voxels:
            problems.append(
                f"{path}: {voxels:,} voxels after resampling {tuple(img.shape)} to {self.pixdim} mm, more than "
                f"max_voxels={self.max_voxels:,} (raise max_voxels if the memory allows, or crop the volume)"
            )
            return
        reason = self._no_intensity_range(img.numpy())
        if reason:
            self.logger.warning(f"{path}: no usable intensity range ({reason}); its mask will be meaningless")

    def _no_intensity_range(self, arr: np.ndarray) -> str:
        values = arr.ravel()[:: max(1, math.ceil(arr.size / 4_000_000))]  # a subsample bounds the cost
        lo, hi = float(values.min()), float(values.max())
        if lo == hi:
            return f"every voxel is {lo:g}"
        if self.percentiles is not None:
            p_lo, p_hi = np.percentile(values, list(self.percentiles))
            if p_hi <= p_lo:
                return f"the {self.percentiles[0]:g} and {self.percentiles[1]:g} percentiles are both {p_lo:g}"
        if self.window is not None and not np.any((values > self.window[0]) & (values < self.window[1])):
            return f"no voxel inside the window {list(self.window)}, values {lo:g} to {hi:g}"
        return ""

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def completed(self, engine: Engine) -> None:
        """The summary line; an :class:`InputError` (a non-zero exit) if any input was skipped."""
        summary = f"segmented {self.total - len(self.skipped)} of {self.total} inference inputs"
        if not self.skipped:
            self.logger.info(summary)
            return
        raise InputError(self.problems, header=f"{summary}; {len(self.skipped)} skipped as unusable")


def require_file(path: str | os.PathLike, what: str = "model checkpoint", hint: str = "") -> str:
    """``path`` if it is a file, else a ``FileNotFoundError`` naming it (and ``hint``: how to get it)."""
    if not os.path.isfile(path):
        msg = f"{what} not found: {os.path.abspath(path)!r}."
        raise FileNotFoundError(f"{msg} {hint}".strip())
    return str(path)


def require_writable_dir(path: str | os.PathLike, what: str = "output_dir") -> str:
    """``path``, created if needed, after a test write; else an ``OSError`` naming it and the cause, so
    that an output that cannot be written fails before the inference rather than after it."""
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write_test.", dir=path)
        try:
            os.write(fd, b"0")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        raise OSError(f"{what} {os.path.abspath(path)!r} cannot be created or written: {e.strerror or e}") from e
    return str(path)


def refuse_unused_terms(run_name: str, **weights: float) -> None:
    """A ``ValueError`` naming every loss weight that is set but that ``run_name``'s trainer never uses.

    Why: the baselines (unet_ct.yaml, unet_mr.yaml, cyclegan.yaml, tdgan.yaml) replace DALACE's trainer,
    so DALACE's own terms given to them (``--mr_consistency 1.0``) would train a plain baseline without
    a word, and its figures would be read as the term's.
    """
    unused = [f"{k}={v!r}" for k, v in weights.items() if v]
    if unused:
        raise ValueError(
            f"run {run_name!r} does not train DALACE, so these terms would be ignored: " + ", ".join(unused)
            + ". Set them to 0 for this run, or train DALACE (train.yaml without the baseline's config)."
        )


def require_booleans(**switches) -> None:
    """A ``TypeError`` naming every switch that is not ``True``/``False``.

    Why: the bundle's command line (fire) reads ``--resume false`` as the string ``"false"``, which a
    config expression takes as true: N4 would run, a run would resume, without a word.
    """
    wrong = [f"{k}={v!r} ({type(v).__name__})" for k, v in switches.items() if not isinstance(v, bool)]
    if wrong:
        raise TypeError(
            "these switches must be True or False: " + ", ".join(wrong)
            + ". On the command line write them as Python literals, e.g. --resume True / --bias_correction False."
        )
