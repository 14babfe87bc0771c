"""How written masks err against the labels, per labelled MR volume of a datalist.

The figures behind the docs' account of where DALACE and the CT-only U-Net err (both over-segment, in
different volumes) and of the pseudo-labels' quality: any folder of ``<case>_seg.nii.gz`` masks, as
``inference.yaml`` (``--output_dir``) or self-training (``pseudo_labels/``) write
them in each image's geometry.
"""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np

from custom.data import datalist_items, pseudo_label_path

__all__ = ["mask_errors"]


def mask_errors(mask_dir: str, datalist: str, dataset_dir: str | None = None) -> list[dict]:
    """Per labelled MR item with a mask in ``mask_dir``: Dice, and the voxels the mask adds (``excess``)
    and misses (``missed``), each as a fraction of the liver's volume.

    Raises:
        FileNotFoundError: no labelled MR item of the datalist has a mask there.
        ValueError: a mask is not on its label's grid (shape or affine), or a label has no liver.
    """
    rows = []
    for item in datalist_items(datalist, dataset_dir, modality="mr", role="all", require_labels=True):
        mask_file = pseudo_label_path(item["image"], mask_dir)
        if not os.path.isfile(mask_file):
            continue
        mask_img, label_img = nib.load(mask_file), nib.load(item["label"])
        if mask_img.shape[:3] != label_img.shape[:3] or not np.allclose(mask_img.affine, label_img.affine, atol=1e-3):
            raise ValueError(
                f"{mask_file} (shape {mask_img.shape}) is not on the grid of its label {item['label']} "
                f"(shape {label_img.shape}): compare masks written in the image's geometry"
            )
        mask = np.asarray(mask_img.dataobj).reshape(mask_img.shape[:3]) > 0
        liver = np.asarray(label_img.dataobj).reshape(label_img.shape[:3]) == item.get("liver_value", 1)
        if not liver.any():
            raise ValueError(f"{item['label']}: no liver voxel (value {item.get('liver_value', 1)})")
        size = liver.sum()
        rows.append({
            "id": item["id"],
            "dice": float(2 * (mask & liver).sum() / (mask.sum() + size)),
            "excess": float((mask & ~liver).sum() / size),
            "missed": float((~mask & liver).sum() / size),
        })
    if not rows:
        raise FileNotFoundError(f"no mask <case>_seg.nii.gz in {os.path.abspath(mask_dir)!r} for a labelled MR item of {datalist!r}")
    return rows
