"""Pseudo-labels for self-training: a trained model's own masks of the unlabelled MR, used as labels.

Domain adaptation has no MR label; a trained DALACE, though, segments the MR training images better
through both paths (``extra_paths``) than its MR path alone does. Writing those masks once with
``configs/inference.yaml`` (N4, both paths, largest component, in each image's geometry) and letting
them supervise MR's path, as labels do in joint learning, hands that gain on to the MR path
(``configs/self_training.yaml``). The masks stay on disk, where a user can look at them.

Co-teachers (``co_teachers``): other trained models, e.g. the CT-only U-Net trained with the
appearance augmentation, whose class probabilities are averaged with the teacher's before the mask is
taken. Both over-segment MR, but mostly in different volumes and voxels, so their average segments
it better than either (``docs/README.md``, Performance).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.transforms import KeepLargestConnectedComponent

from custom.utils import atomic_path, atomic_write_text

from .inputs import case_name

__all__ = ["average_probabilities", "pseudo_label_path", "pseudo_labelled"]

logger = logging.getLogger(__name__)


#: what ``label_dir`` records of the teacher that wrote its masks
TEACHER_RECORD = "teacher.json"
#: where, under ``label_dir``, each teacher writes its probabilities when co-teachers join it
PROBABILITY_DIR = "probabilities"


def _teacher_record(ckpt: str, co_ckpts: Sequence[str] = ()) -> dict:
    def digest(path: str) -> str:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()

    record = {"checkpoint": os.path.abspath(ckpt), "sha256": digest(ckpt)}
    if co_ckpts:
        record["co_teachers"] = [{"checkpoint": os.path.abspath(c), "sha256": digest(c)} for c in co_ckpts]
    return record


def _checkpoint_of(models_dir: str | os.PathLike, overrides: Mapping[str, Any] | None) -> str:
    return str((overrides or {}).get("ckpt_path") or os.path.join(str(models_dir), "model.pt"))


def _check_same_teacher(label_dir: str | os.PathLike, ckpt: str, existing: list[str], co_ckpts: Sequence[str] = ()) -> None:
    """Masks in ``label_dir`` are reused only when written by this teacher and these co-teachers (their
    checkpoints' sha256): masks of another teacher would train the student silently on the wrong
    labels. Masks without a record (put there by hand) are reused, and said so in the log."""
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
    before_co = [c.get("sha256") for c in before.get("co_teachers", [])]
    if all(os.path.isfile(c) for c in co_ckpts) and before_co != [_teacher_record(c)["sha256"] for c in co_ckpts]:
        raise ValueError(
            f"pseudo-labels: the {len(existing)} masks in {os.path.abspath(str(label_dir))} were written with the co-teachers "
            f"{[c.get('checkpoint') for c in before.get('co_teachers', [])]}, not with {[os.path.abspath(c) for c in co_ckpts]}. "
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
    co_teachers: Sequence[Mapping[str, Any]] = (),
) -> list[dict]:
    """``items`` (unlabelled MR) with ``label`` set to the teacher's mask of each image.

    Masks already in ``label_dir`` are reused (a resumed or repeated run does not segment again, and
    a user may correct them there) unless another teacher wrote them (``teacher.json``, the sha256
    of its checkpoint, is written beside them); the others are written first, in one run of
    ``inference_config`` with ``models_dir`` (the teacher's ``model.pt``) and ``overrides`` (the
    training config's sizes and preprocessing, so that the teacher is built as it was trained).

    ``co_teachers``: other models, each ``{"config": <inference config(s)>, "overrides": {...,
    "ckpt_path": <its weights>}}``; each model then writes its probabilities under
    ``label_dir/probabilities/<i>/`` and the mask is the argmax of their average (its largest
    component unless ``overrides["largest_component"]`` is false).

    Raises:
        ValueError: two images share a case name (their masks would overwrite each other), the
            masks there are another teacher's, or a co-teacher names no ``ckpt_path``.
        FileNotFoundError: masks are missing and so is a teacher's checkpoint (``overrides["ckpt_path"]``,
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
    for i, co in enumerate(co_teachers):
        if not (co.get("overrides") or {}).get("ckpt_path"):
            raise ValueError(f"pseudo-labels: co-teacher {i} names no overrides['ckpt_path'] (its weights): {dict(co)!r}")
    teacher = _checkpoint_of(models_dir, overrides)
    co_ckpts = [str(co["overrides"]["ckpt_path"]) for co in co_teachers]
    _check_same_teacher(label_dir, teacher, [p for p in paths if os.path.isfile(p)], co_ckpts)
    missing = [item for item, path in zip(items, paths) if not os.path.isfile(path)]
    if missing:
        for what, ckpt in [("teacher", teacher)] + [(f"co-teacher {i}", c) for i, c in enumerate(co_ckpts)]:
            if not os.path.isfile(ckpt):
                raise FileNotFoundError(
                    f"pseudo-labels: the {what}'s checkpoint {os.path.abspath(ckpt)!r} is not a file, and "
                    f"{len(missing)} MR training images have no mask in {os.path.abspath(str(label_dir))} yet "
                    f"(first: {missing[0]['image']!r}). Train it first (configs/train.yaml) or set teacher_dir."
                )
        logger.info(
            f"pseudo-labels: segmenting {len(missing)} of {len(items)} MR training images with the teacher in "
            f"{os.path.abspath(str(models_dir))}" + (f" and {len(co_ckpts)} co-teacher(s)" if co_ckpts else "")
            + f" into {os.path.abspath(str(label_dir))}"
        )
        atomic_write_text(os.path.join(str(label_dir), TEACHER_RECORD), json.dumps(_teacher_record(teacher, co_ckpts), indent=2) + "\n")
        if not co_teachers:
            _segment(missing, inference_config, str(label_dir), models_dir, overrides)
        else:
            teachers = [{"config": inference_config, "overrides": overrides}, *co_teachers]
            prob_dirs = [os.path.join(str(label_dir), PROBABILITY_DIR, str(i)) for i in range(len(teachers))]
            for t, prob_dir in zip(teachers, prob_dirs):
                _segment(missing, t["config"], prob_dir, models_dir, {**dict(t.get("overrides") or {}), "save_probabilities": True})
            largest = bool((overrides or {}).get("largest_component", True))
            for item in missing:
                average_probabilities(
                    [pseudo_label_path(item["image"], d).replace("_seg.nii.gz", "_prob.nii.gz") for d in prob_dirs],
                    pseudo_label_path(item["image"], label_dir),
                    largest,
                )
    still = [path for path in paths if not os.path.isfile(path)]
    if still:
        raise FileNotFoundError(f"pseudo-labels: the teacher's inference wrote no mask {still} (see its log above).")
    return [dict(item, label=path, liver_value=1) for item, path in zip(items, paths)]


def _segment(items: Sequence[dict], config, output_dir: str, models_dir, overrides: Mapping[str, Any] | None) -> None:
    """One bundle run of the inference config over ``items``, writing into ``output_dir``."""
    from monai.bundle import run  # local: a bundle run only when masks are to be written

    run(
        "run",
        config_file=config,
        input=[{"image": item["image"]} for item in items],
        output_dir=output_dir,
        models_dir=str(models_dir),
        modality="mr",
        **dict(overrides or {}),
    )


def average_probabilities(prob_files: Sequence[str], mask_file: str, largest_component: bool = True) -> None:
    """The argmax of the mean of class-probability images (``<case>_prob.nii.gz``, channels last, as
    ``inference.yaml`` writes them in the input's geometry), written atomically as a 0/1 mask.

    Raises:
        ValueError: the files differ in shape or affine (not written for the same image).
    """
    images = [nib.load(f) for f in prob_files]
    first = images[0]
    for f, im in zip(prob_files[1:], images[1:]):
        if im.shape != first.shape or not np.allclose(im.affine, first.affine, atol=1e-3):
            raise ValueError(
                f"pseudo-labels: {f} (shape {im.shape}) and {prob_files[0]} (shape {first.shape}) are not of one "
                "geometry; their probabilities cannot be averaged."
            )
    mean = np.mean([np.asarray(im.dataobj, dtype=np.float32) for im in images], axis=0)
    mask = torch.as_tensor(np.argmax(mean, axis=-1)[None].astype(np.uint8))
    if largest_component:
        mask = KeepLargestConnectedComponent(applied_labels=[1])(mask)
    out = nib.Nifti1Image(np.asarray(mask[0], dtype=np.uint8), first.affine)
    out.set_qform(first.affine, code=1)
    out.set_sform(first.affine, code=1)
    with atomic_path(mask_file, suffix=".tmp.nii.gz") as tmp:
        nib.save(out, tmp)
