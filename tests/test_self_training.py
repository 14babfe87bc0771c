"""Self-training (configs/self_training.yaml): the teacher's masks of the unlabelled MR become labels.

End to end on the shipped sample with tiny widths: a teacher trained by train.yaml writes its masks
through inference.yaml, and the student starts from the teacher's weights and learns from the masks.
"""

import csv
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow

from custom.data import pseudo_label_path, pseudo_labelled
from custom.handlers import latest_checkpoint
from custom.networks import ensemble_state

from tests.helpers import BUNDLE, FAST, INFERENCE, MR, MR_LABEL, REPO, tiny_checkpoint

TINY = str(Path(__file__).resolve().parent / "configs" / "tiny.yaml")
TRAIN = str(BUNDLE / "configs" / "train.yaml")
SELF_TRAINING = str(BUNDLE / "configs" / "self_training.yaml")
INFERENCE_UNET = str(BUNDLE / "configs" / "inference_unet.yaml")
ENSEMBLE = str(BUNDLE / "configs" / "ensemble.yaml")


def test_masks_of_dalace_and_a_u_net_together(tmp_path, monkeypatch):
    """A co-teacher: the teacher's inference composed with ensemble.yaml writes the masks of DALACE and a
    U-Net together (one run, one N4), recorded with the ensemble's checkpoint."""
    monkeypatch.chdir(BUNDLE)
    dalace = tiny_checkpoint(tmp_path / "model.pt", extra_paths=["ct"], **FAST)
    unet = tiny_checkpoint(tmp_path / "unet.pt", configs=(INFERENCE, INFERENCE_UNET), extra_paths=[], **FAST)
    both = tmp_path / "model_ensemble.pt"
    torch.save(ensemble_state({"dalace": torch.load(dalace, weights_only=True), "unet_ct": torch.load(unet, weights_only=True)}), both)
    overrides = {**FAST, "bias_correction": False, "extra_paths": ["ct"], "ckpt_path": str(both), "save_probabilities": True}
    out = pseudo_labelled([{"image": str(MR)}], tmp_path / "masks", tmp_path, [INFERENCE, ENSEMBLE], overrides)
    mask, image = nib.load(out[0]["label"]), nib.load(MR)
    assert mask.shape == image.shape and np.allclose(mask.affine, image.affine, atol=1e-4)
    prob = nib.load(tmp_path / "masks" / "totalseg_mr_sm_image_prob.nii.gz").get_fdata()
    liver = prob[..., 1] > prob[..., 0]
    assert 0 < liver.mean() < 1 and set(np.unique(np.asarray(mask.dataobj))) <= {0, 1}
    assert not (np.asarray(mask.dataobj).astype(bool) & ~liver).any()  # the largest component of the argmax
    record = json.loads((tmp_path / "masks" / "teacher.json").read_text())
    assert record["sha256"] == hashlib.sha256(both.read_bytes()).hexdigest()


def test_masks_of_a_seed_ensemble(tmp_path, monkeypatch):
    """A teacher of several trainings (the seed ensemble MR's default segments with, distilled into one
    student): inference.yaml alone builds it from the file, and its masks come from the members'
    probabilities averaged, recorded with the ensemble's checkpoint."""
    monkeypatch.chdir(BUNDLE)
    first = tiny_checkpoint(tmp_path / "model.pt", extra_paths=["ct"], **FAST)
    torch.manual_seed(1)
    state = torch.load(first, weights_only=True)
    second = tmp_path / "second.pt"
    torch.save({k: v + 0.2 * torch.randn_like(v) if v.is_floating_point() else v for k, v in state.items()}, second)
    seeds = tmp_path / "model_seed_ensemble.pt"
    subprocess.run([sys.executable, "-m", "custom.networks", "seed_ensemble", str(first), str(second), "--output", str(seeds)],
                   check=True, cwd=REPO)
    overrides = {**FAST, "bias_correction": False, "extra_paths": ["ct"], "test_time_augmentation": False, "save_probabilities": True}
    prob = {}
    for name, ckpt in (("first", first), ("second", second), ("ensemble", seeds)):
        out = pseudo_labelled([{"image": str(MR)}], tmp_path / name, tmp_path, [INFERENCE], {**overrides, "ckpt_path": str(ckpt)})
        prob[name] = nib.load(tmp_path / name / "totalseg_mr_sm_image_prob.nii.gz").get_fdata()
    assert not np.allclose(prob["first"], prob["second"], atol=1e-3)
    np.testing.assert_allclose(prob["ensemble"], (prob["first"] + prob["second"]) / 2, atol=1e-4)
    mask = np.asarray(nib.load(out[0]["label"]).dataobj).astype(bool)
    assert mask.any() and not (mask & ~(prob["ensemble"][..., 1] > prob["ensemble"][..., 0])).any()
    record = json.loads((tmp_path / "ensemble" / "teacher.json").read_text())
    assert record["sha256"] == hashlib.sha256(seeds.read_bytes()).hexdigest()


