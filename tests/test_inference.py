"""configs/inference.yaml end to end: a randomly initialised tiny network_def, real preprocessing,
SliceInferer, inversion and saving; the written masks must have the input's shape and affine."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import itk
import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow

import custom.transforms
from custom.data import list_inputs
from custom.inferers import native_bfloat16

from tests.helpers import REPO, BUNDLE, INFERENCE, MR, MR_LABEL, CT, DICOM, HAS_N4, HAS_SKIMAGE, TINY, FAST, cause, tiny_checkpoint


def run_bundle(configs=(INFERENCE,), **overrides) -> ConfigWorkflow:
    workflow = ConfigWorkflow(
        config_file=list(configs), workflow_type="infer", bundle_root=str(BUNDLE), **overrides
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return workflow


def itk_affine_ras(path: Path) -> tuple[tuple[int, ...], np.ndarray]:
    """Shape (x, y, z) and RAS affine of an image as ITK reads it (ITK's physical space is LPS)."""
    img = itk.imread(str(path))
    direction = itk.array_from_matrix(img.GetDirection())
    affine = np.eye(4)
    affine[:3, :3] = direction @ np.diag(np.asarray(itk.spacing(img), float))
    affine[:3, 3] = np.asarray(itk.origin(img), float)
    return tuple(int(s) for s in itk.size(img)), np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine


def assert_same_grid(out: Path, shape, affine) -> nib.Nifti1Image:
    img = nib.load(str(out))
    assert img.shape[:3] == tuple(shape), (out, img.shape, shape)
    np.testing.assert_allclose(img.affine, affine, atol=1e-4, err_msg=str(out))
    return img


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("models") / "model.pt")


@pytest.fixture(scope="module")
def ckpt_ct(tmp_path_factory) -> Path:
    """model_ct.pt: CT's path alone (network_def with --modality ct)."""
    return tiny_checkpoint(tmp_path_factory.mktemp("models") / "model_ct.pt", modality="ct")


@pytest.mark.slow
def test_sample_mr(ckpt, tmp_path):
    """The sample MR (LPS) with probabilities and the domain-agnostic image too; MONAI Label's extra
    `image_path` string key must pass through the preprocessing (Spacingd)."""
    out = tmp_path / "eval"
    run_bundle(
        input=[{"image": str(MR), "image_path": str(MR)}],
        ckpt_path=str(ckpt),
        output_dir=str(out),
        bias_correction=HAS_N4,
        largest_component=HAS_SKIMAGE,
        **({"n4#num_iterations": 5, "n4#num_fitting_levels": 2} if HAS_N4 else {}),  # a quick N4
        save_probabilities=True,
        save_domain_agnostic=True,
        **FAST,
    )
    src = nib.load(str(MR))
    seg = assert_same_grid(out / "totalseg_mr_sm_image_seg.nii.gz", src.shape, src.affine)
    assert seg.get_data_dtype() == np.uint8
    assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1}
    prob = assert_same_grid(out / "totalseg_mr_sm_image_prob.nii.gz", src.shape, src.affine)
    p = prob.get_fdata()
    assert p.shape == (*src.shape, 2)
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-4)
    # the mask is the argmax of the written probabilities (up to the optional largest component)
    if not HAS_SKIMAGE:
        np.testing.assert_array_equal(np.asarray(seg.dataobj), (p[..., 1] > p[..., 0]).astype(np.uint8))
    agn = assert_same_grid(out / "totalseg_mr_sm_image_agnostic.nii.gz", src.shape, src.affine)
    assert np.isfinite(agn.get_fdata()).all() and agn.get_fdata().std() > 0


