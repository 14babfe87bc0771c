"""Datalists: the shipped sample's, the builders, k-fold splits, and every validation error."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from custom.data import (
    DatalistError,
    assign_folds,
    datalist_from_folder,
    datalist_from_manifest,
    datalist_items,
    read_datalist_json,
    validate_datalist,
    write_datalist,
)

from tests.helpers import REPO as REPO_ROOT  # noqa: E402


# ---- the shipped sample --------------------------------------------------------------------------


def test_sample_datalist_is_valid(sample_dir):
    data = validate_datalist(sample_dir / "datalist.json")
    assert len(data["ct"]) == 1 and len(data["mr"]) == 1
    assert all(os.path.isabs(i["image"]) and os.path.exists(i["label"]) for i in data["ct"] + data["mr"])


def test_sample_datalist_roles(sample_dir):
    dl = sample_dir / "datalist.json"
    ct = datalist_items(dl, modality="ct", role="train", require_labels=True)
    assert [sorted(i) for i in ct] == [["domain", "fold", "id", "image", "label", "liver_value"]]
    assert Path(ct[0]["image"]).is_file() and ct[0]["liver_value"] == 1
    mr_train = datalist_items(dl, modality="mr", role="train")
    assert "label" not in mr_train[0]  # the unsupervised MR stream never carries labels
    mr_val = datalist_items(dl, modality="mr", role="val", require_labels=True)
    assert Path(mr_val[0]["label"]).is_file() and mr_val[0]["domain"]
    # fold 0 holds the only MR case: held out from training, the validation set
    assert datalist_items(dl, modality="mr", fold=0, role="val", require_labels=True)[0]["id"] == "totalseg_mr_sm"
    with pytest.raises(DatalistError, match="no 'mr' items for role 'train' with fold 0"):
        datalist_items(dl, modality="mr", fold=0, role="train")
    with pytest.raises(DatalistError, match="mr_test"):
        datalist_items(dl, modality="mr", role="test")


def test_unlabelled_mr_means_no_validation(tmp_path):
    """The usual DA datalist has no MR label: training must not fail on its empty validation role."""
    from monai.bundle import ConfigParser

    dl = REPO_ROOT / "bundle" / "docs" / "shipped" / "datalist.json"  # the shipped model's (no MR label)
    with pytest.raises(DatalistError, match="no labelled 'mr' items for role 'val'"):
        datalist_items(dl, tmp_path, modality="mr", role="val", require_labels=True)
    assert datalist_items(dl, tmp_path, modality="mr", role="val", require_labels=True, allow_empty=True) == []
    parser = ConfigParser()
    parser.read_config([str(REPO_ROOT / "bundle" / "configs" / f) for f in ("train.yaml", "shipped.yaml")])
    parser.update({"bundle_root": str(REPO_ROOT / "bundle"), "dataset_dir": str(tmp_path)})
    assert parser.get_parsed_content("validate#data") == []
    assert parser.get_parsed_content("validate#enabled") is False


def test_sample_datalist_matches_its_folder(sample_dir):
    """The shipped datalist is what the folder builder writes for the sample folder."""
    built = datalist_from_folder(sample_dir)
    shipped = read_datalist_json(sample_dir / "datalist.json")
    for m in ("ct", "mr"):
        keep = ("id", "image", "label", "fold")
        assert [{k: i.get(k) for k in keep} for i in built[m]] == [{k: i.get(k) for k in keep} for i in shipped[m]]


def test_sample_dicom_and_nrrd_validate(sample_dir):
    data = {"ct": [{"image": "dicom/dcmqi_ct_3slice", "label": "dicom/dcmqi_liver_seg.nrrd"}], "mr": [{"image": "mr/totalseg_mr_sm_image.nii.gz"}]}
    validate_datalist(data, dataset_dir=sample_dir)


# ---- folds and builders ---------------------------------------------------------------------------


def test_folds_reproducible_balanced_order_independent():
    items = [{"id": f"case_{n:02d}", "image": f"mr/case_{n:02d}_image.nii.gz"} for n in range(12)]
    a = {i["id"]: i["fold"] for i in assign_folds(items, num_folds=5, seed=0)}
    b = {i["id"]: i["fold"] for i in assign_folds(items[::-1], num_folds=5, seed=0)}
    assert a == b
    assert set(np.bincount(list(a.values()), minlength=5).tolist()) == {2, 3}  # 12 cases in 5 folds
    assert {i["id"]: i["fold"] for i in assign_folds(items, num_folds=5, seed=1)} != a
    assert set(a.values()) == set(range(5))


def test_from_folder(tmp_path, sample_dir):
    for m in ("ct", "mr"):
        (tmp_path / m).mkdir()
    for n in range(3):
        for kind in ("image", "label"):
            os.symlink(sample_dir / f"ct/totalseg_ct_sm_{kind}.nii.gz", tmp_path / f"ct/c{n}_{kind}.nii.gz")
    os.symlink(sample_dir / "mr/totalseg_mr_sm_image.nii.gz", tmp_path / "mr/m0_image.nii.gz")
    os.symlink(sample_dir / "dicom/dcmqi_ct_3slice", tmp_path / "mr/m1_image")  # a DICOM series folder
    (tmp_path / "mr/notes.txt").write_text("ignored")
    data = datalist_from_folder(tmp_path, num_folds=2, seed=0, mr_domain="T1")
    assert [i["id"] for i in data["ct"]] == ["c0", "c1", "c2"] and all("label" in i for i in data["ct"])
    assert [i["image"] for i in data["mr"]] == ["mr/m0_image.nii.gz", "mr/m1_image"]
    assert {i["fold"] for i in data["ct"]} == {0, 1} and data["mr"][0]["domain"] == "T1"
    path = write_datalist(data, tmp_path / "datalist.json")
    assert len(datalist_items(path, modality="ct", fold=0, role="val", require_labels=True)) + len(
        datalist_items(path, modality="ct", fold=0, role="train", require_labels=True)
    ) == 3
    os.remove(tmp_path / "ct/c1_label.nii.gz")
    with pytest.raises(DatalistError, match="c1_image.nii.gz: CT image without a label"):
        datalist_from_folder(tmp_path)


@pytest.mark.shared_data
def test_from_manifest(shared_data):
    manifest = shared_data / "manifest.json"
    data = datalist_from_manifest(manifest, mr_sequences="T2-SPIR", exclude="totalseg_ct_sm")
    cases = read_datalist_json(manifest)["cases"]
    n_t2 = sum(c["sequence"] == "T2-SPIR" for c in cases)
    assert len(data["mr"]) == n_t2 and all(i["domain"] == "T2-SPIR" and "label" in i for i in data["mr"])
    assert "totalseg_ct_sm" not in [i["id"] for i in data["ct"]]
    assert len(set(i["fold"] for i in data["mr"])) == 5
    unlabelled = datalist_from_manifest(manifest, mr_sequences=["t2-spir"], mr_labels=False)
    assert all("label" not in i for i in unlabelled["mr"]) and all("label" in i for i in unlabelled["ct"])
    dicom = datalist_from_manifest(manifest, use_dicom=True)
    assert "raw/chaos_ct3_dicom" in [i["image"] for i in dicom["ct"]]
    validate_datalist(data, dataset_dir=shared_data)


def test_cli_from_folder_and_validate(tmp_path, sample_dir):
    from custom.data.__main__ import from_folder, validate

    out = tmp_path / "dl.json"
    assert from_folder(str(sample_dir), str(out), num_folds=3, seed=7) == str(out)
    assert "OK" in validate(str(out), str(sample_dir)) and json.loads(out.read_text())["seed"] == 7
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run(
        [sys.executable, "-m", "custom.data", "validate", str(tmp_path / "missing.json")],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert r.returncode != 0 and "missing.json: datalist file not found" in r.stderr


# ---- validation errors --------------------------------------------------------------------------


def save(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.diag([2.0, 2.0, 3.0, 1.0]) if affine is None else affine), str(path))
    return path.name


@pytest.fixture
def dataset(tmp_path, sample_dir):
    """A valid dataset of real sample volumes, cropped small, that each test then breaks in one way."""
    ct = nib.load(sample_dir / "ct/totalseg_ct_sm_image.nii.gz")
    lab = nib.load(sample_dir / "ct/totalseg_ct_sm_label.nii.gz")
    img, seg = np.asarray(ct.dataobj)[:40, :40, :10].astype(np.int16), np.asarray(lab.dataobj)[:40, :40, :10]
    seg = seg.copy()
    seg[10:20, 10:20, 2:5] = 1  # some liver in the crop
    for name in ("a", "b"):
        nib.save(nib.Nifti1Image(img, ct.affine), str(tmp_path / f"{name}_image.nii.gz"))
        nib.save(nib.Nifti1Image(seg, ct.affine), str(tmp_path / f"{name}_label.nii.gz"))
    mr = {"image": "a_image.nii.gz"}
    data = {
        "ct": [{"image": "a_image.nii.gz", "label": "a_label.nii.gz"}, {"image": "b_image.nii.gz", "label": "b_label.nii.gz"}],
        "mr": [mr],
    }
    return tmp_path, data, img, seg, ct.affine


def raises_with(data, root, *fragments, **kwargs) -> DatalistError:
    with pytest.raises(DatalistError) as info:
        validate_datalist(data, dataset_dir=root, **kwargs)
    message = str(info.value)
    for f in fragments:
        assert f in message, message
    return info.value


def test_valid_dataset_passes(dataset):
    root, data, *_ = dataset
    validate_datalist(data, dataset_dir=root)


def test_missing_file(dataset):
    root, data, *_ = dataset
    data["ct"][1]["label"] = "nowhere_label.nii.gz"
    raises_with(data, root, "nowhere_label.nii.gz: missing file")


def test_corrupt_file(dataset):
    root, data, *_ = dataset
    (root / "b_image.nii.gz").write_bytes(os.urandom(2048))
    raises_with(data, root, "b_image.nii.gz: unreadable")


def test_wrong_dimensionality(dataset):
    root, data, img, seg, affine = dataset
    save(root / "b_image.nii.gz", np.stack([img, img], axis=-1), affine)
    raises_with(data, root, "b_image.nii.gz: 4D image", "expected 3D")
    save(root / "b_image.nii.gz", img[:, :, 3], affine)
    save(root / "b_label.nii.gz", seg[:, :, 3], affine)
    raises_with(data, root, "b_image.nii.gz: 2D image", "b_label.nii.gz: 2D image")
    validate_datalist(data, dataset_dir=root, allow_2d=True)


def test_non_finite_values(dataset):
    root, data, img, seg, affine = dataset
    bad = img.astype(np.float32)
    bad[3, 4, 5], bad[6, 7, 8] = np.nan, np.inf
    save(root / "b_image.nii.gz", bad, affine)
    raises_with(data, root, "b_image.nii.gz: 2 non-finite values")


def test_label_values(dataset):
    root, data, img, seg, affine = dataset
    save(root / "b_label.nii.gz", (seg * 5).astype(np.uint8), affine)  # liver marked 5
    raises_with(data, root, "b_label.nii.gz: label values [0, 5] are not 0/1")
    data["ct"][1]["liver_value"] = 5  # declared: valid, and mapped to 1 by LiverLabeld
    validate_datalist(data, dataset_dir=root)
    data["ct"][1]["liver_value"] = 6
    raises_with(data, root, "b_label.nii.gz: label has no liver voxels (no value 6")
    save(root / "b_label.nii.gz", seg.astype(np.float32) * 0.5, affine)
    raises_with(data, root, "b_label.nii.gz: label has non-integer values")


def test_geometry_mismatch(dataset):
    root, data, img, seg, affine = dataset
    shifted = affine.copy()
    shifted[:3, 3] += [5.0, 0, 0]
    save(root / "b_label.nii.gz", seg, shifted)
    raises_with(data, root, "b_label.nii.gz: label is not in the same place as image", "b_image.nii.gz")
    save(root / "b_label.nii.gz", seg[:, :, :8], affine)
    raises_with(data, root, "b_label.nii.gz: label grid", "does not match image")


def test_same_world_grid_in_another_orientation_is_valid(dataset):
    """Compared in world coordinates: a label stored flipped (LPS vs RAS) with its affine is fine."""
    root, data, img, seg, affine = dataset
    img_ = nib.load(root / "b_label.nii.gz")
    flipped = img_.as_reoriented(np.array([[0, -1], [1, -1], [2, 1]]))  # R->L, A->P
    assert nib.aff2axcodes(flipped.affine) != nib.aff2axcodes(affine)
    nib.save(flipped, str(root / "b_label.nii.gz"))
    validate_datalist(data, dataset_dir=root)


def test_empty_modality_list(dataset):
    root, data, *_ = dataset
    data["mr"] = []
    raises_with(data, root, "'mr' is an empty modality list")
    del data["mr"]
    raises_with(data, root, "'mr' is an empty modality list")


def test_ct_without_label(dataset):
    root, data, *_ = dataset
    del data["ct"][0]["label"]
    raises_with(data, root, "a_image.nii.gz: no 'label' given")


def test_malformed_json(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"ct": [{"image": "a.nii.gz",}]}')
    with pytest.raises(DatalistError, match=r"broken.json: malformed JSON at line 1"):
        validate_datalist(path)
    with pytest.raises(DatalistError, match=r"broken.json: malformed JSON"):
        datalist_items(path)
    with pytest.raises(ValueError):  # DatalistError is a ValueError, as configs may catch
        read_datalist_json(tmp_path / "absent.json")


def test_all_problems_at_once(dataset):
    root, data, img, seg, affine = dataset
    (root / "a_image.nii.gz").write_bytes(b"not an image")
    save(root / "b_label.nii.gz", (seg * 2).astype(np.uint8), affine)
    data["mr"].append({"image": "gone.nii.gz"})
    path = root / "datalist.json"
    path.write_text(json.dumps(data))
    err = raises_with(path, None, "3 problems", "a_image.nii.gz: unreadable", "b_label.nii.gz: label values", "gone.nii.gz: missing file")
    assert len(err.problems) == 3
    with pytest.raises(DatalistError, match="a_image.nii.gz: unreadable"):
        datalist_items(path, modality="ct", require_labels=True)


def test_datalist_items_validates_a_copy_of_the_dataset(tmp_path, sample_dir):
    """Paths resolve against dataset_dir, so a datalist works for a dataset copied elsewhere (all of
    it: the whole datalist is validated)."""
    for m in ("ct", "mr"):
        shutil.copytree(sample_dir / m, tmp_path / m)
    items = datalist_items(sample_dir / "datalist.json", dataset_dir=tmp_path, modality="ct", require_labels=True)
    assert items[0]["image"].startswith(str(tmp_path))


def test_training_reports_every_problem_at_once_and_never_drops_unlabelled_ct(dataset):
    """The configs' datalist_items validate the whole datalist as `python -m custom.data validate` does:
    problems of other modalities and roles too, and a CT item without a label is an error naming it
    (it used to be dropped silently, and each call reported only its own list)."""
    from monai.bundle import ConfigParser

    root, data, img, seg, affine = dataset
    del data["ct"][0]["label"]
    save(root / "b_label.nii.gz", (seg * 2).astype(np.uint8), affine)
    data["mr"].append({"image": "gone.nii.gz"})
    path = root / "datalist.json"
    path.write_text(json.dumps(data))
    expected = ["a_image.nii.gz: no 'label' given", "b_label.nii.gz: label values", "gone.nii.gz: missing file"]
    for modality in ("ct", "mr"):
        with pytest.raises(DatalistError) as info:
            datalist_items(path, modality=modality, require_labels=modality == "ct")
        assert len(info.value.problems) == 3 and all(e in str(info.value) for e in expected), str(info.value)
    with pytest.raises(DatalistError, match="a_image.nii.gz: no 'label' given"):
        datalist_items(path, modality="ct", require_labels=True, validate=False)
    parser = ConfigParser()
    parser.read_config(str(REPO_ROOT / "bundle" / "configs" / "train.yaml"))
    parser.update({"bundle_root": str(REPO_ROOT / "bundle"), "dataset_dir": str(root), "datalist": str(path)})
    with pytest.raises(Exception) as info:
        parser.get_parsed_content("train#data#ct")
    error = info.value
    while not isinstance(error, DatalistError):
        error = error.__cause__
    assert len(error.problems) == 3
