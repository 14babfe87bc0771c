"""End to end: every training config of the bundle trains a few iterations on the shipped sample.

The configs are the real ones in ``bundle/configs``; ``tests/configs/tiny.yaml`` only shrinks widths,
images and epochs. Outputs go to a temporary folder (``output_dir``, ``model_file``).
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigWorkflow

from custom.handlers import latest_checkpoint

from tests.helpers import BUNDLE  # noqa: E402
TINY = str(Path(__file__).resolve().parent / "configs" / "tiny.yaml")

pytestmark = pytest.mark.slow

VARIANTS = {
    "dalace_da": [],
    "dal": ["dal.yaml"],
    "joint": ["joint.yaml"],
    "dadr": ["dadr.yaml"],
    "no_dam": ["no_dam.yaml"],
    "unet_ct": ["unet_ct.yaml"],
    "unet_mr": ["unet_ct.yaml", "unet_mr.yaml"],
    "cyclegan": ["cyclegan.yaml"],
    "tdgan": ["cyclegan.yaml", "tdgan.yaml"],
}


def config_files(variant):
    return [str(BUNDLE / "configs" / "train.yaml")] + [str(BUNDLE / "configs" / f) for f in VARIANTS[variant]] + [TINY]


def overrides(tmp_path, **extra):
    return {
        "bundle_root": str(BUNDLE),
        "output_dir": str(tmp_path / "run"),
        "models_dir": str(tmp_path),
        **extra,
    }


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variant_trains_and_writes_checkpoint_and_model(variant, tmp_path, monkeypatch):
    monkeypatch.chdir(BUNDLE)
    wf = ConfigWorkflow(config_file=config_files(variant), workflow_type="train", **overrides(tmp_path))
    wf.initialize()
    assert wf.check_properties() == []
    wf.run()
    wf.finalize()
    ckpt = latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert ckpt is not None and ckpt.endswith("checkpoint_epoch=2.pt")
    state = torch.load(ckpt, weights_only=True)
    assert state["trainer"]["iteration"] == 4 and state["trainer"]["epoch_length"] == 2  # 2 epochs of 2
    # model.pt is the inference network's bare state_dict, finite
    weights = torch.load(tmp_path / "model.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
    losses = (tmp_path / "run" / "losses.csv").read_text().splitlines()
    assert len(losses) == 3  # header + 2 epochs
    for row in losses[1:]:
        values = [float(v) for v in row.split(",") if v]
        assert all(map(lambda v: v == v and abs(v) != float("inf"), values))


def test_pair_game_starts_after_warmup_in_logged_losses(tmp_path, monkeypatch):
    monkeypatch.chdir(BUNDLE)
    wf = ConfigWorkflow(config_file=config_files("dalace_da"), workflow_type="train", **overrides(tmp_path, max_epochs=3, pair_warmup_epochs=2))
    wf.initialize()
    wf.run()
    import csv

    rows = list(csv.DictReader(open(tmp_path / "run" / "losses.csv")))
    assert [float(r["pair_game"]) for r in rows] == [0.0, 0.0, 1.0]
    assert rows[0]["apm/pair_gen"] == "" and rows[1]["apm/pair_gen"] == "" and float(rows[2]["apm/pair_gen"]) > 0
    assert (tmp_path / "run" / "losses.png").stat().st_size > 0
    assert sorted(p.name for p in (tmp_path / "run" / "figures").iterdir()) == ["epoch_0001.png", "epoch_0002.png", "epoch_0003.png"]


def test_mr_consistency_trains_from_the_real_configs_with_a_both_paths_teacher(tmp_path, monkeypatch):
    """experiments/configs/mr_consistency.yaml on train.yaml: the MR samples carry a re-rendered copy of the
    slice, the teacher averages the weight averages of both paths, and the term is logged after its warm-up."""
    import csv

    from tools.paths import REPO

    monkeypatch.chdir(BUNDLE)
    files = config_files("dalace_da")
    files.insert(1, str(REPO / "experiments" / "configs" / "mr_consistency.yaml"))
    wf = ConfigWorkflow(config_file=files, workflow_type="train", **overrides(tmp_path, extra_paths=[]))
    wf.initialize()
    dataset = wf.parser.get_parsed_content("train#dataset")
    samples = [dataset[i] for i in range(4)]
    assert all(s["mr_image_strong"].shape == s["mr_image"].shape and "ct_image_strong" not in s for s in samples)
    # the copy is re-rendered (p 0.8 location-scale alone): not the slice itself in every sample
    assert any(not torch.equal(s["mr_image_strong"], s["mr_image"]) for s in samples)
    teacher = wf.parser.get_parsed_content("train#trainer").teacher
    assert set(teacher.members) == {"mr", "ct"}
    assert teacher.members["mr"] is wf.parser.get_parsed_content("final_network")
    wf.run()
    rows = list(csv.DictReader(open(tmp_path / "run" / "losses.csv")))
    assert rows[0]["apm/consistency_mr"] == "" and float(rows[1]["apm/consistency_mr"]) >= 0  # warm-up: 1 epoch
    assert 0 < float(rows[1]["apm/confident"]) <= 1


def _cli(tmp_path, *args, **overrides_):
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", str(config_files("dalace_da"))]
    for k, v in {**overrides(tmp_path), **overrides_}.items():
        cmd += [f"--{k}", str(v)]
    return cmd + list(args)


def test_kill_hard_then_resume_continues_epochs_and_optimizers(tmp_path):
    """SIGKILL after the first checkpoint; resume=true continues the epoch counter and Adam's state."""
    ckpt_dir = tmp_path / "run" / "checkpoints"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(_cli(tmp_path, max_epochs=40), cwd=BUNDLE, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while latest_checkpoint(ckpt_dir) is None and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert latest_checkpoint(ckpt_dir) is not None, "no checkpoint was written"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_at = latest_checkpoint(ckpt_dir)
    first = torch.load(killed_at, weights_only=True)  # an atomic write: a complete, loadable file
    epoch = first["trainer"]["iteration"] // first["trainer"]["epoch_length"]
    assert 1 <= epoch < 40

    done = subprocess.run(_cli(tmp_path, max_epochs=epoch + 1, resume=True), cwd=BUNDLE, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"resumed from {killed_at}" in done.stdout + done.stderr
    last = torch.load(latest_checkpoint(ckpt_dir), weights_only=True)
    assert latest_checkpoint(ckpt_dir).endswith(f"checkpoint_epoch={epoch + 1}.pt")
    assert last["trainer"]["iteration"] == (epoch + 1) * 2
    # Adam counts its steps: it went on from the checkpoint's count instead of restarting at 0
    steps = lambda s: max(float(v["step"]) for v in s["optimizer_autoencoder"]["state"].values())  # noqa: E731
    assert steps(last) == steps(first) + 2


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    done = subprocess.run(_cli(tmp_path, resume=True), cwd=BUNDLE, capture_output=True, text=True)
    assert done.returncode != 0
    assert "no checkpoint" in done.stdout + done.stderr and str(tmp_path / "run" / "checkpoints") in done.stdout + done.stderr


def test_same_seed_repeats_the_same_run_on_cpu(tmp_path, monkeypatch):
    """``seed`` makes a CPU run repeatable: slice sampling, augmentation, MR pairing and weights."""
    monkeypatch.chdir(BUNDLE)
    runs = []
    for name in ("a", "b"):
        wf = ConfigWorkflow(config_file=config_files("dalace_da"), workflow_type="train", **overrides(tmp_path / name, max_epochs=1, seed=7))
        wf.initialize()
        wf.run()
        runs.append((tmp_path / name / "run" / "losses.csv").read_text())
    assert runs[0] == runs[1]
    wf = ConfigWorkflow(config_file=config_files("dalace_da"), workflow_type="train", **overrides(tmp_path / "c", max_epochs=1, seed=8))
    wf.initialize()
    wf.run()
    assert (tmp_path / "c" / "run" / "losses.csv").read_text() != runs[0]


def test_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path, monkeypatch):
    """3 epochs in one go, and 2 epochs then ``resume`` for the third: the same weights, averages,
    optimizers and best model (each epoch is seeded from (seed, epoch); the best Dice is checkpointed)."""
    monkeypatch.chdir(BUNDLE)

    def train(out, max_epochs, resume=False):
        wf = ConfigWorkflow(config_file=config_files("dalace_da"), workflow_type="train",
                            **overrides(out, max_epochs=max_epochs, resume=resume, seed=3))
        wf.initialize()
        wf.run()
        wf.finalize()

    train(tmp_path / "whole", 3)
    train(tmp_path / "split", 2)
    train(tmp_path / "split", 3, resume=True)
    load = lambda p: torch.load(p, weights_only=True)  # noqa: E731
    for name in ("model.pt", "model_ct.pt", "run/model_raw.pt", "run/checkpoints/checkpoint_epoch=3.pt"):
        a, b = load(tmp_path / "whole" / name), load(tmp_path / "split" / name)
        flat_a, flat_b = _flatten(a), _flatten(b)
        assert flat_a.keys() == flat_b.keys(), name
        for k in flat_a:
            assert torch.equal(flat_a[k], flat_b[k]) if isinstance(flat_a[k], torch.Tensor) else flat_a[k] == flat_b[k], f"{name}: {k}"
    ckpt = load(tmp_path / "split" / "run/checkpoints/checkpoint_epoch=3.pt")
    assert ckpt["trainer"]["iteration"] == 6 and 1 <= ckpt["key_metric"]["best_metric_epoch"] <= 3
    # the weight averages are checkpointed (they resume); model_ct.pt is the CT average
    assert {"ema_model", "ema_model_ct"} <= ckpt.keys()
    model_ct = load(tmp_path / "split" / "model_ct.pt")
    assert model_ct.keys() == ckpt["ema_model_ct"].keys() and all(torch.equal(v, ckpt["ema_model_ct"][k]) for k, v in model_ct.items())


def _flatten(obj, prefix=""):
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    if isinstance(obj, (list, tuple)):
        return _flatten(dict(enumerate(obj)), prefix)
    return {prefix: obj}


def test_slice_context_trains_on_neighbouring_slices_and_segments_thick_slices(tmp_path, monkeypatch):
    """slice_context 1 from the real configs: training slices carry their neighbours as channels (the label
    its own slice), every network takes them, and inference builds the same input from a thick-slice volume
    kept as acquired (neighbours interpolated 6 mm away), writing the mask on the input's grid; a model of
    the other input is refused by name before any case is read."""
    import nibabel as nib
    import numpy as np

    from tests.helpers import INFERENCE, MR

    monkeypatch.chdir(BUNDLE)
    wf = ConfigWorkflow(config_file=config_files("dalace_da"), workflow_type="train", **overrides(tmp_path, slice_context=1))
    wf.initialize()
    sample = wf.parser.get_parsed_content("train#dataset")[0]
    assert sample["ct_image"].shape[0] == 3 and sample["mr_image"].shape[0] == 3 and sample["ct_label"].shape[0] == 1
    wf.run()
    wf.finalize()
    weights = torch.load(tmp_path / "model.pt", weights_only=True)
    first = [v for k, v in weights.items() if k.endswith("weight") and v.ndim == 4][0]
    assert first.shape[1] == 3, first.shape

    src = nib.load(str(MR))
    thick = nib.Nifti1Image(np.asarray(src.dataobj)[..., ::2], src.affine @ np.diag([1.0, 1.0, 2.0, 1.0]))
    nib.save(thick, str(tmp_path / "thick.nii.gz"))
    infer = {"bundle_root": str(BUNDLE), "input": str(tmp_path / "thick.nii.gz"), "models_dir": str(tmp_path),
             "output_dir": str(tmp_path / "eval"), "bias_correction": False, "test_time_augmentation": False,
             "slice_context": 1}
    parser = ConfigWorkflow(config_file=[INFERENCE, TINY], workflow_type="infer", **infer)  # the training's sizes
    parser.initialize()
    grid = parser.parser.get_parsed_content("preprocessing")({"image": str(tmp_path / "thick.nii.gz")})["image"]
    assert grid.shape[0] == 3 and grid.shape[-1] == thick.shape[2]  # 6 mm slices kept, each with its neighbours
    parser.run()
    parser.finalize()
    seg = nib.load(str(tmp_path / "eval" / "thick_seg.nii.gz"))
    assert seg.shape == thick.shape and np.allclose(seg.affine, thick.affine, atol=1e-4)
    with pytest.raises(Exception) as err:
        ConfigWorkflow(config_file=[INFERENCE, TINY], workflow_type="infer", **{**infer, "slice_context": 0}).initialize()
    assert "takes 3 image channels and this network_def 1: slice_context" in str(err.value.__cause__)
    assert str(tmp_path / "model.pt") in str(err.value.__cause__)