@pytest.mark.slow
def test_test_time_augmentation_averages_on_the_input_grid(ckpt, tmp_path):
    """test_time_augmentation (MR's default): an identity variant (zoom 1) writes the plain run's
    probabilities; the default gammas and zooms change them, still on the input's grid with the mask their argmax; the
    domain-agnostic image stays the plain network's."""
    common = dict(input=[{"image": str(MR)}], ckpt_path=str(ckpt), bias_correction=False, largest_component=False,
                  save_probabilities=True, save_domain_agnostic=True, **FAST)
    run_bundle(output_dir=str(tmp_path / "plain"), test_time_augmentation=False, **common)
    run_bundle(output_dir=str(tmp_path / "identity"), test_time_augmentation=True, test_time_gammas=[], test_time_zooms=[1.0],
               **common)
    run_bundle(output_dir=str(tmp_path / "tta"), **common)  # MR's default
    src = nib.load(str(MR))
    read = {k: {f: assert_same_grid(tmp_path / k / f"totalseg_mr_sm_image_{f}.nii.gz", src.shape, src.affine).get_fdata()
                for f in ("prob", "agnostic", "seg")} for k in ("plain", "identity", "tta")}
    np.testing.assert_allclose(read["identity"]["prob"], read["plain"]["prob"], atol=1e-5)
    assert np.abs(read["tta"]["prob"] - read["plain"]["prob"]).max() > 1e-2
    np.testing.assert_allclose(read["tta"]["prob"].sum(-1), 1.0, atol=1e-4)
    np.testing.assert_array_equal(read["tta"]["seg"], (read["tta"]["prob"][..., 1] > read["tta"]["prob"][..., 0]).astype(float))
    np.testing.assert_allclose(read["tta"]["agnostic"], read["plain"]["agnostic"], atol=1e-5)


def reoriented(src: nib.Nifti1Image, axcodes: str) -> nib.Nifti1Image:
    ornt = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(src.affine), nib.orientations.axcodes2ornt(tuple(axcodes))
    )
    out = src.as_reoriented(ornt)
    assert "".join(nib.aff2axcodes(out.affine)) == axcodes
    return out


@pytest.mark.slow
def test_orientations_from_a_folder(ckpt, tmp_path):
    """LPS, RAS and LAS copies of the sample MR, given as a folder: each mask has its input's grid,
    and all three are the same mask in world space (orientation handled through the affines)."""
    src = nib.load(str(MR))
    folder = tmp_path / "in"
    folder.mkdir()
    for codes in ("LPS", "RAS", "LAS"):
        nib.save(reoriented(src, codes), str(folder / f"mr_{codes}.nii.gz"))
    out = tmp_path / "eval"
    run_bundle(input=str(folder), ckpt_path=str(ckpt), output_dir=str(out), bias_correction=False,
               largest_component=False, **FAST)
    masks = {}
    for codes in ("LPS", "RAS", "LAS"):
        img = nib.load(str(folder / f"mr_{codes}.nii.gz"))
        seg = assert_same_grid(out / f"mr_{codes}_seg.nii.gz", img.shape, img.affine)
        masks[codes] = np.asarray(reoriented(seg, "RAS").dataobj)
    assert masks["RAS"].any() and not masks["RAS"].all()  # a real, non-trivial prediction
    np.testing.assert_array_equal(masks["LPS"], masks["RAS"])
    np.testing.assert_array_equal(masks["LAS"], masks["RAS"])


@pytest.mark.slow
def test_keep_slices_segments_the_volume_own_slices(ckpt, tmp_path):
    """keep_slices (the default): slices thicker than the grid's are resampled in-plane only, so a
    thick-slice MR goes through the network slice by slice as acquired (in any orientation) and its mask
    still comes back on the input's grid; thinner slices are resampled to the grid, never kept."""
    src = nib.load(str(MR))
    thick = nib.Nifti1Image(np.asarray(src.dataobj)[..., ::2], src.affine @ np.diag([1.0, 1.0, 2.0, 1.0]))
    folder = tmp_path / "in"
    folder.mkdir()
    for codes in ("LPS", "RAS"):
        nib.save(reoriented(thick, codes), str(folder / f"thick_{codes}.nii.gz"))
    parser = ConfigParser()
    parser.read_config(INFERENCE)
    parser.update({"bundle_root": str(BUNDLE), "bias_correction": False, **FAST})
    assert parser.get_parsed_content("keep_slices") is True
    grid = parser.get_parsed_content("preprocessing")({"image": str(folder / "thick_LPS.nii.gz")})["image"]
    assert grid.shape[-1] == thick.shape[2]  # the acquired 6 mm slices, no interpolated ones
    np.testing.assert_allclose(grid.pixdim.numpy(), [4.0, 4.0, 6.0], atol=1e-5)
    thin = parser.get_parsed_content("preprocessing")({"image": str(MR)})["image"]  # 3 mm slices
    np.testing.assert_allclose(thin.pixdim.numpy(), [4.0, 4.0, 4.0], atol=1e-5)
    out = tmp_path / "eval"
    run_bundle(input=str(folder), ckpt_path=str(ckpt), output_dir=str(out), bias_correction=False,
               largest_component=False, keep_slices=True, **FAST)
    masks = {}
    for codes in ("LPS", "RAS"):
        img = nib.load(str(folder / f"thick_{codes}.nii.gz"))
        seg = assert_same_grid(out / f"thick_{codes}_seg.nii.gz", img.shape, img.affine)
        masks[codes] = np.asarray(reoriented(seg, "RAS").dataobj)
    assert masks["RAS"].any() and not masks["RAS"].all()
    np.testing.assert_array_equal(masks["LPS"], masks["RAS"])