def test_existing_masks_are_reused_without_running_the_teacher(tmp_path):
    items = [{"image": str(MR), "id": "mr"}]
    mask = Path(pseudo_label_path(str(MR), tmp_path))
    assert mask.name == "totalseg_mr_sm_image_seg.nii.gz"
    mask.write_bytes(b"a mask the user corrected")
    # an inference config that does not exist: any attempt to segment would fail
    out = pseudo_labelled(items, tmp_path, tmp_path / "no_models", tmp_path / "missing.yaml")
    assert out == [{"image": str(MR), "id": "mr", "label": str(mask), "liver_value": 1}]
    assert mask.read_bytes() == b"a mask the user corrected"


def test_masks_of_another_teacher_are_refused(tmp_path):
    """A teacher's masks are reused by the same teacher (its checkpoint's sha256 in teacher.json) and
    refused for another: the student would learn from the wrong labels without a word."""
    items = [{"image": str(MR)}]
    mask = Path(pseudo_label_path(str(MR), tmp_path / "masks"))
    mask.parent.mkdir()
    mask.write_bytes(b"mask")
    first, second = tmp_path / "first.pt", tmp_path / "second.pt"
    first.write_bytes(b"weights of the first teacher")
    second.write_bytes(b"weights of the second teacher")
    (mask.parent / "teacher.json").write_text(json.dumps(
        {"checkpoint": str(first), "sha256": hashlib.sha256(first.read_bytes()).hexdigest()}))
    out = pseudo_labelled(items, mask.parent, tmp_path, tmp_path / "missing.yaml", {"ckpt_path": str(first)})
    assert out[0]["label"] == str(mask)
    with pytest.raises(ValueError, match="written by the teacher .*first.pt.*not by .*second.pt"):
        pseudo_labelled(items, mask.parent, tmp_path, tmp_path / "missing.yaml", {"ckpt_path": str(second)})
    # the same teacher with other inference settings (a record that has them): refused, naming them
    (mask.parent / "teacher.json").write_text(json.dumps(
        {"checkpoint": str(first), "sha256": hashlib.sha256(first.read_bytes()).hexdigest(), "inference": {"bridge_radius_mm": 0.0}}))
    out = pseudo_labelled(items, mask.parent, tmp_path, tmp_path / "missing.yaml", {"ckpt_path": str(first), "bridge_radius_mm": 0.0})
    assert out[0]["label"] == str(mask)
    with pytest.raises(ValueError, match="other inference settings .bridge_radius_mm: 0.0 then, 12.0 now"):
        pseudo_labelled(items, mask.parent, tmp_path, tmp_path / "missing.yaml", {"ckpt_path": str(first), "bridge_radius_mm": 12.0})
    # the precision is not a mask setting: masks recorded before amp was passed are reused with amp=False
    out = pseudo_labelled(items, mask.parent, tmp_path, tmp_path / "missing.yaml", {"ckpt_path": str(first), "bridge_radius_mm": 0.0, "amp": False})
    assert out[0]["label"] == str(mask)


def test_two_images_with_one_case_name_are_refused(tmp_path):
    items = [{"image": "/a/case_1.nii.gz"}, {"image": "/b/case_1.nii.gz"}]
    with pytest.raises(ValueError, match="share the case name 'case_1'"):
        pseudo_labelled(items, tmp_path, tmp_path, tmp_path / "missing.yaml")


