"""Runs the protocol: one bundle training per (task, method, fold), then the bundle's evaluation of
the held-out fold, each in-process with ``monai.bundle.ConfigWorkflow`` on the real config files.

Layout of the experiment folder (``root``)::

    settings.json            every option of the command
    size.yaml                the size override composed after every config (widths, slices, epochs)
    datalists/<task>.json    each task's datalist with its folds (absolute paths)
    n4/                      N4-corrected MR, fitted once per volume (when bias correction is on)
    data_<s>mm/              or: copies resampled once to <s> mm (option prepare_spacing), MR with N4
    runs/<method>-<hash>/    one training: run.json (configs, overrides, seed, command), train/ (the
                             bundle's output_dir: losses.csv, checkpoints/), models/, done.json,
                             eval-<mr|ct>-<hash>/ (inference + evaluate outputs, predictions)
    results.json             every cell's runs, per-case metrics and settings
    table<N>_<name>.{md,csv} and tables.md

A training (or evaluation) that finished is never redone; one that was interrupted continues from its
last checkpoint (the bundle's ``resume``). Runs are keyed by what they train on: a model whose configs,
settings and training items recur in another task or fold (the CT-trained U-Net, which never sees the
fold's MR) is trained once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shlex
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import yaml

from custom.data import select_items
from custom.handlers import latest_checkpoint
from custom.networks import ensemble_state, merge_paths
from custom.utils import atomic_save, atomic_write_text

from . import data as xdata
from .protocol import BUNDLE, BUNDLE_CONFIGS, METHODS, STUDENT_EPOCH_FRACTION, TABLES, Method, table_cells

log = logging.getLogger("experiments")


@dataclass
class Settings:
    """Options of the experiment command (the reduced protocol shrinks the last group)."""

    datalist: str
    output: str
    dataset_dir: str | None = None
    folds: int = 5
    seed: int = 0  # the folds' assignment, and the trainings' seed unless training_seed says otherwise
    training_seed: int | None = None  # repeats of the trainings on the same folds (None: seed, as every table so far)
    tables: str = "1,2,3,4"
    methods: str | None = None  # comma list of method keys; None: all the tables need
    da_domain: str | None = None  # MR domain of DA and joint learning (substring of items' "domain"); None: all MR
    dal_domains: str | None = None  # comma list of MR domains of DAL; None: all MR
    ct_split: bool = True  # the paper splits CT in folds too; False: every fold trains on all CT (DA/DAL)
    exclude: str | None = None  # comma list of case ids left out
    bias_correction: bool = True  # N4 on MR (cached once per volume)
    prepare_spacing: float | None = None  # reduced protocol: resample copies once to this spacing (mm); DSC on that grid
    # size (paper: 2600 epochs of 10 iterations, width 64, 1.5 mm, 256x256 slices)
    epochs: int = 2600
    epoch_length: int = 10
    batch_size: int = 4
    width: int = 64
    num_res_blocks: int = 4
    spacing: float = 1.5
    slice_size: int = 256
    warmup_fraction: float = 600 / 2600  # epochs before the pair game starts (paper: 600 of 2600)
    amp: bool = False  # bfloat16 autocast in training (and in inference, where the configs allow it)
    surface_metrics: bool = True  # HD95 and ASD besides DSC (their KD-tree queries cost seconds per case)
    threads: int | None = 1  # torch CPU threads (None: torch's default); see run()
    only_folds: str | None = None  # comma list of folds to run now (e.g. one process per fold on a multi-core
    # machine, same --output; start the second after the first has written its N4 cache); a later run
    # without it reuses every finished training and evaluation and writes the complete tables

    def __post_init__(self) -> None:
        # fire turns "1,4" into a tuple and "1" into an int: keep comma strings
        for name in ("tables", "methods", "dal_domains", "exclude", "only_folds"):
            v = getattr(self, name)
            if isinstance(v, (list, tuple)):
                setattr(self, name, ",".join(str(x) for x in v))
            elif isinstance(v, int):
                setattr(self, name, str(v))

    def list(self, name: str) -> list[str] | None:
        v = getattr(self, name)
        if v is None or v == "":
            return None
        return [s.strip() for s in (v.split(",") if isinstance(v, str) else v) if str(s).strip()]


def size_override(s: Settings) -> dict:
    """The size override composed after every training and inference config."""
    w = int(s.width)
    features = [32, 32, 64, 128, 256, 32] if w == 64 else [max(w // 2, 2), max(w // 2, 2), w, 2 * w, 4 * w, max(w // 2, 2)]
    epochs = int(s.epochs)
    return {
        "spacing": [float(s.spacing)] * 3,
        "roi_size": [int(s.slice_size)] * 2,
        "width": w,
        "num_res_blocks": int(s.num_res_blocks),
        "segmenter#features": features,
        "max_epochs": epochs,
        "pair_warmup_epochs": int(round(epochs * s.warmup_fraction)),
        "epoch_length": int(s.epoch_length),
        "batch_size": int(s.batch_size),
        "checkpoint_interval": max(1, math.ceil(epochs / 4)),
        "figure_interval": epochs,
        "val_interval": epochs,
        "num_workers": 0,
        "amp": bool(s.amp),
    }


def _cli(configs: list[str], overrides: dict, run_id: str | None) -> str:
    """The equivalent ``python -m monai.bundle run`` command (run from ``bundle/``)."""
    cmd = ["python", "-m", "monai.bundle", "run"] + ([run_id] if run_id else []) + ["--config_file", str(configs)]
    for k, v in overrides.items():
        # booleans as Python literals: the bundle CLI (fire) reads "false" as a (truthy) string
        cmd += [f"--{k}", v if isinstance(v, str) else str(v) if isinstance(v, bool) else json.dumps(v)]
    return "cd bundle && " + " ".join(shlex.quote(c) for c in cmd)


def _file_digest(path: str | os.PathLike) -> str:
    """What a run record keeps of each config, to tell when a reused run's configs have changed since."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def _write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


