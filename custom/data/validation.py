"""Check a datalist and every file it names before training starts.

A broken file otherwise surfaces hours into training, deep inside a data loader worker. Here each
file is read once with MONAI's ``LoadImage`` (the reader the pipeline uses), and every problem is
collected into one :class:`DatalistError`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from monai.data import MetaTensor
from monai.transforms import LoadImage, Orientation

from .datalist import MODALITIES, read_datalist_json, resolve_items
from .errors import DatalistError

__all__ = ["read_image", "validate_datalist", "validate_items"]

_loader = LoadImage(image_only=True, dtype=None)
_ras = Orientation(axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))
_VALIDATED: set = set()  # items already found valid in this process, keyed with file times


def _short(e: Exception) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {msg[:200]}"


def read_image(path: str, problems: list[str], allow_2d: bool = False, single_channel: bool = False):
    """The image as an array with its affine, or None after recording in ``problems`` why it is unusable.

    With ``single_channel`` a 4D image of one channel (as some converters write a volume) is accepted
    and returned as 3D; the check every consumer of these files needs, training's and inference's alike.
    """
    if not os.path.exists(path):
        problems.append(f"{path}: missing file")
        return None
    try:
        img = _loader(path)
    except Exception as e:  # any reader failure means unreadable
        problems.append(f"{path}: unreadable ({_short(e)})")
        return None
    channel_dim = img.meta.get("original_channel_dim")
    if single_channel and img.ndim == 4 and isinstance(channel_dim, int) and img.shape[channel_dim] == 1:
        img = img.squeeze(channel_dim)
    dims = (2, 3) if allow_2d else (3,)
    if img.ndim not in dims:
        expected = " or ".join(f"{d}D" for d in dims) + (" or single-channel 4D" if single_channel else "")
        problems.append(f"{path}: {img.ndim}D image of shape {tuple(img.shape)}, expected {expected}")
        return None
    arr = img.numpy()
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        problems.append(f"{path}: {bad} non-finite values (NaN or inf)")
        return None
    return img


def _check_label(path: str, label, liver_value, problems: list[str]) -> None:
    values = np.unique(label.numpy())
    if not np.all(values == np.round(values)):
        problems.append(f"{path}: label has non-integer values (e.g. {values[values != np.round(values)][:3].tolist()})")
        return
    if float(liver_value) == 1 and not set(values.tolist()) <= {0, 1}:
        problems.append(
            f"{path}: label values {values[:10].tolist()} are not 0/1 (declare 'liver_value' if the liver is another value)"
        )
    elif float(liver_value) not in set(values.tolist()) and (label.ndim == 3 or float(liver_value) != 1):
        # a 2D slice may miss the liver; a volume without it, or without a declared value, is a mistake
        problems.append(f"{path}: label has no liver voxels (no value {liver_value}; values {values[:10].tolist()})")


def _world_grid(img):
    """Shape and voxel-to-world affine after reorienting to RAS, so that the storage order does not matter."""
    affine = np.asarray(img.affine, dtype=np.float64)
    arr = img.as_tensor()
    while arr.ndim < affine.shape[0] - 1:  # a 2D image with a 3D affine: one slice of a volume
        arr = arr[..., None]
    x = _ras(MetaTensor(arr[None], affine=affine))
    return tuple(x.shape[1:]), np.asarray(x.affine, dtype=np.float64)


def _check_geometry(image_path: str, image, label_path: str, label, tolerance: float, problems: list[str]) -> None:
    if image.ndim != label.ndim:
        problems.append(f"{label_path}: label is {label.ndim}D but its image {image_path} is {image.ndim}D")
        return
    (s_img, a_img), (s_lab, a_lab) = _world_grid(image), _world_grid(label)
    if s_img != s_lab:
        problems.append(f"{label_path}: label grid {s_lab} does not match image {image_path} grid {s_img} (in RAS order)")
        return
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in s_img], indexing="ij")).reshape(len(s_img), -1)
    corners = np.vstack([corners, np.ones(corners.shape[1])])
    dist = np.linalg.norm((a_img @ corners - a_lab @ corners)[:-1], axis=0).max()
    spacing = np.linalg.norm(a_img[:-1, :-1], axis=0).min()
    if dist > tolerance * spacing:
        problems.append(
            f"{label_path}: label is not in the same place as image {image_path} "
            f"(corners up to {dist:.3g} mm apart, tolerance {tolerance * spacing:.3g} mm)"
        )


def _item_key(item: Mapping, allow_2d: bool, tolerance: float):
    files = [item.get("image"), item.get("label")]
    times = tuple(os.path.getmtime(f) if isinstance(f, str) and os.path.exists(f) else None for f in files)
    return (tuple(files), times, item.get("liver_value", 1), allow_2d, tolerance)


def validate_items(
    lists: Mapping[str, Sequence[Mapping]],
    require_labels: Sequence[str] = (),
    allow_2d: bool = False,
    geometry_tolerance: float = 0.01,
    source: str = "datalist",
) -> None:
    """Check lists of items whose paths are already resolved; raise one :class:`DatalistError` for all problems.

    Args:
        lists: modality key (``"ct"``, ``"mr_test"``, ...) -> items with ``image`` and optional ``label``.
        require_labels: keys whose items must all have a label.
        allow_2d: accept 2D images (and labels) besides 3D.
        geometry_tolerance: how far image and label corners may be apart, in voxels (world coordinates).
        source: names the datalist in messages about the list itself.
    """
    problems: list[str] = []
    reads: dict = {}  # path -> (image or None, its problems): a file listed twice is read and reported once

    def read(path: str):
        if path not in reads:
            found: list[str] = []
            reads[path] = (read_image(path, found, allow_2d), found)
            problems.extend(found)
        return reads[path][0]

    for key, items in lists.items():
        if not isinstance(items, (list, tuple)) or len(items) == 0:
            problems.append(f"{source}: '{key}' is an empty modality list")
            continue
        for n, item in enumerate(items):
            where = f"{source}: '{key}' item {n}"
            if not isinstance(item, Mapping) or not isinstance(item.get("image"), str):
                problems.append(f"{where}: needs an 'image' path")
                continue
            if key in require_labels and not item.get("label"):
                problems.append(f"{item['image']}: no 'label' given ('{key}' items must be labelled)")
            if item.get("fold") is not None and not isinstance(item["fold"], int):
                problems.append(f"{item['image']}: 'fold' must be an integer, got {item['fold']!r}")
            liver_value = item.get("liver_value", 1)
            if not isinstance(liver_value, (int, float)) or isinstance(liver_value, bool):
                problems.append(f"{item['image']}: 'liver_value' must be a number, got {liver_value!r}")
                liver_value = 1
            cache_key = _item_key(item, allow_2d, geometry_tolerance)
            if cache_key in _VALIDATED:
                continue
            n_before = len(problems)
            image = read(item["image"])
            label = None
            if isinstance(item.get("label"), str):
                label = read(item["label"])
                if label is not None:
                    _check_label(item["label"], label, liver_value, problems)
            if image is not None and label is not None:
                _check_geometry(item["image"], image, item["label"], label, geometry_tolerance, problems)
            bad_files = any(reads[f][1] for f in (item["image"], item.get("label")) if f in reads)
            if len(problems) == n_before and not bad_files:
                _VALIDATED.add(cache_key)
    if problems:
        raise DatalistError(list(dict.fromkeys(problems)))


def validate_datalist(
    datalist: str | os.PathLike | Mapping,
    dataset_dir: str | os.PathLike | None = None,
    modalities: Sequence[str] = MODALITIES,
    require_labels: Sequence[str] = ("ct",),
    allow_2d: bool = False,
    geometry_tolerance: float = 0.01,
) -> dict:
    """Check a whole datalist (file or dict) and its files; return it with resolved paths, or raise.

    Args:
        datalist: path of the JSON file, or its content as a dict.
        dataset_dir: folder the paths are relative to; by default the JSON file's folder (required for a dict).
        modalities: lists that must be present and non-empty. ``<modality>_test`` lists are checked when present.
        require_labels: modalities whose items must all be labelled (labelled CT is the source domain).
        allow_2d, geometry_tolerance: see :func:`validate_items`.

    Checks: the JSON parses; each list is non-empty; every file exists and reads (NIfTI, NRRD, DICOM
    series folder, ...); is 3D (or 2D when allowed); has only finite values; labels are 0/1 (or
    contain the declared ``liver_value``); image and label cover the same voxels in world coordinates.
    Raises :class:`DatalistError` (a ``ValueError``) listing every problem with its file.
    """
    if isinstance(datalist, Mapping):
        data, source = dict(datalist), "datalist"
        if dataset_dir is None:
            raise ValueError("dataset_dir is required when the datalist is given as a dict.")
    else:
        data, source = read_datalist_json(datalist), str(datalist)
        dataset_dir = Path(datalist).parent if dataset_dir is None else dataset_dir
    default_liver = data.get("liver_value", 1)
    lists = {}
    for key in [*modalities, *(f"{m}_test" for m in MODALITIES)]:
        if key not in data and key not in modalities:
            continue
        items = data.get(key) or []
        if isinstance(items, list):  # resolve paths item by item, keeping malformed items for the report
            items = [
                resolve_items([{"liver_value": default_liver, **i}], dataset_dir)[0] if isinstance(i, dict) else i
                for i in items
            ]
        lists[key] = items
    required = [*require_labels, *(f"{m}_test" for m in require_labels)]
    validate_items(lists, require_labels=required, allow_2d=allow_2d, geometry_tolerance=geometry_tolerance, source=source)
    return {**data, **lists}