def test_a_missing_teacher_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(BUNDLE)
    wf = ConfigWorkflow(
        config_file=[TRAIN, TINY, SELF_TRAINING], workflow_type="train", bundle_root=str(BUNDLE),
        output_dir=str(tmp_path / "student"), teacher_dir=str(tmp_path / "nowhere"), teacher_checkpoint=None,
    )
    with pytest.raises(Exception) as err:
        wf.initialize()
        wf.run()
    causes, e = [], err.value
    while e is not None:
        causes.append(e)
        e = e.__cause__
    assert any(isinstance(c, FileNotFoundError) and "nowhere/model.pt" in str(c) and "teacher" in str(c) for c in causes)


def test_a_teacher_of_other_paths_is_refused_naming_the_fix(tmp_path, monkeypatch):
    """The student (extra_paths [ct]) cannot start from a single-path model.pt: the error names the file
    and the paths, before any training."""
    monkeypatch.chdir(BUNDLE)
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    tiny_checkpoint(teacher / "model.pt", configs=(INFERENCE,), extra_paths=[])
    masks = tmp_path / "student" / "pseudo_labels"
    masks.mkdir(parents=True)
    shutil.copy(MR_LABEL, pseudo_label_path(str(MR), masks))  # an existing mask: no teacher inference
    wf = ConfigWorkflow(
        config_file=[TRAIN, TINY, SELF_TRAINING], workflow_type="train", bundle_root=str(BUNDLE),
        output_dir=str(tmp_path / "student"), teacher_dir=str(teacher), teacher_checkpoint=None,
    )
    with pytest.raises(Exception) as err:
        wf.initialize()
        wf.run()
    causes, e = [], err.value
    while e is not None:
        causes.append(str(e))
        e = e.__cause__
    assert any("teacher model" in c and str(teacher / "model.pt") in c and "extra_paths" in c for c in causes), causes
    assert not (tmp_path / "student" / "checkpoints").exists()


@pytest.mark.slow
def test_student_starts_from_the_teacher_and_learns_from_its_masks(tmp_path, monkeypatch):
    monkeypatch.chdir(BUNDLE)
    common = {"bundle_root": str(BUNDLE), "bias_correction": False, "validate#enabled": False}
    teacher = ConfigWorkflow(config_file=[TRAIN, TINY], workflow_type="train", output_dir=str(tmp_path / "teacher"),
                             models_dir=str(tmp_path / "teacher_models"), **common)
    teacher.initialize()
    teacher.run()
    teacher.finalize()
    # learning rates 0: the student's averaged parameters stay the teacher's, which shows where it started
    # (normalization statistics, buffers, follow the batches)
    student = ConfigWorkflow(
        config_file=[TRAIN, TINY, SELF_TRAINING], workflow_type="train", output_dir=str(tmp_path / "student"),
        teacher_dir=str(tmp_path / "teacher_models"), teacher_checkpoint=latest_checkpoint(tmp_path / "teacher" / "checkpoints"),
        max_epochs=1, lr=0.0, lr_pair=0.0, **common,
    )
    student.initialize()
    student.run()
    student.finalize()
    # the teacher's masks in float32 whatever inference.yaml's amp default (inference.yaml reads `amp`)
    assert student.parser.get_parsed_content("pseudo_label_inference")["amp"] is False

    mask_file = tmp_path / "student" / "pseudo_labels" / "totalseg_mr_sm_image_seg.nii.gz"
    mask, image = nib.load(mask_file), nib.load(MR)
    assert mask.shape == image.shape and np.allclose(mask.affine, image.affine, atol=1e-4)
    assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1}
    record = json.loads((mask_file.parent / "teacher.json").read_text())
    assert record["sha256"] == hashlib.sha256((tmp_path / "teacher_models" / "model.pt").read_bytes()).hexdigest()
    with open(tmp_path / "student" / "losses.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and all(np.isfinite(float(r["apm/ce_mr"])) for r in rows)
    for name in ("model.pt", "model_ct.pt"):
        a = torch.load(tmp_path / "teacher_models" / name, weights_only=True)
        b = torch.load(tmp_path / "student" / "models" / name, weights_only=True)
        params = [k for k in a if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
        assert a.keys() == b.keys() and len(params) > 20
        assert [k for k in params if not torch.equal(a[k], b[k])] == [], name
