"""Command line of the experiments: ``python -m experiments <command> --help`` (run from the repository root).

Commands::

    # the paper's protocol (5 folds, paper sizes: days on a GPU)
    python -m experiments run --datalist D.json --output runs/paper --da_domain T2-SPIR
    # a reduced version (the one in bundle/docs/experiments.md: ~30 min on a 2-core CPU)
    python -m experiments run --datalist D.json --dataset_dir ../shared/data --output runs/reduced --folds 2 \\
        --epochs 15 --width 8 --num_res_blocks 1 --spacing 6 --slice_size 48 --prepare_spacing 6 \\
        --ct_split False --da_domain T2-SPIR --tables 1,2,3,4 [--methods dalace,unet_ct]
    python -m experiments tables runs/reduced          # rewrite the tables from results.json
    python -m experiments figures runs/reduced         # Fig. 6-, 7- and 8-like PNGs in runs/reduced/figures
    python -m experiments tiny_dataset OUT_DIR         # a tiny k-fold dataset from bundle/sample_data
    python -m experiments liver_intensity D.json [--configs "['experiments/configs/foreground_norm.yaml']"]
    python -m experiments mask_errors MASK_DIR D.json  # Dice, excess (far, beyond) and missed liver of masks
    python -m experiments bridge_radius "[DIR,[DIR_F0,DIR_F1]]" D.json  # bridge_radius_mm on written probabilities
    python -m experiments slice_continuity "[DIR]" D.json  # slice_continuity on written probabilities
    python -m experiments test_time_augmentation CKPT D.json  # Dice with gamma / zoom test-time averaging

Every run is resumable: rerun the same command and finished trainings and evaluations are skipped.
"""

from __future__ import annotations

import logging
import sys

import fire
import numpy as np


def _logging():
    handlers = [logging.StreamHandler(sys.stdout)]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", handlers=handlers, force=False)
    logging.getLogger("experiments").setLevel(logging.INFO)


def run(datalist: str, output: str, **options):
    """Run the protocol; options are the fields of :class:`experiments.runner.Settings`."""
    from .runner import Experiment, Settings

    _logging()
    settings = Settings(datalist=datalist, output=output, **options)
    results = Experiment(settings).run()
    from .tables import write_tables

    print(write_tables(settings.output))
    failed = sorted({f"{c['run']}: {c['error']}" for c in results.get("cells", []) if c.get("error")})
    if failed:  # the tables mark them, but a run with failed cells must not look like a success
        raise SystemExit(f"{len(failed)} run(s) failed (rerun the same command to retry them):\n" + "\n".join(f"  - {f}" for f in failed))


def tables(output: str):
    """Rewrite the Markdown and CSV tables of an experiment folder from its results.json."""
    from .tables import write_tables

    print(write_tables(output))


def figures(output: str, fig6_task: str = "da", agnostic_task: str | None = None, fold: int = 0):
    """Fig. 6-, 7- and 8-like PNGs of an experiment folder, in <output>/figures."""
    import torch

    from .figures import make_figures

    _logging()
    torch.set_num_threads(1)
    for p in make_figures(output, fig6_task=fig6_task, agnostic_task=agnostic_task, fold=fold):
        print(p)


def tiny_dataset(out_dir: str, copies: int = 2):
    """A tiny k-fold dataset of reoriented copies of the bundle's sample; prints its datalist path."""
    from .data import tiny_sample_dataset
    from .protocol import BUNDLE

    print(tiny_sample_dataset(BUNDLE / "sample_data", out_dir, copies))


def liver_intensity(datalist: str, dataset_dir: str | None = None, configs=(), bias_correction: bool = True):
    """Median liver intensity after the bundle's MR normalization (``configs`` override it), per labelled MR."""
    from .intensity import liver_intensity as measure

    rows = measure(datalist, dataset_dir, tuple(configs), bias_correction)
    for r in rows:
        print(f"{r['id']}\tliver median {r['liver_median']:+.2f}\tupper percentile / liver median "
              f"{r['upper_percentile_over_liver']:.1f}\ttail ratio (mr_tail_cap bounds it) {r['tail_ratio']:.2f}")
    return None


