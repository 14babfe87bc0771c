"""Inference inputs as a datalist: what the user named (``input``, or the model zoo's ``dataset_dir``
and ``datalist``) turned into the items ``configs/inference.yaml`` segments, and their case names.

``input`` may be one image file (NIfTI, NRRD, MetaImage...), a DICOM series folder, a folder of
image files or of DICOM series folders, a JSON datalist, or an already built list; every item
becomes a dict ``{"image": path, ...}`` as MONAI's ``Dataset`` expects.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["IMAGE_SUFFIXES", "case_name", "list_inputs", "select_inputs"]

logger = logging.getLogger(__name__)

#: file names that are read as one image each (ITK or nibabel); anything else in a folder is taken
#: to be part of a DICOM series.
IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
_SKIP = (".json", ".txt", ".md", ".csv", ".zip", ".yaml", ".yml")


def case_name(path: str) -> str:
    """``/a/b/case_01.nii.gz`` -> ``case_01``; a DICOM folder keeps its folder name."""
    name = os.path.basename(os.path.normpath(str(path)))
    for ext in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def _is_image_file(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES)


def _is_dicom_folder(path: Path) -> bool:
    """A folder holding files that are neither image files nor obvious non-images: a DICOM series."""
    if not path.is_dir():
        return False
    files = [f for f in path.iterdir() if f.is_file() and not f.name.startswith(".")]
    return bool(files) and not any(_is_image_file(f) or f.name.lower().endswith(_SKIP) for f in files)


def _folder_items(folder: Path) -> list[str]:
    if _is_dicom_folder(folder):
        return [str(folder)]
    items = [str(f) for f in sorted(folder.iterdir()) if _is_image_file(f)]
    items += [str(d) for d in sorted(folder.iterdir()) if _is_dicom_folder(d)]
    return items


def _resolve(item: Any, base_dir: Path | None, keys: Sequence[str]) -> dict:
    """``item`` (a path or a dict) as a dict whose ``keys`` are absolute paths where they were relative."""
    d = {"image": item} if isinstance(item, (str, os.PathLike)) else dict(item)
    for k in keys:
        v = d.get(k)
        if isinstance(v, (str, os.PathLike)) and base_dir is not None and not os.path.isabs(v):
            d[k] = str(base_dir / v)
        elif isinstance(v, os.PathLike):
            d[k] = str(v)
    return d


def list_inputs(
    input: Any,
    datalist_key: str = "testing",
    require_label: bool = False,
    base_dir: str | None = None,
    path_keys: Sequence[str] = ("image", "label"),
) -> list[dict]:
    """The datalist of ``input``: ``[{"image": path, ...}, ...]``.

    Args:
        input: an image file; a DICOM series folder (a folder whose files are not image files); a
            folder of image files and/or DICOM series folders (each one case, sorted by name); a JSON
            datalist (a list of paths or dicts, or a dict of such lists: the project's datalist with
            ``ct``/``mr``/``mr_test`` lists, see :mod:`custom.data`, or MONAI's decathlon format); or
            a list/tuple of paths and dicts (or one dict).
        datalist_key: the list to read from a JSON dict (``"mr"``, ``"mr_test"``, ``"validation"``...).
            A dict without that key but with exactly one list is read from that list. A top-level
            ``liver_value`` of the dict is given to the items that have none.
        require_label: every item must have a ``label`` (evaluation).
        base_dir: folder that relative paths are relative to (default: the JSON's folder, else as is).
        path_keys: the item keys that hold paths.

    Raises:
        FileNotFoundError: ``input`` does not exist (the files of a list are checked, all at once, by
            :class:`custom.handlers.InputCheck`).
        ValueError: an empty datalist, or a missing label where ``require_label``.
    """
    base = Path(base_dir) if base_dir else None
    items: list
    if isinstance(input, Mapping):
        items = [input]
    elif isinstance(input, (list, tuple)):
        items = list(input)
    else:
        path = Path(os.path.expanduser(str(input)))
        if not path.exists():
            raise FileNotFoundError(f"inference input {str(path)!r} does not exist.")
        if path.is_dir():
            items = _folder_items(path)
        elif path.name.lower().endswith(".json"):
            with open(path) as f:
                content = json.load(f)
            base = base or path.parent
            if isinstance(content, Mapping):
                lists = {k: v for k, v in content.items() if isinstance(v, list)}
                if datalist_key in lists:
                    items = lists[datalist_key]
                elif len(lists) == 1:
                    items = next(iter(lists.values()))
                else:
                    raise ValueError(f"datalist {str(path)!r} has no list {datalist_key!r} (lists: {sorted(lists)}).")
                if content.get("liver_value") is not None:  # the project's datalist: one value for all items
                    items = [i if not isinstance(i, Mapping) else {"liver_value": content["liver_value"], **i} for i in items]
            else:
                items = list(content)
        else:
            items = [str(path)]
    data = [_resolve(i, base, path_keys) for i in items]
    if not data:
        raise ValueError(f"no images found in inference input {input!r}.")
    for d in data:
        if "image" not in d:
            raise ValueError(f"datalist item {d!r} has no 'image'.")
        if require_label and d.get("label") is None:
            raise ValueError(f"datalist item {d['image']!r} has no 'label' to evaluate against.")
    return data


def select_inputs(
    input: Any = None,
    dataset_dir: str | os.PathLike | None = None,
    datalist: Any = None,
    default: Any = None,
    datalist_key: str = "testing",
    require_label: bool = False,
) -> list[dict]:
    """The datalist of what the user named, in one of two ways, never both, so that a run cannot
    segment something else (as ``--dataset_dir`` once silently segmented the embedded sample):

    - ``input``: see :func:`list_inputs`;
    - the MONAI model zoo's ids: ``datalist`` (a JSON datalist or a list), its relative paths taken
      from ``dataset_dir`` when given (else from the JSON's folder); or ``dataset_dir`` alone, a
      folder whose images (and DICOM series folders) are the cases.

    With none of them, ``default`` (the embedded sample), said in the log. ``datalist_key`` and
    ``require_label`` are :func:`list_inputs`'s.
    """
    named = {k: v for k, v in (("input", input), ("dataset_dir", dataset_dir), ("datalist", datalist)) if v is not None}
    if input is not None and len(named) > 1:
        raise ValueError(
            f"inference inputs named twice: {named}; give either 'input' or the model zoo's "
            "'dataset_dir' (a folder of images) and/or 'datalist' (a datalist JSON), not both."
        )
    if dataset_dir is not None and not os.path.isdir(os.path.expanduser(str(dataset_dir))):
        raise NotADirectoryError(f"dataset_dir {os.path.abspath(str(dataset_dir))!r} is not a folder.")
    if datalist is not None:
        return list_inputs(datalist, datalist_key, require_label, base_dir=None if dataset_dir is None else str(dataset_dir))
    if dataset_dir is not None:
        return list_inputs(dataset_dir, datalist_key, require_label)
    if input is None:
        if default is None:
            raise ValueError("no inference input: give 'input', or 'dataset_dir' and/or 'datalist'.")
        logger.info(f"no input, dataset_dir or datalist given: segmenting the default input {default}")
        input = default
    return list_inputs(input, datalist_key, require_label)
