"""The DALACE datalist: one hand-writable JSON file, in MONAI's decathlon style, for CT and MR.

Format (paths relative to ``dataset_dir``, by default the folder holding the JSON file)::

    {
      "name": "...", "description": "...",             # free text, optional
      "liver_value": 1,                                 # optional default for every label (see below)
      "ct": [                                           # labelled CT: the source domain
        {"image": "ct/a_image.nii.gz", "label": "ct/a_label.nii.gz", "fold": 0, "id": "a"}
      ],
      "mr": [                                           # MR: the target domain, labels optional
        {"image": "mr/b_image.nii.gz", "label": "mr/b_label.nii.gz", "domain": "T2-SPIR", "fold": 3},
        {"image": "mr/c_dicom_folder"}
      ],
      "mr_test": [ ... ]                                # optional: MR never used in training or tuning
    }

- ``image``/``label``: NIfTI, NRRD, MHA or a DICOM series folder (whatever MONAI's ``LoadImage``
  reads). A label is 1 for liver and 0 elsewhere, unless the item (or the file) declares
  ``liver_value``: then voxels equal to it are the liver and every other value is background.
- ``fold``: the cross-validation fold (integer); ``python -m custom.data folds`` writes them.
- ``domain``: free text (sequence or phase), only for reporting; training never needs it.
- ``id``: optional; defaults to the image file name without extension.
- ``<modality>_test`` (``ct_test``, ``mr_test``): optional lists held out from every fold, read with
  ``role="test"``. They exist so that a final evaluation set can sit in the same file without any
  risk of entering training through a fold setting.

Roles (:func:`datalist_items`): with ``fold=k``, ``"train"`` is every item whose fold is not ``k``
(items without a fold always train) and ``"val"`` the items of fold ``k``; with ``fold=None`` both are
all items, which is the transductive domain-adaptation setting (MR images are seen unlabelled in
training and their labels only in evaluation). ``"all"`` is every item, ``"test"`` the ``_test`` list.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from monai.data import load_decathlon_datalist

from .errors import DatalistError

__all__ = ["MODALITIES", "ROLES", "read_datalist_json", "resolve_items", "select_items", "datalist_items"]

MODALITIES = ("ct", "mr")
ROLES = ("train", "val", "all", "test")
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def read_datalist_json(datalist_file: str | os.PathLike) -> dict:
    """Read a datalist file, turning a missing file or malformed JSON into a :class:`DatalistError`."""
    path = Path(datalist_file)
    if not path.is_file():
        raise DatalistError([f"{path}: datalist file not found"])
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DatalistError([f"{path}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}"]) from e
    except UnicodeDecodeError as e:
        raise DatalistError([f"{path}: not a text (JSON) file: {e}"]) from e
    if not isinstance(data, dict):
        raise DatalistError([f"{path}: the top level must be a JSON object with keys such as 'ct' and 'mr'"])
    return data


def default_id(image_path: str) -> str:
    """An item's id when the datalist gives none: the image file (or DICOM folder) name, no suffix."""
    name = Path(str(image_path).rstrip("/")).name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def resolve_items(items: Sequence[dict], dataset_dir: str | os.PathLike) -> list[dict]:
    """Items with ``image``/``label`` joined to ``dataset_dir`` (absolute paths are kept), as MONAI's loader does."""
    out = []
    for item in items:
        item = dict(item)
        for key in ("image", "label"):
            if isinstance(item.get(key), str):
                item[key] = os.path.normpath(os.path.join(str(dataset_dir), item[key]))
        out.append(item)
    return out


def _normalized(items: list[dict], default_liver_value, require_labels: bool) -> list[dict]:
    """Give every item the same keys, so that MONAI's collate can batch items of different origins."""
    out = []
    for item in items:
        new = {"image": item["image"]}
        if require_labels:
            new["label"] = item["label"]
            new["liver_value"] = item.get("liver_value", default_liver_value)
        new["id"] = str(item.get("id", default_id(item["image"])))
        new["domain"] = str(item.get("domain", ""))
        new["fold"] = int(item["fold"]) if item.get("fold") is not None else -1
        out.append(new)
    return out