@pytest.mark.slow
def test_ct_nifti_nrrd_and_dicom_series(ckpt_ct, tmp_path):
    """CT normalization; NIfTI (RAS), NRRD and a 3-slice DICOM series folder read by ITK."""
    nrrd = tmp_path / "ct_copy.nrrd"
    itk.imwrite(itk.imread(str(CT)), str(nrrd))
    out = tmp_path / "eval"
    run_bundle(input=[str(CT), str(nrrd), str(DICOM)], modality="ct", ckpt_path=str(ckpt_ct), output_dir=str(out),
               largest_component=False, **FAST)
    ct = nib.load(str(CT))
    assert_same_grid(out / "totalseg_ct_sm_image_seg.nii.gz", ct.shape, ct.affine)
    shape, affine = itk_affine_ras(nrrd)
    assert_same_grid(out / "ct_copy_seg.nii.gz", shape, affine)
    shape, affine = itk_affine_ras(DICOM)
    assert shape == (512, 512, 3)
    assert_same_grid(out / "dcmqi_ct_3slice_seg.nii.gz", shape, affine)


def test_modality_selects_normalization_and_checkpoint():
    parser = ConfigParser()
    parser.read_config(INFERENCE)
    parser.update({"bundle_root": str(BUNDLE), "bias_correction": False, "modality": "ct"})
    names = [type(t).__name__ for t in parser.get_parsed_content("preprocessing").transforms]
    assert "ScaleIntensityRanged" in names and "ScaleIntensityRangePercentilesCappedd" not in names
    assert parser.get_parsed_content("ckpt_path").endswith("models/model_ct.pt")
    assert type(parser.get_parsed_content("augmented_inferer")).__name__ == "SliceInferer"  # CT: no test-time augmentation
    inferer = parser.get_parsed_content("inferer")  # autocast around it where the CPU has bfloat16 instructions
    assert type(inferer).__name__ == "AutocastInferer" and inferer.enabled == native_bfloat16("cpu")
    assert inferer.inferer is parser.get_parsed_content("augmented_inferer")
    parser = ConfigParser()
    parser.read_config(INFERENCE)
    parser.update({"bundle_root": str(BUNDLE), "bias_correction": False})
    names = [type(t).__name__ for t in parser.get_parsed_content("preprocessing").transforms]
    assert "ScaleIntensityRangePercentilesCappedd" in names and "ScaleIntensityRanged" not in names
    assert "N4BiasFieldCorrectiond" not in names
    assert parser.get_parsed_content("ckpt_path").endswith("models/model_seed_ensemble.pt")  # the shipped default
    inferer = parser.get_parsed_content("augmented_inferer")  # MR: test-time augmentation around the slice inferer
    assert inferer.ensembles is False  # ... of one network: the default's three trainings get one pass
    assert type(inferer).__name__ == "TestTimeAugmentationInferer" and inferer.inferer is parser.get_parsed_content("slice_inferer")
    assert inferer.slice_dim == 2 and inferer.gammas and inferer.zooms
    if HAS_N4:
        parser["bias_correction"] = True
        parser.parse()
        names = [type(t).__name__ for t in parser.get_parsed_content("preprocessing").transforms]
        assert names.index("Orientationd") < names.index("N4BiasFieldCorrectiond") < names.index("SafeSpacingd")


@pytest.mark.slow
def test_missing_checkpoint_names_the_file(tmp_path):
    missing = tmp_path / "nowhere" / "model.pt"
    proc = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.yaml",
         "--ckpt_path", str(missing), "--output_dir", str(tmp_path / "eval")],
        cwd=BUNDLE, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode != 0
    assert f"model checkpoint not found: {str(missing)!r}" in proc.stderr
    assert not (tmp_path / "eval").exists()


