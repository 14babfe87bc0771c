"""Pseudo-labels for self-training: a trained model's own masks of the unlabelled MR, used as labels.

Domain adaptation has no MR label; a trained DALACE, though, segments the MR training images better
through both paths (``extra_paths``) than its MR path alone does. Writing those masks once with
``configs/inference.yaml`` (N4, both paths, largest component, in each image's geometry) and letting
them supervise MR's path, as labels do in joint learning, hands that gain on to the MR path
(``configs/self_training.yaml``). The masks stay on disk, where a user can look at them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from .inputs import case_name

__all__ = ["pseudo_label_path", "pseudo_labelled"]

logger = logging.getLogger(__name__)


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
    a user may put corrected masks there); the others are written first, in one run of
    ``inference_config`` with ``models_dir`` (the teacher's ``model.pt``) and ``overrides`` (the
    training config's sizes and preprocessing, so that the teacher is built as it was trained).

    Raises:
        ValueError: two images share a case name (their masks would overwrite each other).
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
    missing = [item for item, path in zip(items, paths) if not os.path.isfile(path)]
    if missing:
        teacher = str((overrides or {}).get("ckpt_path") or os.path.join(str(models_dir), "model.pt"))
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