def select_items(items: Sequence[dict], fold: int | None = None, role: str = "train", labelled: bool = False) -> list[dict]:
    """The items of ``role`` with fold ``fold`` held out (module docstring: ``"train"`` leaves fold ``k``
    out, ``"val"`` is fold ``k``, both are every item when ``fold`` is None; other roles keep all), only
    the labelled ones when ``labelled``. What :func:`datalist_items` selects, for datalists in memory."""
    if role == "train" and fold is not None:
        items = [i for i in items if i.get("fold") is None or int(i["fold"]) != int(fold)]
    elif role == "val" and fold is not None:
        items = [i for i in items if i.get("fold") is not None and int(i["fold"]) == int(fold)]
    return [i for i in items if i.get("label")] if labelled else list(items)


_VALIDATED: set[tuple] = set()  # whole datalists that passed validate_datalist in this process


def datalist_items(
    datalist_file: str | os.PathLike,
    dataset_dir: str | os.PathLike | None = None,
    modality: str = "ct",
    fold: int | None = None,
    role: str = "train",
    require_labels: bool = False,
    validate: bool = True,
    allow_2d: bool = False,
    allow_empty: bool = False,
) -> list[dict]:
    """The items of one modality for one role, ready for a MONAI dataset (used from the bundle configs).

    Args:
        datalist_file: the datalist JSON (format in this module's docstring).
        dataset_dir: folder the paths are relative to; by default the datalist's folder.
        modality: ``"ct"`` or ``"mr"``.
        fold: held-out fold ``k`` or None for no held-out fold (see the module docstring).
        role: ``"train"``, ``"val"``, ``"all"`` or ``"test"``.
        require_labels: items with ``label`` and ``liver_value``; MR keeps only its labelled items, while
            every CT item must be labelled (an unlabelled one is an error naming it). When False the
            items carry no ``label`` at all, so that an unsupervised stream cannot use MR labels.
        validate: check the whole datalist first with :func:`custom.data.validate_datalist`, as
            ``python -m custom.data validate`` does: every list and file, all problems in one error.
        allow_2d: accept 2D images in that check.
        allow_empty: return ``[]`` when no item is left (optional roles, such as validation on labelled
            MR in the DA task, whose MR usually has no label at all).

    Every item has ``image``, ``id``, ``domain`` and ``fold`` (-1 when unset), plus ``label`` and
    ``liver_value`` when ``require_labels``. Raises :class:`DatalistError` when nothing is left.
    """
    from .validation import validate_datalist  # local: validation imports this module

    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}.")
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}.")
    data = read_datalist_json(datalist_file)
    key = f"{modality}_test" if role == "test" else modality
    if not data.get(key):
        if allow_empty:
            return []
        raise DatalistError([f"{datalist_file}: no items under '{key}' (empty modality list)"])
    items = load_decathlon_datalist(
        str(datalist_file), is_segmentation=True, data_list_key=key, base_dir=None if dataset_dir is None else str(dataset_dir)
    )
    # unlabelled MR is normal; unlabelled CT is a mistake, reported below
    items = select_items(items, fold, role, labelled=require_labels and modality != "ct")
    if not items:
        if allow_empty:
            return []
        what = "labelled " if require_labels else ""
        raise DatalistError([f"{datalist_file}: no {what}'{key}' items for role '{role}' with fold {fold}"])
    if validate:  # the whole datalist, not only this role's items: every problem in one error
        # once per process and datalist version: a config asks for its CT, MR and validation items
        checked = (str(Path(datalist_file).resolve()), str(dataset_dir), allow_2d, Path(datalist_file).stat().st_mtime_ns)
        if checked not in _VALIDATED:
            validate_datalist(datalist_file, dataset_dir, allow_2d=allow_2d)
            _VALIDATED.add(checked)
    unlabelled = [i["image"] for i in items if require_labels and not i.get("label")]
    if unlabelled:
        raise DatalistError([f"{image}: no 'label' given ('{key}' items must be labelled)" for image in unlabelled])
    return _normalized(items, data.get("liver_value", 1), require_labels)
