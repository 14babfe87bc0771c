"""How written masks err against the labels, per labelled MR volume of a datalist.

The figures behind the docs' account of where DALACE and the CT-only U-Net err (both over-segment, in
different volumes) and of the pseudo-labels' quality: any folder of ``<case>_seg.nii.gz`` masks, as
``inference.yaml`` (``--output_dir``) or self-training (``pseudo_labels/``) write
them in each image's geometry. And how the inference's last step, detaching what joins the liver
through thin bridges (``bridge_radius_mm``), scores at several radii on written probabilities, with
the radius chosen on the other folds' volumes for each fold's (so the chosen radius never sees the
volumes it is scored on); and so for the step after it, dropping what drifts out of the liver from
slice to slice (``slice_continuity``).
"""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np

from monai.transforms.utils import get_largest_connected_component_mask
from scipy.ndimage import distance_transform_edt

from custom.data import datalist_items, pseudo_label_path
from custom.transforms import axial_axis_and_spacing, axial_axis_and_step, detach_thin_bridges, keep_continuous_slices

__all__ = ["bridge_radius_sweep", "mask_errors", "slice_continuity_sweep"]


def _grid_checked(img: nib.Nifti1Image, name: str, label_img: nib.Nifti1Image, label: str) -> None:
    if img.shape[:3] != label_img.shape[:3] or not np.allclose(img.affine, label_img.affine, atol=1e-3):
        raise ValueError(
            f"{name} (shape {img.shape}) is not on the grid of its label {label} "
            f"(shape {label_img.shape}): compare masks written in the image's geometry"
        )


def _liver(item: dict, label_img: nib.Nifti1Image) -> np.ndarray:
    liver = np.asarray(label_img.dataobj).reshape(label_img.shape[:3]) == item.get("liver_value", 1)
    if not liver.any():
        raise ValueError(f"{item['label']}: no liver voxel (value {item.get('liver_value', 1)})")
    return liver


def mask_errors(mask_dir: str, datalist: str, dataset_dir: str | None = None, far_mm: float = 10.0) -> list[dict]:
    """Per labelled MR item with a mask in ``mask_dir``: Dice, and the voxels the mask adds (``excess``)
    and misses (``missed``), each as a fraction of the liver's volume; of the excess, the part farther
    than ``far_mm`` from the liver (``excess_far``: other organs, not a border drawn wide) and the part in
    axial slices (RAS, through the affine) that hold no liver (``excess_beyond``: above its dome or
    below its tip), as fractions of the liver's volume too.

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
        _grid_checked(mask_img, mask_file, label_img, item["label"])
        mask = np.asarray(mask_img.dataobj).reshape(mask_img.shape[:3]) > 0
        liver = _liver(item, label_img)
        size = liver.sum()
        excess = mask & ~liver
        distance = distance_transform_edt(~liver, sampling=nib.affines.voxel_sizes(label_img.affine)[:3])
        axial = axial_axis_and_spacing(label_img.affine)[0]
        other = tuple(a for a in range(3) if a != axial)
        slices_without_liver = np.expand_dims(~liver.any(axis=other), other)
        rows.append({
            "id": item["id"],
            "dice": float(2 * (mask & liver).sum() / (mask.sum() + size)),
            "excess": float(excess.sum() / size),
            "missed": float((~mask & liver).sum() / size),
            "excess_far": float((excess & (distance > far_mm)).sum() / size),
            "excess_beyond": float((excess & slices_without_liver).sum() / size),
        })
    if not rows:
        raise FileNotFoundError(f"no mask <case>_seg.nii.gz in {os.path.abspath(mask_dir)!r} for a labelled MR item of {datalist!r}")
    return rows


def _member_file(item: dict, member: str | list[str]) -> str | None:
    for d in [member] if isinstance(member, str) else member:
        f = pseudo_label_path(item["image"], d)[: -len("_seg.nii.gz")] + "_prob.nii.gz"
        if os.path.isfile(f):
            return f
    return None


def _swept(members: list, datalist: str, settings: list, base_of, mask_of, dataset_dir: str | None = None) -> dict:
    """Dice per labelled MR item and setting of ``mask_of(base, spacing, affine, setting, name)``, where
    ``base = base_of(probability, spacing)`` is made once per item from the members' averaged
    probabilities (the steps before the swept one), and each fold scored at the setting best on the
    other folds'."""
    cases = []
    for item in datalist_items(datalist, dataset_dir, modality="mr", role="all", require_labels=True):
        files = [_member_file(item, m) for m in members]
        if None in files:
            continue
        label_img = nib.load(item["label"])
        liver = _liver(item, label_img)
        probs = []
        for f in files:
            img = nib.load(f)
            _grid_checked(img, f, label_img, item["label"])
            probs.append(np.asarray(img.dataobj, dtype=np.float32).reshape(*img.shape[:3], -1)[..., -1])
        spacing = [float(s) for s in nib.affines.voxel_sizes(label_img.affine)[:3]]
        base = base_of(np.mean(probs, axis=0), spacing)
        dice = {}
        for v in settings:
            m = mask_of(base, spacing, label_img.affine, v, item["id"])
            dice[v] = float(2 * (m & liver).sum() / (m.sum() + liver.sum()))
        cases.append({"id": item["id"], "fold": int(item.get("fold", -1)), "dice": dice})
    if not cases:
        raise FileNotFoundError(f"no <case>_prob.nii.gz in every one of {members} for a labelled MR item of {datalist!r}")
    folds = sorted({c["fold"] for c in cases})
    chosen, nested = {}, []
    for f in folds:
        others = [c for c in cases if c["fold"] != f] or cases
        chosen[f] = max(settings, key=lambda v: (np.mean([c["dice"][v] for c in others]), -v))  # ties: the smaller
        nested += [c["dice"][chosen[f]] for c in cases if c["fold"] == f]
    return {"cases": cases, "chosen": chosen, "nested": float(np.mean(nested))}