def test_list_inputs(tmp_path):
    assert list_inputs(str(MR)) == [{"image": str(MR)}]
    assert list_inputs(str(DICOM)) == [{"image": str(DICOM)}]  # a series folder is one case
    folder = tmp_path / "cases"
    folder.mkdir()
    (folder / "b.nii.gz").write_bytes(b"")
    (folder / "a.nrrd").write_bytes(b"")
    (folder / "notes.txt").write_text("x")
    os.symlink(DICOM, folder / "series")
    assert [d["image"] for d in list_inputs(str(folder))] == [
        str(folder / "a.nrrd"), str(folder / "b.nii.gz"), str(folder / "series")
    ]
    # a decathlon-style JSON, paths relative to it
    (tmp_path / "mr").mkdir()
    os.symlink(MR, tmp_path / "mr" / "img.nii.gz")
    os.symlink(MR_LABEL, tmp_path / "mr" / "lab.nii.gz")
    (tmp_path / "list.json").write_text(json.dumps(
        {"training": [], "validation": [{"image": "mr/img.nii.gz", "label": "mr/lab.nii.gz"}]}
    ))
    data = list_inputs(str(tmp_path / "list.json"), "validation", require_label=True)
    assert data == [{"image": str(tmp_path / "mr/img.nii.gz"), "label": str(tmp_path / "mr/lab.nii.gz")}]
    # the project's datalist (custom.data): one list per modality, a liver value for all items
    (tmp_path / "project.json").write_text(json.dumps(
        {"liver_value": 5, "ct": [{"image": "mr/img.nii.gz"}], "mr": [{"image": "mr/img.nii.gz", "label": "mr/lab.nii.gz"}]}
    ))
    data = list_inputs(str(tmp_path / "project.json"), "mr", require_label=True)
    assert data == [{"image": str(tmp_path / "mr/img.nii.gz"), "label": str(tmp_path / "mr/lab.nii.gz"), "liver_value": 5}]
    with pytest.raises(ValueError, match="no list 'testing'"):
        list_inputs(str(tmp_path / "project.json"), "testing")
    with pytest.raises(ValueError, match="has no 'label'"):
        list_inputs([{"image": str(MR)}], require_label=True)
    with pytest.raises(FileNotFoundError, match="nope.nii.gz"):
        list_inputs(str(tmp_path / "nope.nii.gz"))


ENSEMBLE = str(BUNDLE / "configs" / "ensemble.yaml")
INFERENCE_UNET = str(BUNDLE / "configs" / "inference_unet.yaml")


def assert_mask_of_mean_probabilities(tmp_path: Path, members: tuple[str, ...]) -> None:
    """The sample's probabilities written in tmp_path/ensemble are the mean of the members' (each
    written alone in tmp_path/<member>, and unlike each other), and its mask is their argmax, in the
    input's grid."""
    prob = {k: nib.load(tmp_path / k / "totalseg_mr_sm_image_prob.nii.gz").get_fdata() for k in (*members, "ensemble")}
    assert not any(np.allclose(prob[a], prob[b], atol=1e-3) for a, b in zip(members, members[1:]))
    np.testing.assert_allclose(prob["ensemble"], sum(prob[m] for m in members) / len(members), atol=1e-4)
    src = nib.load(str(MR))
    seg = assert_same_grid(tmp_path / "ensemble" / "totalseg_mr_sm_image_seg.nii.gz", src.shape, src.affine)
    np.testing.assert_array_equal(np.asarray(seg.dataobj), (prob["ensemble"][..., 1] > prob["ensemble"][..., 0]).astype(np.uint8))


