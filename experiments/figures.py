"""The paper's qualitative figures from an experiment folder (``python -m experiments figures DIR``).

- Fig. 6-like ``fig6_predictions.png``: MR slices (one row per example case), the ground truth and
  each method's prediction outlined on the slice; the predictions are the evaluation's own outputs
  (``<case>_seg.nii.gz`` on the input grid), so the figure shows exactly what the table scored.
- Fig. 7-like ``fig7_domain_agnostic.png``: a CT slice and an MR slice of every MR domain (top row)
  above their domain-agnostic images (bottom row), ``DALACE.domain_agnostic_image``.
- Fig. 8-like ``fig8_modality_transfer.png``: for every MR domain, an MR reference slice, a CT slice,
  and the CT's anatomy code rendered with the MR slice's modality code, ``DALACE.decode(
  DALACE.encode(ct, "ct")[0], DALACE.encode(mr, "mr")[1], "mr")``.

Figures 7 and 8 use the full DALACE network of a run's last checkpoint (``checkpoint_epoch=N.pt``,
key ``network``). Slices are axial, in radiological view (patient's right on the left, anterior up),
through the largest liver cross-section of the ground truth.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from .runner import load_trained_network, run_config

log = logging.getLogger("experiments")

__all__ = ["make_figures", "fig6_predictions", "fig7_domain_agnostic", "fig8_modality_transfer"]

METHOD_LABELS = {
    "unet_ct": "U-Net w/o DA",
    "unet_mr": "U-Net on MR (upper)",
    "cyclegan": "CycleGAN",
    "tdgan": "TD-GAN",
    "dadr": "DADR",
    "no_dam": "DALACE w/o DAM",
    "dalace": "DALACE",
}
FIG6_METHODS = ("unet_ct", "cyclegan", "tdgan", "dadr", "dalace")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _view(a: np.ndarray) -> np.ndarray:
    """An axial RAS slice (x, y) for imshow: patient's right on the left, anterior up."""
    return np.asarray(a)[::-1, ::-1].T


def _window(img: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(img, [1, 99.5])
    return float(lo), float(hi if hi > lo else lo + 1)


def _load_ras(paths: dict) -> dict:
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Orientationd

    keys = list(paths)
    t = Compose([LoadImaged(keys, image_only=True), EnsureChannelFirstd(keys), Orientationd(keys, axcodes="RAS", labels=None)])
    out = t(dict(paths))
    return {k: np.asarray(out[k][0]) for k in keys} | {"pixdim": np.asarray(out[keys[0]].pixdim)[:3]}


def _best_slice(label: np.ndarray) -> int:
    area = (label > 0).reshape(-1, label.shape[-1]).sum(0)
    return int(np.argmax(area))


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=fig.dpi)
    _plt().close(fig)
    return path


