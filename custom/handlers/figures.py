"""Handlers that turn training into things a person can look at: loss curves and image grids."""

from __future__ import annotations

import csv
import logging
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events

__all__ = ["LossLogger", "ImageGridHandler", "save_image_grid"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


class LossLogger:
    """Epoch means of every loss term: one log line per epoch, ``losses.csv`` and ``losses.png``.

    The trainer's output is a dict of floats (each term separately); this handler averages its scalar
    entries over the epoch. The CSV is rewritten whole each epoch, so a resumed run continues the same file.

    Args:
        log_dir: folder of ``losses.csv`` and ``losses.png``.
        plot_interval: epochs between redraws of the plot.
    """

    def __init__(self, log_dir: str, plot_interval: int = 1, name: str | None = None) -> None:
        self.log_dir = Path(log_dir)
        self.plot_interval = max(int(plot_interval), 1)
        self.logger = logging.getLogger(name or "DALACE")
        self._sums: dict[str, float] = defaultdict(float)
        self._count = 0
        self.history: list[dict[str, float]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._load_history)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._accumulate)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)

    def _load_history(self, engine: Engine) -> None:
        path = self.log_dir / "losses.csv"
        if path.exists() and engine.state.epoch > 0:  # resumed: keep the epochs already done
            with open(path, newline="") as f:
                rows = [{k: float(v) for k, v in r.items() if v != ""} for r in csv.DictReader(f)]
            self.history = [r for r in rows if r.get("epoch", math.inf) <= engine.state.epoch]

    def _accumulate(self, engine: Engine) -> None:
        output = engine.state.output
        if not isinstance(output, dict):
            output = {"loss": output}
        for k, v in output.items():
            if isinstance(v, (int, float)) or (isinstance(v, torch.Tensor) and v.numel() == 1):
                self._sums[k] += float(v)  # scalars only: a supervised trainer's output also holds images
        self._count += 1

    def _epoch_completed(self, engine: Engine) -> None:
        row = {"epoch": float(engine.state.epoch)}
        row.update({k: v / max(self._count, 1) for k, v in self._sums.items()})
        self._sums.clear()
        self._count = 0
        self.history.append(row)
        terms = ", ".join(f"{k}={v:.4f}" for k, v in row.items() if k != "epoch")
        self.logger.info(f"Epoch {engine.state.epoch}/{engine.state.max_epochs}: {terms}")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        keys = sorted({k for r in self.history for k in r if k != "epoch"})
        with open(self.log_dir / "losses.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["epoch", *keys])
            writer.writeheader()
            writer.writerows(self.history)
        if keys and (engine.state.epoch % self.plot_interval == 0 or engine.state.epoch == engine.state.max_epochs):
            self.plot(keys)

    def plot(self, keys: list[str]) -> Path:
        plt = _pyplot()
        groups = sorted({k.split("/")[0] for k in keys})
        fig, axes = plt.subplots(1, len(groups), figsize=(4.5 * len(groups), 3.5), squeeze=False)
        epochs = [r["epoch"] for r in self.history]
        for ax, group in zip(axes[0], groups):
            for k in keys:
                if k.split("/")[0] == group:
                    ax.plot(epochs, [r.get(k, np.nan) for r in self.history], label=k.split("/")[-1])
            ax.set_title(group)
            ax.set_xlabel("epoch")
            ax.legend(fontsize=7)
        fig.tight_layout()
        path = self.log_dir / "losses.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path


def save_image_grid(rows: dict[str, list[np.ndarray]], path: str | Path, title: str = "") -> Path:
    """Saves named rows of 2D images (images in [-1, 1], masks in [0, 1]) as one PNG."""
    plt = _pyplot()
    ncols = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(len(rows), ncols, figsize=(2.2 * ncols, 2.2 * len(rows)), squeeze=False)
    for r, (name, images) in enumerate(rows.items()):
        for c in range(ncols):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(images):
                ax.imshow(np.rot90(images[c]), cmap="gray", vmin=-1 if images[c].min() < 0 else 0, vmax=1)
            if c == 0:
                ax.set_title(name, fontsize=8, loc="left")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


class ImageGridHandler:
    """Every ``interval`` epochs, the paper's paths on the current batch as a PNG and in TensorBoard.

    Rows: the CT and MR inputs, the CT ground truth, then every image the network's forward returns
    (for DALACE: self-reconstructions, modality swaps, re-encodings' sources, domain-agnostic images)
    and the liver probability of every segmentation it returns.

    Args:
        network: the composite being trained (DALACE or CycleGAN): ``forward(x_ct, x_mr) -> dict``.
        output_dir: ``figures/epoch_NNNN.png`` goes here (and TensorBoard events, when available).
        interval: epochs between grids.
        max_images: columns (batch items) shown.
    """

    def __init__(self, network: torch.nn.Module, output_dir: str, interval: int = 10, max_images: int = 4) -> None:
        self.network = network
        self.output_dir = Path(output_dir)
        self.interval = max(int(interval), 1)
        self.max_images = max_images
        self._writer = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)
        engine.add_event_handler(Events.COMPLETED, self._close)

    def rows(self, batch: dict) -> dict[str, list[np.ndarray]]:
        n = self.max_images
        device = next(self.network.parameters()).device
        x_ct = torch.as_tensor(batch["ct_image"][:n]).float().to(device)
        x_mr = torch.as_tensor(batch["mr_image"][:n]).float().to(device)
        n = min(len(x_ct), len(x_mr))
        x_ct, x_mr = x_ct[:n], x_mr[:n]
        was_training = self.network.training
        self.network.eval()
        with torch.no_grad():
            p = self.network(x_ct, x_mr)
        self.network.train(was_training)

        def cols(t: torch.Tensor) -> list[np.ndarray]:
            return [a[len(a) // 2] for a in t.detach().float().cpu().numpy()]  # the slice itself (slice_context)

        rows = {"CT": cols(x_ct), "CT ground truth": cols(torch.as_tensor(batch["ct_label"][:n]).float()), "MR": cols(x_mr)}
        for key, value in p.items():
            if value.ndim != 4 or value.shape[-2:] != x_ct.shape[-2:]:
                continue  # codes, not images
            if key.startswith("seg"):
                rows[f"{key} liver probability"] = cols(value.float().softmax(1)[:, 1:2])
            elif value.shape[1] == x_ct.shape[1]:
                rows[key] = cols(value)
        return rows

    def __call__(self, engine: Engine) -> None:
        rows = self.rows(engine.state.batch)
        epoch = engine.state.epoch
        save_image_grid(rows, self.output_dir / "figures" / f"epoch_{epoch:04d}.png", title=f"epoch {epoch}")
        writer = self._tensorboard()
        if writer is not None:
            for name, images in rows.items():
                grid = np.concatenate([np.rot90(i) for i in images], axis=1)
                lo = -1.0 if grid.min() < 0 else 0.0
                writer.add_image(f"images/{name}", (grid[None] - lo) / (1.0 - lo), epoch)
            writer.flush()

    def _tensorboard(self):
        if self._writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional for this handler
                return None
            self._writer = SummaryWriter(log_dir=str(self.output_dir))
        return self._writer

    def _close(self, engine: Engine) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