@pytest.mark.slow
def test_ensemble_averages_dalace_and_the_u_net(tmp_path):
    """ensemble.yaml: the written probabilities are the mean of DALACE's (both paths) and the U-Net's,
    each run alone with its own file; the ensemble's file comes from theirs (python -m custom.networks)."""
    dalace = tiny_checkpoint(tmp_path / "model.pt", extra_paths=["ct"], **FAST)
    unet = tiny_checkpoint(tmp_path / "unet.pt", configs=(INFERENCE, INFERENCE_UNET), extra_paths=[], **FAST)
    both = tmp_path / "model_ensemble.pt"
    subprocess.run([sys.executable, "-m", "custom.networks", "ensemble", str(dalace), str(unet), str(both)], check=True, cwd=REPO)
    common = dict(input=[{"image": str(MR)}], bias_correction=False, largest_component=False, save_probabilities=True, **FAST)
    run_bundle(output_dir=str(tmp_path / "dalace"), ckpt_path=str(dalace), extra_paths=["ct"], save_domain_agnostic=True, **common)
    run_bundle((INFERENCE, INFERENCE_UNET), output_dir=str(tmp_path / "unet"), ckpt_path=str(unet), extra_paths=[], **common)
    run_bundle((INFERENCE, ENSEMBLE), output_dir=str(tmp_path / "ensemble"), models_dir=str(tmp_path), extra_paths=["ct"],
               save_domain_agnostic=True, **common)
    # the ensemble's domain-agnostic image is DALACE's (the U-Net renders none)
    agnostic = {k: nib.load(tmp_path / k / "totalseg_mr_sm_image_agnostic.nii.gz").get_fdata() for k in ("dalace", "ensemble")}
    np.testing.assert_allclose(agnostic["ensemble"], agnostic["dalace"], atol=1e-5)
    assert_mask_of_mean_probabilities(tmp_path, ("dalace", "unet"))


def test_ensemble_command_refuses_swapped_missing_or_broken_files(tmp_path):
    dalace = tiny_checkpoint(tmp_path / "model.pt", extra_paths=["ct"])
    unet = tiny_checkpoint(tmp_path / "unet.pt", configs=(INFERENCE, INFERENCE_UNET), extra_paths=[])
    cases = (
        ([unet, dalace], "DALACE model .*unet.pt.* has no anatomy_encoder"),
        ([dalace, dalace], "U-Net model .*model.pt.* holds DALACE's weights"),
        ([dalace, tmp_path / "none.pt"], "U-Net model not found: .*none.pt"),
        ([dalace, tmp_path / "empty.pt"], "U-Net model .*empty.pt.* is empty"),
    )
    (tmp_path / "empty.pt").write_bytes(b"")
    for (a, b), message in cases:
        done = subprocess.run([sys.executable, "-m", "custom.networks", "ensemble", str(a), str(b), str(tmp_path / "out.pt")],
                              cwd=REPO, capture_output=True, text=True)
        assert done.returncode != 0 and re.search(message, done.stderr), done.stderr[-500:]
    assert not (tmp_path / "out.pt").exists()


SELF_ENSEMBLE = str(BUNDLE / "configs" / "self_ensemble.yaml")
SEED_ENSEMBLE = str(BUNDLE / "configs" / "seed_ensemble.yaml")


def _student_of(teacher: Path, path: Path, seed: int = 1) -> Path:
    """The teacher's state_dict with every weight moved: a student that segments differently."""
    torch.manual_seed(seed)
    state = torch.load(teacher, map_location="cpu", weights_only=True)
    torch.save({k: v + 0.2 * torch.randn_like(v) if v.is_floating_point() else v for k, v in state.items()}, path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["self_ensemble", "seed_ensemble", "default"])
def test_dalace_ensembles_average_their_members(tmp_path, kind):
    """self_ensemble.yaml (a teacher and its student), seed_ensemble.yaml and inference.yaml's default
    (here three trainings, the default with models_dir's model.pt as the first): the written probabilities
    are the mean of the members' (both paths each), each run alone with its own file; the members hold
    weights of their own (no module shared, which would load one member's weights over another's)."""
    first = tiny_checkpoint(tmp_path / "first.pt", extra_paths=["ct"], **FAST)
    others = [_student_of(first, tmp_path / f"other_{i}.pt", seed=i) for i in (1, 2)]
    if kind == "self_ensemble":
        names, files, configs, more = ("teacher", "student"), [first, others[0]], (INFERENCE, SELF_ENSEMBLE), {}
        command = ["self_ensemble", *map(str, files), str(tmp_path / "model_self_ensemble.pt")]
    else:
        names, files = ("seed_0", "seed_1", "seed_2"), [first, *others]
        configs = (INFERENCE,) if kind == "default" else (INFERENCE, SELF_ENSEMBLE, SEED_ENSEMBLE)
        more = {} if kind == "default" else {"ensemble_members": list(names)}
        command = ["seed_ensemble", *map(str, files), "--output", str(tmp_path / "model_seed_ensemble.pt")]
        if kind == "default":
            shutil.copy(first, tmp_path / "model.pt")  # as shipped: the ensemble holds models_dir's model.pt
    subprocess.run([sys.executable, "-m", "custom.networks", *command], check=True, cwd=REPO)
    # test-time augmentation off for all (a member alone gets it by default, the seed ensemble does not)
    common = dict(input=[{"image": str(MR)}], bias_correction=False, largest_component=False, save_probabilities=True,
                  extra_paths=["ct"], test_time_augmentation=False, **FAST)
    for name, ckpt in zip(names, files):
        run_bundle(output_dir=str(tmp_path / name), ckpt_path=str(ckpt), **common)
    run_bundle(configs, output_dir=str(tmp_path / "ensemble"), models_dir=str(tmp_path), **more, **common)
    assert_mask_of_mean_probabilities(tmp_path, names)