# -------------------------------------------------------------------------------------- Fig. 6
def fig6_predictions(root: str | Path, task: str = "da", num_cases: int = 2, out: str | Path | None = None) -> Path:
    root = Path(root)
    results = json.loads((root / "results.json").read_text())
    cells = [c for c in results["cells"] if c["task"] == task and c["test"] == "mr" and c.get("eval_dir")]
    by_method: dict[str, dict[str, Path]] = {}  # method -> case -> eval dir
    for c in cells:
        for case in c.get("cases", []):
            by_method.setdefault(c["method"], {})[case["case"]] = root / c["eval_dir"]
    methods = [m for m in FIG6_METHODS if m in by_method] + [m for m in by_method if m not in FIG6_METHODS]
    if not methods:
        raise FileNotFoundError(f"no evaluated MR predictions of task {task!r} in {root / 'results.json'}")
    ref = "dalace" if "dalace" in by_method else methods[0]
    # example cases from different folds first
    case_fold = {case["case"]: c["fold"] for c in cells if c["method"] == ref for case in c.get("cases", [])}
    cases, folds = [], set()
    for case, fold in sorted(case_fold.items(), key=lambda kv: kv[1]):
        if fold not in folds:
            cases.append(case)
            folds.add(fold)
    cases += [c for c in sorted(case_fold) if c not in cases]
    cases = cases[:num_cases]

    plt = _plt()
    ncols = 2 + len(methods)
    fig, axes = plt.subplots(len(cases), ncols, figsize=(1.7 * ncols, 1.9 * len(cases)), squeeze=False, dpi=80)
    for r, case in enumerate(cases):
        edir = by_method[ref][case]
        item = next(i for i in json.loads((edir / "input.json").read_text()) if i["id"] == case)
        paths = {"image": item["image"], "label": item["label"]}
        for m in methods:
            if case in by_method[m]:
                stem = Path(item["image"]).name.split(".nii")[0]
                found = sorted(by_method[m][case].glob(f"{stem}_seg.nii*"))
                if found:
                    paths[m] = str(found[0])
        vol = _load_ras(paths)
        liver_value = item.get("liver_value", 1)
        gt = vol["label"] == liver_value
        z = _best_slice(gt)
        img = _view(vol["image"][..., z])
        lo, hi = _window(vol["image"][..., z])
        aspect = float(vol["pixdim"][1] / vol["pixdim"][0])
        panels = [("MR", None), ("ground truth", gt)] + [(METHOD_LABELS.get(m, m), vol[m] > 0 if m in vol else None) for m in methods]
        for c, (title, mask) in enumerate(panels):
            ax = axes[r][c]
            ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, aspect=aspect, interpolation="bilinear")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 1:
                ax.contour(_view(gt[..., z]).astype(float), levels=[0.5], colors="lime", linewidths=1.0)
            elif c > 1:
                ax.contour(_view(gt[..., z]).astype(float), levels=[0.5], colors="lime", linewidths=0.6, linestyles="dotted")
                if mask is not None and mask[..., z].any():
                    ax.contour(_view(mask[..., z]).astype(float), levels=[0.5], colors="red", linewidths=1.0)
                dice = next((cs["dice"] for cc in cells if cc["method"] == methods[c - 2] for cs in cc.get("cases", []) if cs["case"] == case), None)
                if dice is not None:
                    ax.text(0.03, 0.03, f"DSC {dice:.2f}", color="yellow", fontsize=6, transform=ax.transAxes)
            if r == 0:
                ax.set_title(title, fontsize=7)
            if c == 0:
                ax.set_ylabel(case, fontsize=6)
    fig.suptitle(f"{task.upper()} task: ground truth (green) and predictions (red) on held-out MR", fontsize=8)
    fig.tight_layout()
    return _save(fig, Path(out) if out else root / "figures" / "fig6_predictions.png")


# ------------------------------------------------------------------------------- Fig. 7 and 8
def _dalace_run(root: Path, task: str | None, fold: int) -> tuple[Path, str]:
    results = json.loads((root / "results.json").read_text())
    tasks = [task] if task else ["dal", "da", "joint"]
    for t in tasks:
        runs = [c["run"] for c in results["cells"] if c["task"] == t and c["method"] == "dalace" and not c.get("error")]
        runs_fold = [c["run"] for c in results["cells"] if c["task"] == t and c["method"] == "dalace" and c["fold"] == fold and not c.get("error")]
        if runs_fold or runs:
            return root / "runs" / (runs_fold or runs)[0], t
    raise FileNotFoundError(f"no finished DALACE run (tasks {tasks}) in {root / 'results.json'}")


def _example_slices(root: Path, run_dir: Path, task: str) -> tuple[dict, dict[str, torch.Tensor], "torch.nn.Module"]:
    """Preprocessed example slices (as in training) of one CT and one MR per domain, and the network."""
    from monai.transforms import Compose, ResizeWithPadOrCrop

    parser = run_config(run_dir)
    roi = [int(v) for v in parser.get_parsed_content("roi_size")]
    pre = {m: Compose(parser.get_parsed_content(f"preprocessing_{m}")) for m in ("ct", "mr")}
    dl = json.loads((root / "datalists" / f"{task}.json").read_text())
    picks = {"CT": ("ct", dl["ct"][0])}
    for item in dl["mr"]:
        dom = item.get("domain") or "MR"
        picks.setdefault(f"MR {dom}", ("mr", item))
    slices = {}
    crop = ResizeWithPadOrCrop(roi, mode="minimum")
    for name, (modality, item) in picks.items():
        d = pre[modality]({"image": item["image"], "label": item["label"], "liver_value": item.get("liver_value", 1)})
        z = _best_slice(np.asarray(d["label"][0]))
        x = crop(torch.as_tensor(np.asarray(d["image"][..., z])))  # (1, H, W)
        slices[name] = (modality, x[None].float(), item["id"])
    net = load_trained_network(run_dir)
    return picks, slices, net