def mask_errors(mask_dir: str, datalist: str, dataset_dir: str | None = None, far_mm: float = 10.0):
    """Dice, and the voxels added and missed as fractions of the liver, of the masks in ``mask_dir``; of
    the added, those farther than ``far_mm`` from the liver and those in axial slices without liver."""
    from .masks import mask_errors as measure

    rows = measure(mask_dir, datalist, dataset_dir, far_mm)
    keys = ["excess", "missed", "excess_far", "excess_beyond"]
    for r in rows:
        print(f"{r['id']}\tdice {r['dice']:.3f}\t" + "\t".join(f"{k} {r[k]:.2f}" for k in keys))
    print(f"mean ({len(rows)})\tdice {np.mean([r['dice'] for r in rows]):.3f}\t"
          + "\t".join(f"{k} {np.mean([r[k] for r in rows]):.2f}" for k in keys))
    return None


def _print_sweep(out: dict, name: str) -> None:
    values = list(out["cases"][0]["dice"])
    print("case\tfold\t" + "\t".join(f"{name}={v:g}" for v in values))
    for c in out["cases"]:
        print(f"{c['id']}\t{c['fold']}\t" + "\t".join(f"{c['dice'][v]:.3f}" for v in values))
    print(f"mean ({len(out['cases'])})\t\t" + "\t".join(f"{np.mean([c['dice'][v] for c in out['cases']]):.3f}" for v in values))
    print("min\t\t" + "\t".join(f"{np.min([c['dice'][v] for c in out['cases']]):.3f}" for v in values))
    print(f"{name} chosen on the other folds: " + ", ".join(f"fold {f}: {v:g}" for f, v in out["chosen"].items())
          + f"; nested mean Dice {out['nested']:.3f}")


def bridge_radius(members, datalist: str, radii=(0, 8, 12, 16, 20), dataset_dir: str | None = None):
    """Dice per case and radius of inference.yaml's bridge detachment on written probabilities
    (``--save_probabilities True``; a member is a folder or a list of folders, e.g. one per fold;
    several members: averaged), and the radius chosen fold by fold on the other folds' cases."""
    from .masks import bridge_radius_sweep

    if isinstance(members, str):
        members = [members]
    _print_sweep(bridge_radius_sweep(list(members), datalist, list(radii), dataset_dir), "radius")
    return None


def slice_continuity(members, datalist: str, overlaps=(0, 0.5, 0.6, 0.7, 0.8), dataset_dir: str | None = None,
                     radius_mm: float | None = None, distance_mm: float | None = None, max_removed: float | None = None):
    """As ``bridge_radius``, for inference.yaml's last step, dropping the pieces of a slice that overlap
    the mask nearer the liver's largest slice by less than a fraction (``slice_continuity``), after the
    bridges cut at ``radius_mm``, with slices ``distance_mm`` apart and masks of which more than
    ``max_removed`` would go left whole (all three inference.yaml's by default)."""
    from .masks import slice_continuity_sweep
    from .protocol import BRIDGE_RADIUS_MM, SLICE_CONTINUITY_MAX_REMOVED, SLICE_CONTINUITY_MM

    if isinstance(members, str):
        members = [members]
    radius_mm = BRIDGE_RADIUS_MM if radius_mm is None else float(radius_mm)
    distance_mm = SLICE_CONTINUITY_MM if distance_mm is None else float(distance_mm)
    max_removed = SLICE_CONTINUITY_MAX_REMOVED if max_removed is None else float(max_removed)
    _print_sweep(slice_continuity_sweep(list(members), datalist, list(overlaps), radius_mm, distance_mm, max_removed, dataset_dir),
                 "overlap")
    return None


def test_time_augmentation(ckpt_path: str, datalist: str, dataset_dir: str | None = None, configs=(), bias_correction: bool = True):
    """Dice per labelled MR volume of a model's masks with test-time augmentation (gamma, in-plane zoom,
    both) beside plain inference, on the training's grid (experiments/test_time.py)."""
    import torch

    from .test_time import probe

    torch.set_num_threads(1)
    rows = probe(ckpt_path, datalist, dataset_dir, tuple(configs), bias_correction)
    names = [k for k in rows[0] if k != "id"]
    print("case\t" + "\t".join(names))
    for r in rows:
        print(r["id"] + "\t" + "\t".join(f"{r[k]:.3f}" for k in names))
    print(f"mean ({len(rows)})\t" + "\t".join(f"{np.mean([r[k] for r in rows]):.3f}" for k in names))
    print("better than plain\t" + "\t".join(f"{sum(r[k] > r['plain'] for r in rows)}" for k in names))
    return None


if __name__ == "__main__":
    fire.Fire({"run": run, "tables": tables, "figures": figures, "tiny_dataset": tiny_dataset, "liver_intensity": liver_intensity,
               "mask_errors": mask_errors, "bridge_radius": bridge_radius,
               "slice_continuity": slice_continuity, "test_time_augmentation": test_time_augmentation})