def test_seed_ensemble_config_refuses_member_names_the_file_does_not_hold(tmp_path):
    """seed_ensemble.yaml builds its network from the file; ensemble_members, when given, must be the
    file's names in its order, or the inference stops naming both before any case (not read and ignored)."""
    first = tiny_checkpoint(tmp_path / "first.pt", extra_paths=["ct"], **FAST)
    others = [_student_of(first, tmp_path / f"other_{i}.pt", seed=i) for i in (1, 2)]
    subprocess.run([sys.executable, "-m", "custom.networks", "seed_ensemble", str(first), *map(str, others),
                    "--output", str(tmp_path / "model_seed_ensemble.pt")], check=True, cwd=REPO)
    common = dict(input=[{"image": str(MR)}], bias_correction=False, extra_paths=["ct"], models_dir=str(tmp_path), **FAST)
    with pytest.raises(Exception) as err:
        run_bundle((INFERENCE, SELF_ENSEMBLE, SEED_ENSEMBLE), output_dir=str(tmp_path / "two"), ensemble_members=["seed_0", "seed_1"], **common)
    message = str(cause(err.value, ValueError))
    assert "holds the members ['seed_0', 'seed_1', 'seed_2'], not ['seed_0', 'seed_1']" in message and "model_seed_ensemble.pt" in message
    assert not (tmp_path / "two").exists() or not list((tmp_path / "two").glob("*_seg.nii.gz"))


def test_self_ensemble_command_refuses_a_u_net_or_another_architecture(tmp_path):
    teacher = tiny_checkpoint(tmp_path / "model.pt", extra_paths=["ct"])
    one_path = tiny_checkpoint(tmp_path / "one_path.pt", extra_paths=[])
    unet = tiny_checkpoint(tmp_path / "unet.pt", configs=(INFERENCE, INFERENCE_UNET), extra_paths=[])
    cases = (
        ([teacher, unet], "student model .*unet.pt.* has no anatomy_encoder"),
        ([teacher, one_path], "teacher model .*model.pt.* and student model .*one_path.pt.* are not one architecture"),
        ([tmp_path / "none.pt", teacher], "teacher model not found: .*none.pt"),
    )
    for (a, b), message in cases:
        done = subprocess.run([sys.executable, "-m", "custom.networks", "self_ensemble", str(a), str(b), str(tmp_path / "out.pt")],
                              cwd=REPO, capture_output=True, text=True)
        assert done.returncode != 0 and re.search(message, done.stderr), done.stderr[-500:]
    assert not (tmp_path / "out.pt").exists()


def test_network_def_refuses_a_file_that_is_not_its_own_even_unchecked():
    """MONAI Label loads the models/*.pt a user picks into network_def with strict=False: inference.yaml's
    network_def (and each copy an ensemble makes of it) refuses an ensemble's or CT's file, which would
    leave weights at random, and takes its own, strict or not."""
    import copy

    from custom.networks import ensemble_state

    def network_def(**overrides):
        parser = ConfigParser()
        parser.read_config(INFERENCE)
        parser.update({"bundle_root": str(BUNDLE), **TINY, **overrides})
        return parser.get_parsed_content("network_def")

    both_paths, ct = network_def(extra_paths=["ct"]), network_def(modality="ct")
    own = both_paths.state_dict()
    both_paths.load_state_dict(own, strict=False)
    copy.deepcopy(both_paths).load_state_dict(own)
    seeds = ensemble_state({"seed_0": own, "seed_1": own, "seed_2": own})
    for net in (both_paths, copy.deepcopy(both_paths)):
        with pytest.raises(RuntimeError, match=r"an ensemble of 3 networks \(seed_0, seed_1, seed_2\).*choose model.pt"):
            net.load_state_dict(seeds, strict=False)
    with pytest.raises(RuntimeError, match=r"weights missing \(extra_paths.ct.anatomy_encoder"):
        both_paths.load_state_dict(ct.state_dict(), strict=False)
    with pytest.raises(RuntimeError, match=r"a state_dict with \d+ keys it does not have \(extra_paths.ct"):
        ct.load_state_dict(own, strict=False)