#: Options that may change between invocations on one output folder (which cells run now, and how).
PER_INVOCATION_SETTINGS = ("output", "tables", "methods", "only_folds", "threads")


class Experiment:
    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.root = Path(settings.output).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.size_file = self.root / "size.yaml"
        self.tables = [t.strip() for t in str(settings.tables).split(",") if t.strip()]
        for t in self.tables:
            if t not in TABLES:
                raise ValueError(f"unknown table {t!r}; tables: {sorted(TABLES)}")
        self.methods = settings.list("methods")
        self._datalists: dict[str, dict] = {}

    # ---------------------------------------------------------------------------------- setup
    def prepare(self) -> None:
        self.check_same_settings()
        _write_json(self.root / "settings.json", asdict(self.s))
        # atomic: parallel invocations (one per fold) rewrite it while the others read it
        atomic_write_text(
            self.size_file,
            "# size override of the experiment (written by python -m experiments run)\n" + yaml.safe_dump(size_override(self.s), sort_keys=False),
        )
        items = xdata.read_items(self.s.datalist, self.s.dataset_dir, self.s.list("exclude") or ())
        if self.s.prepare_spacing:
            items = xdata.resampled_copies(items, self.root / f"data_{self.s.prepare_spacing:g}mm", self.s.prepare_spacing, self.s.bias_correction, log=log.info)
        elif self.s.bias_correction:
            items = xdata.n4_cache(items, self.root / "n4", log=log.info)
        (self.root / "datalists").mkdir(exist_ok=True)
        da_dom = [self.s.da_domain] if self.s.da_domain else None
        specs = {
            "da": (da_dom, self.s.ct_split),
            "dal": (self.s.list("dal_domains"), self.s.ct_split),
            "joint": (da_dom, len(items["ct"]) >= 2),  # CT is tested in joint learning: always split
        }
        for task in self.tasks():
            domains, ct_split = specs[task]
            dl = xdata.task_datalist(items, self.s.folds, self.s.seed, domains, ct_split)
            _write_json(self.root / "datalists" / f"{task}.json", dl)
            self._datalists[task] = dl

    @property
    def training_seed(self) -> int:
        """The trainings' seed: ``training_seed`` when given, else the folds' ``seed``."""
        return self.s.seed if self.s.training_seed is None else int(self.s.training_seed)

    def check_same_settings(self) -> None:
        """An output folder holds one protocol: a later invocation may choose other tables, methods or
        folds, but not other data, sizes or splits, whose runs would sit beside the first ones and fill
        the same tables. Raises naming every option that differs from the folder's ``settings.json``."""
        path = self.root / "settings.json"
        if not path.exists():
            return
        before = json.loads(path.read_text())
        now = asdict(self.s)
        differ = [
            f"{k}: {before.get(k)!r} there, {now[k]!r} now"
            for k in now
            if k not in PER_INVOCATION_SETTINGS and before.get(k) != now[k]
        ]
        if differ:
            raise ValueError(
                f"{self.root} holds an experiment run with other settings ({path}); use the same options "
                f"or another --output. Differences: " + "; ".join(differ)
            )

    def tasks(self) -> list[str]:
        return sorted({c[2] for t in self.tables for c in table_cells(TABLES[t])}, key=["da", "dal", "joint"].index)

    def folds(self) -> list[int]:
        """The folds this invocation runs: ``only_folds``, else all."""
        folds = [int(f) for f in self.s.list("only_folds") or range(self.s.folds)]
        if any(not 0 <= f < self.s.folds for f in folds):
            raise ValueError(f"only_folds {folds} outside 0..{self.s.folds - 1}")
        return folds

    def cells(self) -> list[tuple[str, str, str, str, str, str]]:
        """(table, row, column, task, method, test modality) of every requested cell."""
        out = []
        for t in self.tables:
            for row, col, task, method, test in table_cells(TABLES[t]):
                if self.methods is None or method in self.methods:
                    out.append((t, row, col, task, method, test))
        return out

    # ------------------------------------------------------------------------------- one run
    def run_spec(self, task: str, method: Method, fold: int) -> dict:
        dl = self._datalists[task]
        train_items = {}
        if "ct" in method.uses:
            train_items["ct"] = sorted(i["id"] for i in select_items(dl["ct"], fold, "train", labelled=True))
        if "mr" in method.uses:
            train_items["mr"] = sorted(i["id"] for i in select_items(dl["mr"], fold, "train"))
        if "mr_labels" in method.uses:
            train_items["mr_labelled"] = sorted(i["id"] for i in select_items(dl["mr"], fold, "train", labelled=True))
        configs = method.config_files() + [str(self.size_file)]
        teacher = self.run_spec(task, METHODS[task][method.teacher], fold) if method.teacher else None
        co_teacher = self.run_spec(task, METHODS[task][method.co_teacher], fold) if method.co_teacher else None
        keyed = {"configs": [Path(c).name for c in configs], "size": size_override(self.s), "seed": self.training_seed,
                 "bias_correction": self.s.bias_correction, "prepare_spacing": self.s.prepare_spacing, "items": train_items}
        if teacher is not None:
            keyed["teacher"] = teacher["dir"].name
            if method.pseudo_label_bridge_radius_mm:
                keyed["pseudo_label_bridge_radius_mm"] = method.pseudo_label_bridge_radius_mm
            if method.pseudo_label_test_time_augmentation:
                keyed["pseudo_label_test_time_augmentation"] = True
        if co_teacher is not None:
            keyed["co_teacher"] = co_teacher["dir"].name
        if method.mr_tail_cap and set(method.uses) & {"mr", "mr_labels"}:  # a CT-only training reads no MR
            keyed["mr_tail_cap"] = method.mr_tail_cap
        if method.slice_context:
            keyed["slice_context"] = method.slice_context
        key = xdata.digest(keyed)
        run_dir = self.root / "runs" / f"{method.run_as or method.key}-{key}"
        overrides = {
            "bundle_root": str(BUNDLE),
            "datalist": str(self.root / "datalists" / f"{task}.json"),
            "dataset_dir": str(self.root / "datalists"),
            "output_dir": str(run_dir / "train"),
            "models_dir": str(run_dir / "models"),
            "fold": fold,
            "seed": self.training_seed,
            "bias_correction": False,  # N4, when on, is already in the cached MR images (n4/ or data_<s>mm/)
            # the paper's single path (model.pt); the both-paths rows merge model.pt and model_ct.pt
            "extra_paths": [],
            "validate#enabled": False,  # the held-out fold is the test set: no model selection on it
            "image_grids": False,
            "mr_tail_cap": method.mr_tail_cap,
            "slice_context": method.slice_context,
        }
        if teacher is not None:  # a fraction of the teacher's epochs, the pair game on from the start
            epochs = max(1, round(int(self.s.epochs) * STUDENT_EPOCH_FRACTION))
            overrides.update(max_epochs=epochs, pair_warmup_epochs=0, checkpoint_interval=max(1, math.ceil(epochs / 4)),
                             pseudo_label_bridge_radius_mm=method.pseudo_label_bridge_radius_mm)
            overrides["pseudo_label_test_time_augmentation"] = method.pseudo_label_test_time_augmentation
        return {"dir": run_dir, "configs": configs, "overrides": overrides, "train_items": train_items, "task": task, "fold": fold,
                "teacher": teacher, "co_teacher": co_teacher}

    def teacher_overrides(self, spec: dict) -> dict:
        """Where a student's teacher is (configs/self_training.yaml's ids), after training it if needed:
        its weight averages, its last checkpoint, and its masks written through both paths (with the
        co-teacher, trained first too when the method has one: by both, ensemble.yaml)."""
        teacher = spec["teacher"]
        record = self.train(teacher)
        models = teacher["dir"] / "models"
        masks_by = {"teacher_ckpt_path": str(self._merge_paths(teacher))}
        if spec.get("co_teacher") is not None:
            self.train(spec["co_teacher"])
            masks_by = {"teacher_ckpt_path": str(self._ensemble(teacher, spec["co_teacher"])),
                        "pseudo_label_configs": [str(BUNDLE_CONFIGS / "inference.yaml"), str(BUNDLE_CONFIGS / "ensemble.yaml")]}
        return {
            "teacher_dir": str(models),
            **masks_by,
            "teacher_extra_paths": ["ct"],
            "teacher_checkpoint": record.get("checkpoint") or latest_checkpoint(teacher["dir"] / "train" / "checkpoints", required=True),
        }

    def train(self, spec: dict) -> dict:
        from monai.bundle import ConfigWorkflow

        run_dir: Path = spec["dir"]
        done = run_dir / "done.json"
        if done.exists():
            record = json.loads(done.read_text())
            changed = [c for c, d in record.get("config_digests", {}).items() if not Path(c).exists() or _file_digest(c) != d]
            if changed:
                log.warning(f"reusing {run_dir.name}, trained before these configs changed: {', '.join(changed)} "
                            f"(delete {run_dir} to retrain it with them)")
            return record
        run_dir.mkdir(parents=True, exist_ok=True)
        overrides = dict(spec["overrides"])
        if spec.get("teacher") is not None:
            overrides.update(self.teacher_overrides(spec))
        resume = latest_checkpoint(Path(overrides["output_dir"]) / "checkpoints") is not None
        overrides["resume"] = resume
        record = {
            "configs": spec["configs"],
            "overrides": overrides,
            "seed": overrides["seed"],
            "task": spec["task"],
            "fold": spec["fold"],
            "train_items": spec["train_items"],
            "command": _cli(spec["configs"], overrides, "training"),
            "config_digests": {c: _file_digest(c) for c in spec["configs"]},
            "resumed": resume,
        }
        _write_json(run_dir / "run.json", record)
        log.info(f"train {run_dir.name} (task {spec['task']}, fold {spec['fold']}{', resuming' if resume else ''})")
        t0 = time.time()
        wf = ConfigWorkflow(config_file=spec["configs"], workflow_type="train", **overrides)
        log.disabled = False  # the bundle's logging.conf (fileConfig) disables existing loggers
        wf.initialize()
        wf.run()
        wf.finalize()
        record["train_seconds"] = round(time.time() - t0, 1)
        record["checkpoint"] = latest_checkpoint(Path(overrides["output_dir"]) / "checkpoints")
        _write_json(done, record)
        log.info(f"trained {run_dir.name} in {record['train_seconds']} s")
        return record

    def _export_ct_model(self, spec: dict, kind: str) -> Path:
        """CT inference networks the bundle does not write (``CycleGAN.inference_network('ct', ...)``):
        CycleGAN's CT -> MR translator followed by S (``cyclegan_ct``) and TD-GAN's S alone (``tdgan_ct``)."""
        out = spec["dir"] / "models" / f"model_{kind}.pt"
        if out.exists():
            return out
        net = load_trained_network(spec["dir"])
        torch.save(net.inference_network("ct", task_driven=kind == "tdgan_ct").state_dict(), out)
        return out

    def _merge_paths(self, spec: dict) -> Path:
        """The run's MR inference network with CT's path added (``custom.networks.merge_paths``)."""
        models = spec["dir"] / "models"
        out = models / "model_both_paths.pt"
        if not out.exists():
            load = lambda f: torch.load(models / f, map_location="cpu", weights_only=True)  # noqa: E731
            atomic_save(merge_paths(load("model.pt"), {"ct": load("model_ct.pt")}), out)
        return out

    def _ensemble(self, spec: dict, unet: dict) -> Path:
        """The run's both-paths network and the ``unet`` run's U-Net as one ``ensemble.yaml`` state_dict."""
        out = spec["dir"] / "models" / f"model_ensemble_{unet['dir'].name}.pt"
        if not out.exists():
            load = lambda f: torch.load(f, map_location="cpu", weights_only=True)  # noqa: E731
            atomic_save(ensemble_state({"dalace": load(self._merge_paths(spec)), "unet_ct": load(unet["dir"] / "models" / "model.pt")}), out)
        return out

    def _self_ensemble(self, spec: dict) -> Path:
        """The run's both-paths network and its teacher's as one ``self_ensemble.yaml`` state_dict."""
        teacher = spec["teacher"]
        out = spec["dir"] / "models" / f"model_self_ensemble_{teacher['dir'].name}.pt"
        if not out.exists():
            load = lambda f: torch.load(f, map_location="cpu", weights_only=True)  # noqa: E731
            atomic_save(ensemble_state({"teacher": load(self._merge_paths(teacher)), "student": load(self._merge_paths(spec))}), out)
        return out

    def evaluate(self, spec: dict, method: Method, test: str) -> dict | None:
        from monai.bundle import ConfigWorkflow

        dl = self._datalists[spec["task"]]
        items = select_items(dl[test], spec["fold"], "val", labelled=True)
        if not items:
            return None
        items = [{k: i[k] for k in ("image", "label", "id", "liver_value") if k in i} for i in items]
        ekey_of = {"test": test, "items": items, "kind": method.mr_eval if test == "mr" else method.ct_eval}
        kind = method.mr_eval if test == "mr" else method.ct_eval
        partner = self.run_spec(spec["task"], METHODS[spec["task"]][method.ensemble_with], spec["fold"]) if kind == "ensemble" else None
        if partner is not None:
            ekey_of["ensemble_with"] = partner["dir"].name
        if kind == "self_ensemble":
            if spec.get("teacher") is None:
                raise ValueError(f"{method.key}: a self-ensemble evaluates a student (a method with a teacher)")
            ekey_of["ensemble_with"] = spec["teacher"]["dir"].name
        if method.weights != "final":
            ekey_of["weights"] = method.weights
        radius = method.bridge_radius_mm if test == "mr" else 0.0
        if radius:
            ekey_of["bridge_radius_mm"] = radius
        if method.mr_tail_cap and test == "mr":
            ekey_of["mr_tail_cap"] = method.mr_tail_cap
        if method.test_time_augmentation and test == "mr":
            ekey_of["test_time_augmentation"] = True
        if method.slice_context:
            ekey_of["slice_context"] = method.slice_context
        continuity = method.slice_continuity if test == "mr" else 0.0
        if continuity:
            ekey_of["slice_continuity"] = continuity
        ekey = xdata.digest(ekey_of)
        edir = spec["dir"] / f"eval-{test}-{ekey}"
        done = edir / "eval.json"
        if done.exists():
            return json.loads(done.read_text())
        edir.mkdir(parents=True, exist_ok=True)
        _write_json(edir / "input.json", items)
        models = spec["dir"] / "models"
        unet = kind == "unet" or kind == "tdgan_ct"
        if kind == "unet":
            ckpt = models / "model.pt"
        elif kind in ("cyclegan_ct", "tdgan_ct"):
            ckpt = self._export_ct_model(spec, kind)
        elif kind == "both_paths":
            ckpt = self._merge_paths(spec)
        elif kind == "ensemble":
            self.train(partner)
            ckpt = self._ensemble(spec, partner)
        elif kind == "self_ensemble":
            ckpt = self._self_ensemble(spec)
        else:
            ckpt = models / ("model.pt" if test == "mr" else "model_ct.pt")
        if method.weights == "raw":
            if test != "mr":
                raise ValueError(f"{method.key}: raw weights are kept for the MR model only")
            ckpt = spec["dir"] / "train" / "model_raw.pt"
        configs = [str(BUNDLE_CONFIGS / "inference.yaml"), str(BUNDLE_CONFIGS / "evaluate.yaml")]
        if unet:
            configs.append(str(BUNDLE_CONFIGS / "inference_unet.yaml"))
        if kind in ("ensemble", "self_ensemble"):
            configs.append(str(BUNDLE_CONFIGS / f"{kind}.yaml"))
        configs.append(str(self.size_file))
        overrides = {
            "bundle_root": str(BUNDLE),
            "input": str(edir / "input.json"),
            "output_dir": str(edir),
            "models_dir": str(models),
            "ckpt_path": str(ckpt),
            "modality": test,
            "bias_correction": False,
            "num_workers": 0,
            "bridge_radius_mm": radius,
            "slice_continuity": continuity,
            "mr_tail_cap": method.mr_tail_cap,
            "slice_context": method.slice_context,
        }
        overrides["extra_paths"] = ["ct"] if kind in ("both_paths", "ensemble", "self_ensemble") else []
        # explicit either way: a row's figures must not change with inference.yaml's default
        overrides["test_time_augmentation"] = bool(method.test_time_augmentation and test == "mr")
        if not self.s.surface_metrics:
            overrides.update({"metrics": ["dice"], "evaluator#additional_metrics": {}})
        t0 = time.time()
        wf = ConfigWorkflow(config_file=configs, workflow_type="infer", **overrides)
        log.disabled = False
        wf.initialize()
        wf.run()
        wf.finalize()
        per_case = read_per_case(edir / "metrics_per_case.csv")
        record = {
            "configs": configs,
            "overrides": overrides,
            "command": _cli(configs, overrides, None),
            "cases": per_case,
            "eval_seconds": round(time.time() - t0, 1),
        }
        _write_json(done, record)
        return record

    # ---------------------------------------------------------------------------------- all
    def run(self) -> dict:
        """All requested cells. On a CPU shared with other processes, torch's default OpenMP threads
        spin against each other (a small U-Net forward measured 50x slower with 2 threads than with
        1 on a busy 2-core machine), so the runs use ``threads`` (1 by default); restored afterwards."""
        old_threads = torch.get_num_threads()
        if self.s.threads:
            torch.set_num_threads(int(self.s.threads))
        try:
            return self._run()
        finally:
            torch.set_num_threads(old_threads)

    def _run(self) -> dict:
        self.prepare()
        t_start = time.time()
        results_path = self.root / "results.json"
        results = {"settings": asdict(self.s), "size_override": size_override(self.s), "cells": [], "runs": {}}
        failures = {}
        todo: list[tuple] = []
        seen = set()
        for t, row, col, task, mkey, test in self.cells():
            for fold in self.folds():
                todo.append((t, row, col, task, mkey, test, fold))
                seen.add((task, mkey, fold))
        log.info(f"{len(todo)} table cells x folds, {len(seen)} (task, method, fold) trainings before reuse")
        for t, row, col, task, mkey, test, fold in todo:
            method = METHODS[task][mkey]
            spec = self.run_spec(task, method, fold)
            name = spec["dir"].name
            entry = {"table": t, "row": row, "column": col, "task": task, "method": mkey, "test": test, "fold": fold, "run": name}
            if name in failures:
                entry["error"] = failures[name]
            else:
                try:
                    rec = self.train(spec)
                    results["runs"][name] = {k: rec.get(k) for k in ("configs", "overrides", "seed", "command", "train_seconds", "train_items", "checkpoint")}
                    ev = self.evaluate(spec, method, test)
                    if ev is None:
                        entry["cases"] = []
                        entry["note"] = f"no labelled {test.upper()} in fold {fold}"
                    else:
                        entry.update(cases=ev["cases"], eval_dir=str(Path(ev["overrides"]["output_dir"]).relative_to(self.root)),
                                     eval_command=ev["command"], eval_configs=ev["configs"])
                except Exception as e:  # one failed run must not stop the protocol: it is reported
                    failures[name] = f"{type(e).__name__}: {e}"
                    entry["error"] = failures[name]
                    log.error(f"{name} failed:\n{traceback.format_exc()}")
            results["cells"].append(entry)
            results["elapsed_seconds"] = round(time.time() - t_start, 1)
            _write_json(results_path, results)
        from .tables import write_tables

        write_tables(self.root, results)
        log.info(f"done in {time.time() - t_start:.0f} s: {self.root / 'tables.md'}")
        return results


def read_per_case(path: Path) -> list[dict]:
    import csv

    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for r in rows:
        out.append({"case": r["case"], **{k: float(v) for k, v in r.items() if k not in ("case", "image")}})
    return out


def load_trained_network(run_dir: str | os.PathLike, checkpoint: str | None = None):
    """The full network of a training run (DALACE, CycleGAN, U-Net) with the weights of its last
    checkpoint (``train/checkpoints/checkpoint_epoch=N.pt``, key ``network``), in eval mode on CPU."""
    parser = run_config(run_dir)
    net = parser.get_parsed_content("network_def", instantiate=True)
    ckpt = checkpoint or latest_checkpoint(Path(parser["output_dir"]) / "checkpoints", required=True)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    net.load_state_dict(state["network"])
    return net.eval()


def run_config(run_dir: str | os.PathLike):
    """A ConfigParser of a run's training configs and overrides (for its preprocessing in figures)."""
    from monai.bundle import ConfigParser

    rec = json.loads((Path(run_dir) / "run.json").read_text())
    parser = ConfigParser()
    parser.read_config(rec["configs"])
    parser.update({k: v for k, v in rec["overrides"].items() if k != "resume"})
    return parser
