"""Write datalists: from a folder of image/label files, from the shared data manifest, and k-fold splits.

Folder layout read by :func:`datalist_from_folder`::

    <folder>/ct/<id>_image.<ext>   <folder>/ct/<id>_label.<ext>     (every CT needs its label)
    <folder>/mr/<id>_image.<ext>  [<folder>/mr/<id>_label.<ext>]    (MR labels optional)

``<ext>`` is any of ``.nii.gz .nii .nrrd .nhdr .mha .mhd``; ``<id>_image`` may also be a DICOM series
folder. Files whose names do not end in ``_image``/``_label`` are ignored. The bundle's
``sample_data`` folder has this layout.

Folds follow the paper's 5-fold cross-validation, one split per modality: items are sorted by id
and shuffled with a fixed seed, so the same cases always get the same folds whatever order the
files were listed in.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from custom.utils import atomic_write_text

from .datalist import IMAGE_SUFFIXES, MODALITIES, default_id, read_datalist_json
from .errors import DatalistError

__all__ = ["assign_folds", "datalist_from_folder", "datalist_from_manifest", "write_datalist"]

LABELS = {"0": "background", "1": "liver"}


def assign_folds(items: Sequence[dict], num_folds: int = 5, seed: int = 0) -> list[dict]:
    """Copies of ``items`` with a ``fold`` in ``0..num_folds-1``, balanced, reproducible from ``seed``."""
    if num_folds < 1:
        raise ValueError("num_folds must be at least 1.")
    ids = [str(i.get("id", default_id(i["image"]))) for i in items]
    if len(set(ids)) != len(ids):
        raise ValueError("item ids must be unique to assign folds reproducibly.")
    order = sorted(range(len(items)), key=lambda n: ids[n])
    perm = np.random.default_rng(seed).permutation(len(items))
    out = [dict(i) for i in items]
    for rank, n in enumerate(perm):
        out[order[n]]["fold"] = int(rank % num_folds)
    return out


def _split_name(path: Path) -> tuple[str, str] | None:
    """``("a", "image")`` for ``a_image.nii.gz`` (or a DICOM folder ``a_image``), else None."""
    name = path.name
    if path.is_file():
        suffix = next((s for s in IMAGE_SUFFIXES if name.lower().endswith(s)), None)
        if suffix is None:
            return None
        name = name[: -len(suffix)]
    elif not path.is_dir():
        return None
    for role in ("image", "label"):
        if name.endswith(f"_{role}"):
            return name[: -len(role) - 1], role
    return None


def datalist_from_folder(
    folder: str | os.PathLike,
    num_folds: int = 5,
    seed: int = 0,
    mr_labels: bool = True,
    mr_domain: str = "",
) -> dict:
    """A datalist for a folder in the layout of this module's docstring, paths relative to ``folder``."""
    root = Path(folder)
    data: dict = {"name": root.name, "description": f"built from {root}", "labels": LABELS}
    problems = []
    for modality in MODALITIES:
        found: dict[str, dict] = {}
        sub = root / modality
        for path in sorted(sub.iterdir()) if sub.is_dir() else []:
            split = _split_name(path)
            if split is not None:
                found.setdefault(split[0], {})[split[1]] = path.relative_to(root).as_posix()
        items = []
        for case_id, files in sorted(found.items()):
            if "image" not in files:
                problems.append(f"{root / files['label']}: label without an image")
                continue
            item = {"id": case_id, "image": files["image"]}
            if "label" in files and (modality == "ct" or mr_labels):
                item["label"] = files["label"]
            elif modality == "ct":
                problems.append(f"{root / files['image']}: CT image without a label ({case_id}_label.*)")
                continue
            if modality == "mr" and mr_domain:
                item["domain"] = mr_domain
            items.append(item)
        data[modality] = assign_folds(items, num_folds, seed)
        if not items:
            problems.append(f"{sub}: no '<id>_image.*' files for '{modality}' (empty modality list)")
    if problems:
        raise DatalistError(problems)
    data.update(num_folds=num_folds, seed=seed)
    return data


def _as_list(value) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def datalist_from_manifest(
    manifest: str | os.PathLike,
    mr_sequences: str | Sequence[str] | None = None,
    mr_labels: bool = True,
    exclude: str | Sequence[str] | None = None,
    use_dicom: bool = False,
    num_folds: int = 5,
    seed: int = 0,
) -> dict:
    """A datalist for the shared data's ``manifest.json``, paths relative to the manifest's folder.

    Args:
        manifest: path of ``manifest.json``.
        mr_sequences: MR sequences to keep (case-insensitive, e.g. ``"T2-SPIR"``); None keeps all.
        mr_labels: keep MR labels (for validation); False lists MR images only.
        exclude: case ids to leave out (e.g. the ``_sm`` crops of cases also listed whole).
        use_dicom: read a case's DICOM series folder instead of its NIfTI where the manifest has one.
        num_folds, seed: see :func:`assign_folds`.
    """
    path = Path(manifest)
    cases = read_datalist_json(path).get("cases", [])
    keep_seq = {s.lower() for s in _as_list(mr_sequences)} if mr_sequences is not None else None
    drop = set(_as_list(exclude) or [])
    lists: dict[str, list] = {m: [] for m in MODALITIES}
    for case in cases:
        modality = str(case.get("modality", "")).lower()
        if modality not in lists or case.get("id") in drop:
            continue
        if modality == "mr" and keep_seq is not None and str(case.get("sequence", "")).lower() not in keep_seq:
            continue
        item = {"id": case["id"], "image": case["dicom"] if use_dicom and case.get("dicom") else case["image"]}
        if case.get("label") and (modality == "ct" or mr_labels):
            item["label"] = case["label"]
        if case.get("sequence"):
            item["domain"] = case["sequence"]
        lists[modality].append(item)
    data = {
        "name": "dalace-shared-data",
        "description": f"built from {path.name}; MR sequences: {', '.join(sorted(keep_seq)) if keep_seq else 'all'}",
        "labels": LABELS,
        "num_folds": num_folds,
        "seed": seed,
    }
    problems = [f"{path}: no '{m}' cases selected (empty modality list)" for m in MODALITIES if not lists[m]]
    if problems:
        raise DatalistError(problems)
    for m in MODALITIES:
        data[m] = assign_folds(lists[m], num_folds, seed)
    return data


def write_datalist(data: dict, output: str | os.PathLike) -> str:
    """Write a datalist as indented JSON (stable key order, so diffs stay readable), atomically; return its path."""
    atomic_write_text(output, json.dumps(data, indent=2) + "\n")
    return str(output)
