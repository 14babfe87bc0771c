"""Pseudo-labels for self-training: a trained model's own masks of the unlabelled MR, used as labels.

Domain adaptation has no MR label; a trained DALACE, though, segments the MR training images better
through both paths (``extra_paths``) than its MR path alone does. Writing those masks once with
``configs/inference.yaml`` (N4, both paths, largest component, in each image's geometry) and letting
them supervise MR's path, as labels do in joint learning, hands that gain on to the MR path
(``configs/self_training.yaml``). The masks stay on disk, where a user can look at them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from custom.utils import atomic_write_text

from .inputs import case_name

__all__ = ["pseudo_label_path", "pseudo_labelled"]

logger = logging.getLogger(__name__)


#: what ``label_dir`` records of the teacher that wrote its masks
TEACHER_RECORD = "teacher.json"


#: inference overrides that do not change the masks (left out of the record's comparison): where the
#: checkpoint is, workers, and the precision (the shipped model's bfloat16 and float32 masks of the 12
#: CHAOS T2 differed by under 0.001 Dice per case)
_NOT_MASK_SETTINGS = ("ckpt_path", "num_workers", "amp")


def _mask_settings(overrides: Mapping[str, Any] | None) -> dict:
    """The teacher inference's overrides that shape its masks (sizes, paths, postprocessing such as
    ``bridge_radius_mm``), as JSON values."""
    return json.loads(json.dumps({k: v for k, v in (overrides or {}).items() if k not in _NOT_MASK_SETTINGS}, default=str))


def _teacher_record(ckpt: str, overrides: Mapping[str, Any] | None = None) -> dict:
    with open(ckpt, "rb") as f:
        return {"checkpoint": os.path.abspath(ckpt), "sha256": hashlib.sha256(f.read()).hexdigest(),
                "inference": _mask_settings(overrides)}


def _check_same_teacher(label_dir: str | os.PathLike, ckpt: str, existing: list[str], overrides: Mapping[str, Any] | None = None) -> None:
    """Masks in ``label_dir`` are reused only when written by this teacher (its checkpoint's sha256)
    with these inference settings (e.g. another ``bridge_radius_mm``): other masks would train the
    student silently on the wrong labels. Masks without a record (put there by hand) are reused, and
    said so in the log."""
    if not existing:
        return
    record_file = os.path.join(str(label_dir), TEACHER_RECORD)
    if not os.path.isfile(record_file):
        logger.warning(f"pseudo-labels: reusing {len(existing)} masks in {os.path.abspath(str(label_dir))} that no teacher record names")
        return
    with open(record_file) as f:
        before = json.load(f)
    if os.path.isfile(ckpt) and before.get("sha256") != _teacher_record(ckpt)["sha256"]:
        raise ValueError(
            f"pseudo-labels: the {len(existing)} masks in {os.path.abspath(str(label_dir))} were written by the teacher "
            f"{before.get('checkpoint')!r}, not by {os.path.abspath(ckpt)!r} (another sha256). Delete them, or set "
            "pseudo_label_dir (or output_dir) to another folder."
        )
    now = _mask_settings(overrides)
    if "inference" in before and before["inference"] != now:
        then = before["inference"]
        differ = ", ".join(f"{k}: {then.get(k)!r} then, {now.get(k)!r} now" for k in sorted(set(then) | set(now)) if then.get(k) != now.get(k))
        raise ValueError(
            f"pseudo-labels: the {len(existing)} masks in {os.path.abspath(str(label_dir))} were written with other "
            f"inference settings ({differ}). "
            "Delete them, or set pseudo_label_dir (or output_dir) to another folder."
        )
    logger.info(f"pseudo-labels: reusing {len(existing)} masks in {os.path.abspath(str(label_dir))} written by this teacher")


def pseudo_label_path(image: str, label_dir: str | os.PathLike) -> str:
    """Where inference.yaml writes the mask of ``image`` when its ``output_dir`` is ``label_dir``."""
    return os.path.join(str(label_dir), f"{case_name(image)}_seg.nii.gz")


def pseudo_labelled(
    items: Sequence[dict],
    label_dir: str | os.PathLike,
    models_dir: str | os.PathLike,
    inference_config: str | os.PathLike | Sequence[str],
    overrides: Mapping[str, Any] | None = None,
) -> list[dict]:
    """``items`` (unlabelled MR) with ``label`` set to the teacher's mask of each image.

    Masks already in ``label_dir`` are reused (a resumed or repeated run does not segment again, and
    a user may correct them there) unless another teacher wrote them (``teacher.json``, the sha256
    of its checkpoint, is written beside them); the others are written first, in one run of
    ``inference_config`` with ``models_dir`` (the teacher's ``model.pt``) and ``overrides`` (the
    training config's sizes and preprocessing, so that the teacher is built as it was trained).

    Raises:
        ValueError: two images share a case name (their masks would overwrite each other), or the
            masks there are another teacher's.
        FileNotFoundError: masks are missing and so is the teacher's checkpoint (``overrides["ckpt_path"]``,
            else ``models_dir/model.pt``), or a mask is still missing after the inference run.
    """
    items = [dict(i) for i in items]
    paths = [pseudo_label_path(i["image"], label_dir) for i in items]
    seen: dict[str, str] = {}
    for item, path in zip(items, paths):
        if path in seen and seen[path] != item["image"]:
            raise ValueError(
                f"pseudo-labels: {seen[path]!r} and {item['image']!r} share the case name {case_name(item['image'])!r}; "
                "their masks would be the same file. Rename one of them."
            )
        seen[path] = item["image"]
    teacher = str((overrides or {}).get("ckpt_path") or os.path.join(str(models_dir), "model.pt"))
    _check_same_teacher(label_dir, teacher, [p for p in paths if os.path.isfile(p)], overrides)
    missing = [item for item, path in zip(items, paths) if not os.path.isfile(path)]
    if missing:
        if not os.path.isfile(teacher):
            raise FileNotFoundError(
                f"pseudo-labels: the teacher's checkpoint {os.path.abspath(teacher)!r} is not a file, and "
                f"{len(missing)} MR training images have no mask in {os.path.abspath(str(label_dir))} yet "
                f"(first: {missing[0]['image']!r}). Train the teacher first (configs/train.yaml) or set teacher_dir."
            )
        from monai.bundle import run  # local: a bundle run only when masks are to be written

        logger.info(
            f"pseudo-labels: segmenting {len(missing)} of {len(items)} MR training images with the teacher in "
            f"{os.path.abspath(str(models_dir))} into {os.path.abspath(str(label_dir))}"
        )
        atomic_write_text(os.path.join(str(label_dir), TEACHER_RECORD), json.dumps(_teacher_record(teacher, overrides), indent=2) + "\n")
        run(
            "run",
            config_file=inference_config,
            input=[{"image": item["image"]} for item in missing],
            output_dir=str(label_dir),
            models_dir=str(models_dir),
            modality="mr",
            **dict(overrides or {}),
        )
    still = [path for path in paths if not os.path.isfile(path)]
    if still:
        raise FileNotFoundError(f"pseudo-labels: the teacher's inference wrote no mask {still} (see its log above).")
    return [dict(item, label=path, liver_value=1) for item, path in zip(items, paths)]
