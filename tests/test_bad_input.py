"""Bad input, full disks and broken checkpoints (issue 13): every error names the file and the problem
in its first line before any compute, nothing partial is left behind, and nothing that failed exits 0."""

from __future__ import annotations

import errno
import itertools
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.bundle import ConfigParser, ConfigWorkflow
from monai.data import MetaTensor

from custom.data import select_inputs
from custom.handlers import AtomicCheckpointSaver, check_checkpoint
from custom.handlers.input_check import InputCheck, InputError, require_writable_dir, resampled_voxels
from custom.transforms import AtomicSaveImaged
from tests.helpers import BUNDLE, CT, FAST, INFERENCE, MR, TINY, cause, tiny_checkpoint

NO_N4 = {"bias_correction": False, "largest_component": False}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("models") / "model.pt")


def workflow(**overrides) -> ConfigWorkflow:
    wf = ConfigWorkflow(config_file=INFERENCE, workflow_type="infer", bundle_root=str(BUNDLE), **NO_N4, **FAST, **overrides)
    wf.initialize()
    return wf


def save(path: Path, array: np.ndarray, affine=None) -> Path:
    nib.save(nib.Nifti1Image(array, np.diag([3.0, 3.0, 3.0, 1.0]) if affine is None else affine), str(path))
    return path


def truncated(path: Path) -> Path:
    data = MR.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def mr_array() -> np.ndarray:
    return np.asarray(nib.load(str(MR)).dataobj).astype(np.float32)


def first_line(e: BaseException) -> str:
    return str(e).splitlines()[0]


# ---------------------------------------------------------------------------- 1. writing results
def test_output_under_a_regular_file_fails_before_compute(ckpt, tmp_path):
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "eval"
    with pytest.raises(RuntimeError) as info:
        workflow(input=str(MR), ckpt_path=str(ckpt), output_dir=str(out))  # initialize, before any case
    error = first_line(cause(info.value, OSError))
    assert error.startswith(f"output_dir {str(out)!r} cannot be created or written: Not a directory"), error


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_unwritable_output_dir_fails_at_start(tmp_path):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    try:
        with pytest.raises(OSError, match="ro' cannot be created or written"):
            require_writable_dir(out)
    finally:
        out.chmod(0o700)


