"""Evaluation handlers: surface distances in millimetres, and MONAI's metrics report plus per-case and mean (std) tables.

- :class:`SpacingMetricHandler`: MONAI's ``HausdorffDistance`` and ``SurfaceDistance`` handlers call
  their metric without the voxel spacing, so distances come out in voxels. This handler gives the
  metric each case's spacing, read from the affine of the case (its ground truth, else its
  prediction), so HD95 and ASD are in mm on whatever grid the case was evaluated on.
- :class:`MetricsReport`: MONAI's ``MetricsSaver`` plus a CSV of every case's metrics side by side
  (by case id) and a ``mean (std)`` summary in Markdown, as in the paper's tables.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Sequence

import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.metrics.metric import reinit__is_reduced
from monai.data import MetaTensor, decollate_batch
from monai.data.utils import affine_to_spacing
from monai.handlers import IgniteMetricHandler, MetricsSaver
from monai.metrics import CumulativeIterationMetric
from monai.utils import ImageMetaKey

from custom.data.inputs import case_name

__all__ = ["MetricsReport", "SpacingMetricHandler", "voxel_spacing"]


def voxel_spacing(*tensors: torch.Tensor, spatial_dims: int = 3, index: int = 0) -> list[float] | None:
    """Voxel size (mm per spatial axis) from the affine of the first MetaTensor given.

    ``index`` picks the case of a batched affine (B, 4, 4).
    """
    for t in tensors:
        if isinstance(t, MetaTensor):
            affine = t.affine
            if affine.ndim == 3:
                affine = affine[min(index, affine.shape[0] - 1)]
            return [float(s) for s in affine_to_spacing(affine, r=spatial_dims, suppress_zeros=True)]
    return None


class SpacingMetricHandler(IgniteMetricHandler):
    """Any MONAI ``CumulativeIterationMetric`` as an ignite metric, called per case with its spacing.

    Args:
        metric_fn: e.g. ``HausdorffDistanceMetric(include_background=False, percentile=95)`` or
            ``SurfaceDistanceMetric(include_background=False, symmetric=True)``.
        output_transform: engine output -> ``(y_pred, y)``, one-hot, batch-first or lists of cases
            (``monai.handlers.from_engine(['pred', 'label'])``).
        save_details: keep every case's value in ``engine.state.metric_details[name]`` (for
            ``MetricsSaver`` and :class:`MetricsReport`).
        spacing: a fixed spacing for all cases instead of the one of each case's affine.
    """

    def __init__(
        self,
        metric_fn: CumulativeIterationMetric,
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
        spacing: Sequence[float] | float | None = None,
    ) -> None:
        super().__init__(metric_fn=metric_fn, output_transform=output_transform, save_details=save_details)
        self.spacing = spacing

    @reinit__is_reduced
    def update(self, output: Sequence) -> None:
        if len(output) != 2:
            raise ValueError(f"output must have length 2 (y_pred, y), got {len(output)}.")
        y_pred, y = output
        if isinstance(y_pred, (list, tuple)):  # cases, channel-first
            for p, t in zip(y_pred, y):
                spacing = self.spacing if self.spacing is not None else voxel_spacing(t, p, spatial_dims=p.ndim - 1)
                self.metric_fn([p], [t], spacing=spacing)
            return
        for i in range(y_pred.shape[0]):  # a batch (ignite hands over each case as a batch of one)
            spacing = self.spacing
            if spacing is None:
                spacing = voxel_spacing(y, y_pred, spatial_dims=y_pred.ndim - 2, index=i)
            self.metric_fn(y_pred[i : i + 1], y[i : i + 1], spacing=spacing)


class MetricsReport(MetricsSaver):
    """MONAI's ``MetricsSaver`` plus what it lacks: every case's metrics side by side under the case's
    id, and a ``mean (std)`` summary in Markdown, as in the paper's tables.

    MetricsSaver writes ``metrics.csv``, ``<metric>_raw.csv`` (per case, by file name) and
    ``<metric>_summary.csv`` (``summary_ops`` over cases); this handler adds, when the evaluation ends,
    ``<prefix>_per_case.csv`` (``case`` id, ``image`` file and one column per metric, per class when a
    metric has several, at full precision) and ``<prefix>_summary.md``: mean and standard deviation over
    cases (population std, non-finite cases left out and counted), formatted ``0.847 (0.041)``. The
    per-case values are those that metric handlers with ``save_details=True`` leave in
    ``engine.state.metric_details``.

    Args:
        save_dir: output folder.
        metrics: names of the metrics to report, in this order (default: all with details).
        case_key: the data key whose meta holds the case's file name.
        id_key: the data key of a case id (the datalist's ``id``); the file name stands in without it.
        prefix: file name prefix.
        decimals: digits of the Markdown summary.
        summary_ops: MetricsSaver's summary operations (``<metric>_summary.csv``).
    """

    def __init__(
        self,
        save_dir: str,
        metrics: Sequence[str] | None = None,
        case_key: str = "image",
        id_key: str | None = "id",
        prefix: str = "metrics",
        decimals: int = 3,
        summary_ops: str | Sequence[str] | None = ("mean", "std", "median", "min", "max", "notnans"),
    ) -> None:
        names = list(metrics) if metrics is not None else "*"
        super().__init__(save_dir, metrics=names, metric_details=names, batch_transform=self._metas, summary_ops=summary_ops)
        self.report_metrics = list(metrics) if metrics is not None else None
        self.case_key = case_key
        self.id_key = id_key
        self.prefix = prefix
        self.decimals = decimals
        self._cases: list[tuple[str, str]] = []  # (id, image file)

    def attach(self, engine: Engine) -> None:
        super().attach(engine)
        engine.add_event_handler(Events.EPOCH_STARTED, lambda e: self._cases.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)

    @staticmethod
    def _items(batch) -> list:
        return list(batch) if isinstance(batch, (list, tuple)) else decollate_batch(batch)

    def _meta(self, d) -> dict:
        if not isinstance(d, dict):
            return {}
        img = d.get(self.case_key)
        return img.meta if isinstance(img, MetaTensor) else d.get(f"{self.case_key}_meta_dict") or {}

    def _metas(self, batch) -> list[dict]:
        return [self._meta(d) for d in self._items(batch)]

    def _collect(self, engine: Engine) -> None:
        for d in self._items(engine.state.batch):
            path = str(self._meta(d).get(ImageMetaKey.FILENAME_OR_OBJ, len(self._cases)))
            case_id = d.get(self.id_key) if self.id_key and isinstance(d, dict) else None
            self._cases.append((str(case_id) if case_id not in (None, "") else case_name(path), path))

    def __call__(self, engine: Engine) -> None:
        super().__call__(engine)  # MetricsSaver's files
        details = getattr(engine.state, "metric_details", {}) or {}
        names = self.report_metrics if self.report_metrics is not None else list(details)
        columns: dict[str, np.ndarray] = {}
        for name in names:
            if name not in details:
                raise KeyError(f"metric {name!r} has no per-case details (save_details=True?); have {sorted(details)}.")
            values = details[name]
            values = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
            values = values.reshape(values.shape[0], -1).astype(np.float64)
            if values.shape[1] == 1:
                columns[name] = values[:, 0]
            else:
                for c in range(values.shape[1]):
                    columns[f"{name}_{c}"] = values[:, c]
        n = len(next(iter(columns.values()))) if columns else 0
        cases = self._cases[-n:] if n else []
        os.makedirs(self.save_dir, exist_ok=True)

        with open(os.path.join(self.save_dir, f"{self.prefix}_per_case.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["case", "image", *columns])
            for i in range(n):
                w.writerow([*cases[i], *(repr(float(v[i])) for v in columns.values())])

        d = self.decimals
        with open(os.path.join(self.save_dir, f"{self.prefix}_summary.md"), "w") as f:
            f.write("| metric | mean (std) | cases |\n| --- | --- | --- |\n")
            for name, v in columns.items():
                ok = v[np.isfinite(v)]
                mean, std = (float(np.mean(ok)), float(np.std(ok))) if ok.size else (float("nan"), float("nan"))
                bad = int(v.size - ok.size)
                f.write(f"| {name} | {mean:.{d}f} ({std:.{d}f}) | {ok.size}{f' (+{bad} NaN)' if bad else ''} |\n")