def bridge_radius_sweep(members: list, datalist: str, radii: list[float], dataset_dir: str | None = None) -> dict:
    """Dice per labelled MR item and radius of the masks made from the ``<case>_prob.nii.gz`` files of
    ``members`` (as ``--save_probabilities True`` writes them; a member is a folder or a list of folders,
    e.g. one per fold, searched in turn; several members: their liver probabilities averaged, as an
    ensemble of those models after inversion) by ``inference.yaml``'s
    last steps: liver where the probability is above 0.5, the largest component, then
    :func:`custom.transforms.detach_thin_bridges` at each radius (0: none).

    Returns ``{"cases": [{"id", "fold", "dice": {radius: Dice}}], "chosen": {fold: radius},
    "nested": mean Dice with each fold scored at the radius best on the other folds' items}``.

    Raises:
        FileNotFoundError: no labelled MR item has a probability file in every member.
        ValueError: a file is not on its label's grid, or a label has no liver.
    """
    def largest_component(probability, spacing):
        return get_largest_connected_component_mask(probability > 0.5)

    def mask_of(mask, spacing, affine, radius, name):
        return detach_thin_bridges(mask, radius, spacing)

    return _swept(members, datalist, [float(r) for r in radii], largest_component, mask_of, dataset_dir)


def slice_continuity_sweep(members: list, datalist: str, overlaps: list[float], radius_mm: float,
                           distance_mm: float, max_removed: float, dataset_dir: str | None = None) -> dict:
    """As :func:`bridge_radius_sweep`, for ``inference.yaml``'s step after the bridges (cut at
    ``radius_mm``): :func:`custom.transforms.keep_continuous_slices` at each minimum overlap (0: none),
    slices ``distance_mm`` apart along the axial axis of each label's affine, a mask left whole where
    more than ``max_removed`` of it would go."""
    def bridges_cut(probability, spacing):
        return detach_thin_bridges(get_largest_connected_component_mask(probability > 0.5), radius_mm, spacing)

    def mask_of(mask, spacing, affine, overlap, name):
        axis, step = axial_axis_and_step(affine, distance_mm)
        return keep_continuous_slices(mask, overlap, axis, step, max_removed, name)

    return _swept(members, datalist, [float(v) for v in overlaps], bridges_cut, mask_of, dataset_dir)
