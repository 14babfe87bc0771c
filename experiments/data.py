"""The data side of the experiments: one datalist per task with its folds, a cache of N4-corrected MR,
and a tiny k-fold dataset made from the bundle's sample (for tests and a smoke run).

Every datalist written here has absolute paths, so the bundle configs read it whatever their
``dataset_dir``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from custom.data.build import assign_folds, write_datalist
from custom.data.datalist import default_id, read_datalist_json, resolve_items
from custom.utils import atomic_path

__all__ = ["task_datalist", "n4_cache", "resampled_copies", "tiny_sample_dataset", "read_items"]


def _matches(item: dict, domains: Sequence[str] | None) -> bool:
    if not domains:
        return True
    dom = str(item.get("domain", "")).lower()
    return any(d.lower() in dom for d in domains)


def read_items(datalist: str, dataset_dir: str | None = None, exclude: Sequence[str] = ()) -> dict[str, list[dict]]:
    """``{"ct": [...], "mr": [...]}`` of ``datalist`` with absolute paths, ids and liver values filled in."""
    data = read_datalist_json(datalist)
    base = os.path.abspath(dataset_dir or os.path.dirname(os.path.abspath(datalist)))  # runs read them from elsewhere
    out = {}
    for m in ("ct", "mr"):
        items = []
        for item in resolve_items(data.get(m) or [], base):
            item = dict(item)
            item.setdefault("id", default_id(item["image"]))
            item.setdefault("liver_value", data.get("liver_value", 1))
            if str(item["id"]) in set(exclude):
                continue
            item.pop("fold", None)
            items.append(item)
        out[m] = items
    return out


def task_datalist(
    items: dict[str, list[dict]],
    num_folds: int,
    seed: int,
    mr_domains: Sequence[str] | None = None,
    ct_split: bool = True,
) -> dict:
    """The datalist of one task: MR of ``mr_domains`` (substring of the item's ``domain``; None: all)
    split in ``num_folds`` folds, CT split too when ``ct_split`` (else CT has no fold: it trains in
    every fold). Folds come from :func:`custom.data.build.assign_folds` (sorted ids, seeded), so the
    same MR cases get the same folds in every task that selects the same MR."""
    mr = [dict(i) for i in items["mr"] if _matches(i, mr_domains)]
    if not mr:
        raise ValueError(f"no MR items of domains {mr_domains!r}; domains present: {sorted({i.get('domain', '') for i in items['mr']})}")
    ct = [dict(i) for i in items["ct"]]
    data = {
        "name": "dalace-experiment",
        "mr": assign_folds(mr, num_folds, seed),
        "ct": assign_folds(ct, num_folds, seed) if ct_split else ct,
        "num_folds": num_folds,
        "seed": seed,
    }
    return data


def digest(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:10]


def n4_cache(items: dict[str, list[dict]], cache_dir: str | os.PathLike, n4_kwargs: dict | None = None, log=print) -> dict:
    """MR items pointing at N4-corrected copies of their images (same grid, float32 NIfTI in
    ``cache_dir``), written once. The bundle's ``N4BiasFieldCorrection`` is fitted once per volume
    here instead of in every run's cache; runs then set ``bias_correction: false``."""
    from monai.data import MetaTensor
    import nibabel as nib
    import torch

    from custom.transforms import N4BiasFieldCorrection

    n4 = N4BiasFieldCorrection(**(n4_kwargs or {}))
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    out = dict(items)
    mr = []
    for item in items["mr"]:
        item = dict(item)
        dst = cache / f"{item['id']}_image.nii.gz"
        if not dst.exists():
            if not str(item["image"]).lower().endswith((".nii", ".nii.gz")):
                from monai.transforms import LoadImage

                img = LoadImage(image_only=True)(item["image"])
                arr, affine = np.asarray(img), np.asarray(img.affine)
            else:
                nii = nib.load(item["image"])
                arr, affine = np.asarray(nii.dataobj, dtype=np.float32), nii.affine
            mt = MetaTensor(torch.as_tensor(arr, dtype=torch.float32)[None], affine=torch.as_tensor(affine))
            corrected = np.asarray(n4(mt))[0].astype(np.float32)
            with atomic_path(dst, suffix=".nii.gz") as tmp:
                nib.save(nib.Nifti1Image(corrected, affine), tmp)
            log(f"N4: {item['image']} -> {dst}")
        item["original_image"] = item["image"]
        item["image"] = str(dst)
        mr.append(item)
    out["mr"] = mr
    return out


def resampled_copies(items: dict[str, list[dict]], cache_dir: str | os.PathLike, spacing: float, n4: bool, log=print) -> dict:
    """Items pointing at copies resampled to ``spacing`` mm isotropic (image bilinear, label nearest;
    orientation kept), MR N4-corrected first (at full resolution) when ``n4``; written once.

    A reduced protocol's shortcut: every run's cache and every evaluation then read small volumes, and
    DSC is computed on this grid instead of the original one."""
    import nibabel as nib
    from monai.transforms import EnsureChannelFirst, LoadImage, Spacing

    from custom.transforms import N4BiasFieldCorrection

    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    load = LoadImage(image_only=True, ensure_channel_first=False)
    chan = EnsureChannelFirst()
    out = {}
    for modality, modality_items in items.items():
        new_items = []
        for item in modality_items:
            item = dict(item)
            for role, mode in (("image", "bilinear"), ("label", "nearest")):
                if not item.get(role):
                    continue
                dst = cache / modality / f"{item['id']}_{role}.nii.gz"
                if not dst.exists():
                    img = chan(load(item[role]))
                    if role == "image" and modality == "mr" and n4:
                        img = N4BiasFieldCorrection()(img)
                    res = Spacing(pixdim=[float(spacing)] * 3, mode=mode)(img.float())
                    arr = np.asarray(res[0])
                    arr = arr.astype(np.float32) if role == "image" else np.rint(arr).astype(np.int16)
                    with atomic_path(dst, suffix=".nii.gz") as tmp:
                        nib.save(nib.Nifti1Image(arr, np.asarray(res.affine, dtype=np.float64)), tmp)
                    log(f"resampled{' + N4' if role == 'image' and modality == 'mr' and n4 else ''}: {item[role]} -> {dst}")
                item[f"original_{role}"] = item[role]
                item[role] = str(dst)
            new_items.append(item)
        out[modality] = new_items
    return out


def tiny_sample_dataset(sample_dir: str | os.PathLike, out_dir: str | os.PathLike, copies: int = 2) -> str:
    """A tiny k-fold dataset from the bundle's sample (one CT, one MR): ``copies`` reoriented copies
    of each (RAS as it is, then LAS, LPS, ...: the same anatomy in other array orders, read through
    their affines). MR copies alternate between two ``domain`` names, for the DAL task. Returns the
    datalist path (no folds: the experiment command assigns them)."""
    import nibabel as nib

    sample = Path(sample_dir)
    out = Path(out_dir)
    orientations = ["RAS", "LAS", "LPS", "RPS", "LAI"]
    data: dict = {"name": "tiny-sample", "ct": [], "mr": []}
    for modality, case in (("ct", "totalseg_ct_sm"), ("mr", "totalseg_mr_sm")):
        (out / modality).mkdir(parents=True, exist_ok=True)
        for k in range(copies):
            item = {"id": f"{case}_{k}"}
            for role in ("image", "label"):
                src = nib.load(str(sample / modality / f"{case}_{role}.nii.gz"))
                target = nib.orientations.axcodes2ornt(tuple(orientations[k % len(orientations)]))
                xform = nib.orientations.ornt_transform(nib.orientations.io_orientation(src.affine), target)
                img = src.as_reoriented(xform)
                path = out / modality / f"{case}_{k}_{role}.nii.gz"
                nib.save(img, str(path))
                item[role] = str(path)
            if modality == "mr":
                item["domain"] = ["T1-like A", "T1-like B"][k % 2]
            data[modality].append(item)
    return write_datalist(data, out / "datalist.json")