def _imshow(ax, img2d: np.ndarray, title: str = "") -> None:
    ax.imshow(_view(img2d), cmap="gray", vmin=-1, vmax=1, interpolation="bilinear")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=7)


@torch.no_grad()
def fig7_domain_agnostic(root: str | Path, task: str | None = None, fold: int = 0, out: str | Path | None = None) -> Path:
    root = Path(root)
    run_dir, task = _dalace_run(root, task, fold)
    _, slices, net = _example_slices(root, run_dir, task)
    plt = _plt()
    n = len(slices)
    fig, axes = plt.subplots(2, n, figsize=(2.0 * n, 4.2), squeeze=False, dpi=80)
    for c, (name, (modality, x, case)) in enumerate(slices.items()):
        agn = net.domain_agnostic_image(x, modality)
        _imshow(axes[0][c], x[0, 0].numpy(), f"{name}\n({case})")
        _imshow(axes[1][c], agn[0, 0].numpy(), "domain-agnostic")
    fig.suptitle(f"Images (top) and their domain-agnostic images (bottom); DALACE, {task.upper()} task, {run_dir.name}", fontsize=7)
    fig.tight_layout()
    return _save(fig, Path(out) if out else root / "figures" / "fig7_domain_agnostic.png")


@torch.no_grad()
def fig8_modality_transfer(root: str | Path, task: str | None = None, fold: int = 0, out: str | Path | None = None) -> Path:
    root = Path(root)
    run_dir, task = _dalace_run(root, task, fold)
    _, slices, net = _example_slices(root, run_dir, task)
    ct_name = next(k for k, v in slices.items() if v[0] == "ct")
    x_ct = slices[ct_name][1]
    a_ct, _ = net.encode(x_ct, "ct")
    mr_names = [k for k, v in slices.items() if v[0] == "mr"]
    plt = _plt()
    fig, axes = plt.subplots(len(mr_names), 3, figsize=(6.2, 2.1 * len(mr_names)), squeeze=False, dpi=80)
    for r, name in enumerate(mr_names):
        x_mr = slices[name][1]
        _, m_mr = net.encode(x_mr, "mr")
        transferred = net.decode(a_ct, m_mr, "mr")
        _imshow(axes[r][0], x_mr[0, 0].numpy(), "MR reference (modality code)" if r == 0 else "")
        axes[r][0].set_ylabel(name, fontsize=7)
        _imshow(axes[r][1], x_ct[0, 0].numpy(), "CT (anatomy code)" if r == 0 else "")
        _imshow(axes[r][2], transferred[0, 0].numpy(), "CT anatomy + MR code" if r == 0 else "")
    fig.suptitle(f"CT rendered with each MR domain's modality code; DALACE, {task.upper()} task, {run_dir.name}", fontsize=7)
    fig.tight_layout()
    return _save(fig, Path(out) if out else root / "figures" / "fig8_modality_transfer.png")


def make_figures(root: str | Path, fig6_task: str = "da", agnostic_task: str | None = None, fold: int = 0) -> list[Path]:
    root = Path(root)
    results = json.loads((root / "results.json").read_text())
    if fig6_task not in {c["task"] for c in results["cells"]}:
        fig6_task = results["cells"][0]["task"]
    paths = [fig6_predictions(root, fig6_task)]
    paths.append(fig7_domain_agnostic(root, agnostic_task, fold))
    paths.append(fig8_modality_transfer(root, agnostic_task, fold))
    for p in paths:
        log.info(f"figure {p} ({p.stat().st_size // 1024} KB)")
    return paths