def test_network_is_what_the_checkpoint_holds(tmp_path):
    """inference.yaml's network: network_def for one training's file, an ensemble of it under the file's
    member names (in the file's order, the first member network_def itself) for an ensemble of such
    trainings; network_def again for a file of other members or none, which the checks then name."""
    from custom.networks import ProbabilityEnsemble, ensemble_state, network_for_checkpoint

    net = torch.nn.Conv2d(1, 2, 1)
    single = tmp_path / "one.pt"
    torch.save(net.state_dict(), single)
    assert network_for_checkpoint(single, net) is net
    names = ["seed_2", "seed_0", "seed_1"]
    torch.save(ensemble_state({n: torch.nn.Conv2d(1, 2, 1).state_dict() for n in names}), tmp_path / "three.pt")
    ensemble = network_for_checkpoint(tmp_path / "three.pt", net)
    assert isinstance(ensemble, ProbabilityEnsemble) and list(ensemble.members) == names
    assert ensemble.members["seed_2"] is net and ensemble.members["seed_0"] is not net
    ensemble.load_state_dict(torch.load(tmp_path / "three.pt", weights_only=True), strict=True)
    assert not torch.equal(ensemble.members["seed_0"].weight, ensemble.members["seed_1"].weight)  # no module shared
    torch.save(ensemble_state({"dalace": net.state_dict(), "unet_ct": torch.nn.Sequential(net).state_dict()}), tmp_path / "mixed.pt")
    assert network_for_checkpoint(tmp_path / "mixed.pt", net) is net
    assert network_for_checkpoint(tmp_path / "missing.pt", net) is net
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    assert network_for_checkpoint(tmp_path / "broken.pt", net) is net


def test_default_chooses_the_ensemble_where_models_dir_holds_one(tmp_path):
    """MR: models_dir's model_seed_ensemble.pt where there is one, else its model.pt (a training's
    folder); CT: model_ct.pt either way."""
    def ckpt_path(models_dir, modality="mr"):
        parser = ConfigParser()
        parser.read_config(INFERENCE)
        parser.update({"bundle_root": str(BUNDLE), "models_dir": str(models_dir), "modality": modality})
        return parser.get_parsed_content("ckpt_path")

    assert ckpt_path(tmp_path) == str(tmp_path / "model.pt")
    (tmp_path / "model_seed_ensemble.pt").write_bytes(b"")
    assert ckpt_path(tmp_path) == str(tmp_path / "model_seed_ensemble.pt")
    assert ckpt_path(tmp_path, "ct") == str(tmp_path / "model_ct.pt")


def test_a_training_after_the_ensemble_stops_the_default_inference(tmp_path):
    """models_dir holds an ensemble and a model.pt that is none of its members (a training wrote it
    after the ensemble was made): the default inference stops before any case, naming both files and
    both ways on, instead of segmenting with the ensemble and ignoring the training; --ckpt_path of the
    new model.pt segments with it."""
    first = tiny_checkpoint(tmp_path / "first.pt", extra_paths=["ct"], **FAST)
    second = _student_of(first, tmp_path / "second.pt")
    subprocess.run([sys.executable, "-m", "custom.networks", "seed_ensemble", str(first), str(second),
                    "--output", str(tmp_path / "model_seed_ensemble.pt")], check=True, cwd=REPO)
    _student_of(first, tmp_path / "model.pt", seed=7)  # the new training
    common = dict(input=[{"image": str(MR)}], bias_correction=False, largest_component=False, **FAST)
    workflow = ConfigWorkflow(config_file=[INFERENCE], workflow_type="infer", bundle_root=str(BUNDLE),
                              models_dir=str(tmp_path), output_dir=str(tmp_path / "eval"), **common)
    with pytest.raises(Exception) as info:
        workflow.initialize()
    message = str(cause(info.value, ValueError))
    assert f"{str(tmp_path / 'model.pt')!r} is not a member of the ensemble {str(tmp_path / 'model_seed_ensemble.pt')!r}" in message
    assert f"--ckpt_path {tmp_path / 'model.pt'}" in message and "python -m custom.networks seed_ensemble" in message
    assert not (tmp_path / "eval").exists() or not any((tmp_path / "eval").glob("*_seg.nii.gz"))
    run_bundle(models_dir=str(tmp_path), ckpt_path=str(tmp_path / "model.pt"), output_dir=str(tmp_path / "new"), **common)
    assert (tmp_path / "new" / "totalseg_mr_sm_image_seg.nii.gz").is_file()