def full_disk(monkeypatch):
    """nibabel writes half the file, then the disk is full (as a small tmpfs gives)."""
    real = nib.save

    def save_half(img, filename):
        real(img, filename)
        data = Path(filename).read_bytes()
        Path(filename).write_bytes(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(nib, "save", save_half)


def test_failed_write_raises_and_leaves_no_partial_file(tmp_path, monkeypatch):
    img = MetaTensor(torch.ones(1, 4, 5, 6), affine=torch.eye(4), meta={"filename_or_obj": "case.nii.gz"})
    saver = AtomicSaveImaged(keys="pred", output_dir=str(tmp_path), output_postfix="seg", separate_folder=False, print_log=False)
    killed = tmp_path / ".case_seg.nii.gz.k1ll.tmp.nii.gz"  # of a run killed while writing
    killed.write_bytes(b"partial")
    saver({"pred": img})
    good = tmp_path / "case_seg.nii.gz"
    assert not killed.exists()
    before = good.read_bytes()
    full_disk(monkeypatch)
    with pytest.raises(OSError) as info:
        saver({"pred": img * 0})
    assert first_line(info.value).startswith(f"{good}: not written") and "No space left on device" in first_line(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case_seg.nii.gz"]  # no temporary file left
    assert good.read_bytes() == before  # the complete earlier file, not a partial one


@pytest.mark.slow
def test_full_disk_fails_the_run_with_no_mask(ckpt, tmp_path, monkeypatch):
    out = tmp_path / "eval"
    wf = workflow(input=str(MR), ckpt_path=str(ckpt), output_dir=str(out))
    full_disk(monkeypatch)
    with pytest.raises(Exception) as info:
        wf.run()
    assert first_line(cause(info.value, OSError)).startswith(f"{out / 'totalseg_mr_sm_image_seg.nii.gz'}: not written")
    assert list(out.iterdir()) == []


def test_every_saver_of_the_inference_config_is_atomic():
    parser = ConfigParser()
    parser.read_config(INFERENCE)
    parser.update({"bundle_root": str(BUNDLE), "save_probabilities": True, "save_domain_agnostic": True, **TINY})
    savers = [t for t in parser.get_parsed_content("postprocessing").transforms if "Save" in type(t).__name__]
    assert len(savers) == 3 and all(isinstance(t, AtomicSaveImaged) for t in savers)


# ------------------------------------------------------------------------- 3, 5, 7. input checks
def check(items, **kwargs) -> list[dict]:
    return InputCheck(pixdim=[3.0, 3.0, 3.0], **kwargs).check([{"image": str(i)} for i in items])


@pytest.mark.parametrize(
    "make, problem",
    [
        (lambda p: truncated(p / "cut.nii.gz"), "unreadable (EOFError: Compressed file ended"),
        (lambda p: save(p / "flat.nii.gz", mr_array()[:, :, 5]), "2D image of shape (117, 91), expected 3D or single-channel 4D"),
        (lambda p: save(p / "two.nii.gz", np.stack([mr_array()] * 2, -1)), "4D image of shape (117, 91, 20, 2)"),
        (lambda p: p / "absent.nii.gz", "missing file"),
    ],
    ids=["truncated", "2d", "4d_two_channels", "missing"],
)
def test_unusable_input_is_named_in_the_first_line(tmp_path, make, problem):
    path = make(tmp_path)
    with pytest.raises(InputError) as info:
        check([path])
    assert first_line(info.value).startswith(f"{path}: ") and problem in first_line(info.value)


def test_non_finite_input_is_rejected_and_a_flat_one_warned(tmp_path, caplog):
    bad = mr_array()
    bad[3, 4, 5], bad[6, 7, 8] = np.nan, np.inf
    nan = save(tmp_path / "nan.nii.gz", bad)
    with pytest.raises(InputError, match=f"^{nan}: 2 non-finite values"):
        check([nan])
    zero = save(tmp_path / "zero.nii.gz", np.zeros((20, 20, 10), np.float32))
    with caplog.at_level(logging.WARNING):
        assert check([zero], percentiles=[0.5, 99.5]) == [{"image": str(zero)}]
    assert f"{zero}: no usable intensity range (every voxel is 0)" in caplog.text
    caplog.clear()
    air = save(tmp_path / "air.nii.gz", np.full((20, 20, 10), -1000.0, np.float32) + np.arange(10))
    with caplog.at_level(logging.WARNING):
        check([air, MR], window=[-125.0, 275.0])
    assert f"{air}: no usable intensity range (no voxel inside the window" in caplog.text and str(MR) not in caplog.text


def test_single_channel_4d_is_accepted(tmp_path):
    four = save(tmp_path / "four.nii.gz", mr_array()[..., None])
    assert check([four]) == [{"image": str(four)}]


def test_resampled_size_is_bounded(tmp_path):
    # 100 x 100 x 10 voxels of 30 mm: a tiny file, 9 x 10^7 voxels at 3 mm
    huge = save(tmp_path / "huge.nii.gz", np.ones((100, 100, 10), np.uint8), np.diag([30.0, 30.0, 30.0, 1.0]))
    with pytest.raises(InputError, match=f"^{huge}: 89,369,371 voxels after resampling .* more than max_voxels=50,000,000"):
        check([huge], max_voxels=5e7)
    # the count is what Orientationd + Spacingd make of the sample MR (LPS), also when keeping its slices
    parser = ConfigParser()
    parser.read_config(INFERENCE)
    img = nib.load(str(MR))  # 3 mm slices: kept under keep_slices on a 1.5 mm grid, resampled on a 4 mm one
    for spacing, keep in itertools.product(([2.0, 2.5, 1.5], [2.0, 2.5, 4.0]), (False, True)):
        parser.update({"bundle_root": str(BUNDLE), "bias_correction": False, "spacing": spacing, "keep_slices": keep})
        grid = parser.get_parsed_content("preprocessing", lazy=False)({"image": str(MR)})["image"]
        assert grid.shape[-1] == (img.shape[2] if keep and spacing[2] < 3.0 else round((img.shape[2] - 1) * 3.0 / spacing[2]) + 1)
        counted = resampled_voxels(img.shape, img.affine, spacing, parser.get_parsed_content("max_pixdim", lazy=False))
        assert counted == np.prod(grid.shape[1:])


def test_all_bad_files_reported_at_once_then_the_good_ones_kept(tmp_path, caplog):
    good = [MR, CT]
    bad = [truncated(tmp_path / "b.nii.gz"), save(tmp_path / "flat.nii.gz", mr_array()[:, :, 0]), tmp_path / "gone.nii.gz"]
    checker = InputCheck(pixdim=[3.0, 3.0, 3.0])
    with caplog.at_level(logging.ERROR):
        kept = checker.check(select_inputs([str(p) for p in [good[0], *bad, good[1]]]))
    assert [k["image"] for k in kept] == [str(p) for p in good]
    assert "skipping 3 unusable inference inputs" in caplog.text and all(f"{p}: " in caplog.text for p in bad)
    with pytest.raises(InputError) as info:
        checker.completed(Engine(lambda e, b: None))
    assert first_line(info.value) == "segmented 2 of 5 inference inputs; 3 skipped as unusable:"


@pytest.mark.slow
def test_folder_with_a_truncated_file_segments_the_others_and_exits_non_zero(ckpt, tmp_path):
    """--dataset_dir (the model zoo's id) with good, truncated and good (single-channel 4D) files,
    through the command line: the good ones are segmented, the bad one named, the exit code non-zero."""
    folder = tmp_path / "cases"
    folder.mkdir()
    save(folder / "a.nii.gz", mr_array(), nib.load(str(MR)).affine)
    truncated(folder / "b.nii.gz")
    save(folder / "c.nii.gz", mr_array()[..., None], nib.load(str(MR)).affine)
    out = tmp_path / "eval"
    overrides = {**TINY, **FAST, **NO_N4, "dataset_dir": folder, "ckpt_path": ckpt, "output_dir": out}
    args = [a for k, v in overrides.items() for a in (f"--{k}", json.dumps(v) if isinstance(v, list) else str(v))]
    proc = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.yaml", *args],
                          cwd=BUNDLE, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, log[-3000:]
    assert f"{folder / 'b.nii.gz'}: unreadable (EOFError" in log
    assert "segmented 2 of 3 inference inputs; 1 skipped as unusable" in log
    assert sorted(p.name for p in out.iterdir()) == ["a_seg.nii.gz", "c_seg.nii.gz"]
    assert nib.load(str(out / "c_seg.nii.gz")).shape[:3] == nib.load(str(MR)).shape


def test_nan_input_fails_before_compute_naming_the_file(ckpt, tmp_path):
    bad = mr_array()
    bad[0, 0, 0] = np.nan
    nan = save(tmp_path / "nan.nii.gz", bad)
    wf = workflow(input=str(nan), ckpt_path=str(ckpt), output_dir=str(tmp_path / "eval"))
    with pytest.raises(Exception) as info:
        wf.run()
    assert first_line(cause(info.value, InputError)).startswith(f"{nan}: 1 non-finite values")
    assert list((tmp_path / "eval").iterdir()) == []


# ------------------------------------------------------------------------------ 4. what is named
def test_inputs_are_what_the_user_named(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    os.symlink(MR, folder / "x.nii.gz")
    os.symlink(CT, folder / "y.nii.gz")
    (folder / "datalist.json").write_text(json.dumps({"testing": [{"image": "y.nii.gz"}]}))
    assert select_inputs(default=str(MR)) == [{"image": str(MR)}]
    assert [d["image"] for d in select_inputs(dataset_dir=folder)] == [str(folder / "x.nii.gz"), str(folder / "y.nii.gz")]
    elsewhere = tmp_path / "lists"
    elsewhere.mkdir()
    (elsewhere / "dl.json").write_text(json.dumps({"testing": [{"image": "x.nii.gz"}]}))  # relative to dataset_dir
    assert select_inputs(dataset_dir=folder, datalist=elsewhere / "dl.json") == [{"image": str(folder / "x.nii.gz")}]
    assert select_inputs(datalist=folder / "datalist.json") == [{"image": str(folder / "y.nii.gz")}]
    with pytest.raises(ValueError, match="inference inputs named twice"):
        select_inputs(input=str(MR), dataset_dir=folder)
    with pytest.raises(NotADirectoryError, match="x.nii.gz' is not a folder"):
        select_inputs(dataset_dir=folder / "x.nii.gz")
    # the config: --dataset_dir segments that folder, never the embedded sample
    parser = ConfigParser()
    parser.read_config(INFERENCE)
    parser.update({"bundle_root": str(BUNDLE)})
    assert parser.get_parsed_content("cases") == [{"image": str(BUNDLE / "sample_data/mr/totalseg_mr_sm_image.nii.gz")}]
    parser.update({"dataset_dir": str(folder)})
    assert [d["image"] for d in parser.get_parsed_content("cases", lazy=False)] == [str(folder / "x.nii.gz"), str(folder / "y.nii.gz")]
    parser.update({"input": str(MR)})
    with pytest.raises(Exception) as info:
        parser.get_parsed_content("cases", lazy=False)
    assert first_line(cause(info.value, ValueError)).startswith("inference inputs named twice")


# --------------------------------------------------------------------------------- 7. checkpoints
def test_broken_checkpoints_are_named(ckpt, tmp_path):
    cut = tmp_path / "cut.pt"
    cut.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError) as info:
        check_checkpoint(cut)
    assert first_line(info.value).startswith(f"model checkpoint {str(cut)!r} is truncated or not a PyTorch checkpoint")
    with pytest.raises(ValueError, match=rf"^model checkpoint {str(empty)!r} is empty \(0 bytes\)"):
        check_checkpoint(empty)
    pickled = tmp_path / "pickled.pt"
    torch.save({"x": Path("/")}, pickled)  # an arbitrary object: weights_only refuses it
    with pytest.raises(ValueError, match="refused by weights_only=True"):
        check_checkpoint(pickled)
    assert check_checkpoint(ckpt) == str(ckpt)
    with pytest.raises(RuntimeError) as info:  # the config, before any compute
        workflow(input=str(MR), ckpt_path=str(cut), output_dir=str(tmp_path / "eval"))
    assert first_line(cause(info.value, ValueError)).startswith(f"model checkpoint {str(cut)!r} is truncated")
    assert not (tmp_path / "eval").exists()


def test_a_checkpoint_of_the_other_paths_is_named_with_the_fix(tmp_path):
    """A single-path model.pt (the paper's, or before extra_paths) under the two-path default, and the
    reverse: refused before any compute, naming the file, the parts that differ and the option."""
    one_path = tiny_checkpoint(tmp_path / "one.pt", extra_paths=[])
    with pytest.raises(RuntimeError) as info:
        workflow(input=str(MR), ckpt_path=str(one_path), output_dir=str(tmp_path / "eval"))
    message = str(cause(info.value, ValueError))
    assert message.startswith(f"model checkpoint {str(one_path)!r} is not a state_dict of this network_def")
    assert "missing ['extra_paths.ct.anatomy_encoder', 'extra_paths.ct.generator']" in message and '--extra_paths "[]"' in message
    assert not (tmp_path / "eval").exists()
    workflow(input=str(MR), ckpt_path=str(one_path), extra_paths=[], output_dir=str(tmp_path / "eval")).run()
    assert (tmp_path / "eval" / f"{MR.name.replace('.nii.gz', '')}_seg.nii.gz").exists()
    both = tiny_checkpoint(tmp_path / "both.pt")
    with pytest.raises(RuntimeError) as info:
        workflow(input=str(MR), ckpt_path=str(both), extra_paths=[], output_dir=str(tmp_path / "eval2"))
    assert "unexpected ['extra_paths.ct.anatomy_encoder', 'extra_paths.ct.generator']" in str(cause(info.value, ValueError))


def test_an_ensemble_file_of_other_members_is_named_with_its_members(tmp_path):
    """A three-training seed ensemble under seed_ensemble.yaml's two members: the error names the
    members that differ and those the file holds, not just 'members'."""
    from custom.networks import ProbabilityEnsemble
    from custom.networks.ensemble import ensemble_state

    def net():
        return torch.nn.Conv2d(1, 2, 1)
    three = ensemble_state({f"seed_{i}": net().state_dict() for i in range(3)})
    torch.save(three, tmp_path / "three.pt")
    two = ProbabilityEnsemble({"seed_0": net(), "seed_1": net()})
    with pytest.raises(ValueError) as err:
        check_checkpoint(tmp_path / "three.pt", network=two)
    assert "missing nothing, unexpected ['members.seed_2']" in str(err.value)
    assert "the file holds ['seed_0', 'seed_1', 'seed_2'] (--ensemble_members names them)" in str(err.value)
    assert check_checkpoint(tmp_path / "three.pt", network=ProbabilityEnsemble({f"seed_{i}": net() for i in range(3)}))


def test_save_removes_temporary_files_of_killed_runs(tmp_path):
    net = torch.nn.Linear(2, 2)
    engine = Engine(lambda e, b: None)
    engine.state.epoch = 4
    stale = [tmp_path / ".checkpoint_epoch=2.pt.k1l2.tmp", tmp_path / ".model.pt.x9y8.tmp"]
    other = tmp_path / ".notes.txt.tmp"
    for f in [*stale, other]:
        f.write_bytes(b"partial")
    AtomicCheckpointSaver(str(tmp_path), {"net": net}).save(engine)
    assert not stale[0].exists() and stale[1].exists()
    AtomicCheckpointSaver(str(tmp_path), {"net": net}, filename="model.pt").save(engine)
    assert not stale[1].exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".notes.txt.tmp", "checkpoint_epoch=4.pt", "model.pt"]


@pytest.mark.parametrize("config", ["inference.yaml", "train.yaml"])
def test_a_switch_given_as_a_string_is_an_error_before_any_work(tmp_path, config):
    """The CLI turns `--bias_correction false` into the string "false", which expressions take as true."""
    wf = ConfigWorkflow(config_file=str(BUNDLE / "configs" / config), workflow_type="infer" if config == "inference.yaml" else "train",
                        bundle_root=str(BUNDLE), output_dir=str(tmp_path / "out"), bias_correction="false")
    with pytest.raises(RuntimeError) as err:  # MONAI wraps a failing expression's error; the cause is ours
        wf.initialize()
    cause = err.value.__cause__
    assert isinstance(cause, TypeError) and "bias_correction='false' (str)" in str(cause) and "--bias_correction False" in str(cause)
    assert not (tmp_path / "out").exists()  # nothing written before the check


@pytest.mark.parametrize("baseline, term", [(["unet_ct.yaml"], "mr_consistency"), (["unet_ct.yaml", "unet_mr.yaml"], "mr_path_supervision"),
                                            (["cyclegan.yaml", "tdgan.yaml"], "mr_consistency")])
def test_a_dalace_term_given_to_a_baseline_is_refused_before_any_work(tmp_path, baseline, term):
    """The baselines replace DALACE's trainer: a DALACE term given to them would be dropped without a word."""
    files = [str(BUNDLE / "configs" / f) for f in ["train.yaml", *baseline]]
    wf = ConfigWorkflow(config_file=files, workflow_type="train", bundle_root=str(BUNDLE), output_dir=str(tmp_path / "out"), **{term: 1.0})
    with pytest.raises(RuntimeError) as err:
        wf.initialize()
    cause = err.value.__cause__
    assert isinstance(cause, ValueError) and f"{term}=1.0" in str(cause) and "does not train DALACE" in str(cause)
    assert not (tmp_path / "out").exists()
    ConfigWorkflow(config_file=files, workflow_type="train", bundle_root=str(BUNDLE), output_dir=str(tmp_path / "ok")).initialize()