@pytest.mark.slow
def test_a_member_trained_at_another_spacing_segments_at_its_own(tmp_path):
    """seed_ensemble --spacings stores the 2 mm member with its spacing; inference.yaml's network (3 mm
    slices) runs it on slices resized to 2 mm (RescaledInput) beside the 3 mm member, and the ensemble's
    probabilities are the mean of the two, the 2 mm member's computed here from its own weights."""
    from custom.networks import ProbabilityEnsemble, RescaledInput

    first = tiny_checkpoint(tmp_path / "first.pt", extra_paths=["ct"], **FAST)
    finer = _student_of(first, tmp_path / "finer.pt")
    subprocess.run([sys.executable, "-m", "custom.networks", "seed_ensemble", str(first), str(finer), "--spacings", "[4,2]",
                    "--spacing", "4", "--output", str(tmp_path / "model_seed_ensemble.pt")], check=True, cwd=REPO)
    state = torch.load(tmp_path / "model_seed_ensemble.pt", weights_only=True)
    assert state["members.seed_1.trained_spacing"].tolist() == [2.0, 2.0] and "members.seed_0.segmenter.final_conv.bias" in state
    common = dict(input=[{"image": str(MR)}], bias_correction=False, largest_component=False, save_probabilities=True,
                  extra_paths=["ct"], test_time_augmentation=False, **FAST)
    workflow = run_bundle(output_dir=str(tmp_path / "ensemble"), models_dir=str(tmp_path), **common)
    network = workflow.parser.get_parsed_content("network")
    assert isinstance(network, ProbabilityEnsemble) and isinstance(network.members["seed_1"], RescaledInput)
    assert network.members["seed_1"].network is not network.members["seed_0"]
    run_bundle(output_dir=str(tmp_path / "seed_0"), ckpt_path=str(first), **common)
    # the 2 mm member alone: its network_def wrapped as the ensemble wraps it, with its weights
    alone = tmp_path / "seed_1.pt"
    torch.save(RescaledInput(torch.nn.Identity(), 2.0, 4.0).state_dict() | {f"network.{k}": v for k, v in torch.load(finer, weights_only=True).items()}, alone)
    run_bundle(output_dir=str(tmp_path / "seed_1"), ckpt_path=str(alone),
               network="$custom.networks.RescaledInput(@network_def, 2.0, @spacing).to(@device)", **common)
    assert_mask_of_mean_probabilities(tmp_path, ("seed_0", "seed_1"))


def test_seed_ensemble_command_refuses_one_model_or_mixed_architectures(tmp_path):
    first = tiny_checkpoint(tmp_path / "model.pt", extra_paths=["ct"])
    one_path = tiny_checkpoint(tmp_path / "one_path.pt", extra_paths=[])
    cases = (
        ([first], "needs two or more DALACE models, got 1"),
        ([first, first, one_path], "seed_0 model .*model.pt.* and seed_2 model .*one_path.pt.* are not one architecture"),
        ([first, first, "--spacings", "[3,2,2]"], r"one positive spacing \(mm\) per model: 2 models, got \[3.0, 2.0, 2.0\]"),
        ([first, first, "--spacings", "3"], r"one positive spacing \(mm\) per model: 2 models, got \[3.0\]"),
    )
    for models, message in cases:
        done = subprocess.run([sys.executable, "-m", "custom.networks", "seed_ensemble", *map(str, models), "--output", str(tmp_path / "out.pt")],
                              cwd=REPO, capture_output=True, text=True)
        assert done.returncode != 0 and re.search(message, done.stderr), done.stderr[-500:]
    assert not (tmp_path / "out.pt").exists()
