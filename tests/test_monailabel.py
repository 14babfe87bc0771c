"""The bundle in MONAI Label's stock ``monaibundle`` sample app (monailabel 0.8.5), over HTTP.

A real server on 127.0.0.1 serves the packaged bundle (``tools/package_bundle.py``, unzipped into the
app's ``model/`` folder, the app itself unchanged) and a studies folder with two copies of the sample
MR, labelled. The test asks ``/info``, segments one study (``POST /infer``: the mask must have the
study's shape and affine), trains from the labelled studies (``POST /train``: ``models/model.pt``
must be rewritten) and always stops the server it started. The same server also serves the bundle as it
ships (its configs and trained ``models/model.pt`` untouched, as ``<name>_shipped``), which must
segment the sample MR's liver.

MONAI Label lives in its own virtual environment (``requirements-monailabel.txt``, built by
``.ci/run``), named by ``DALACE_MONAILABEL_VENV``; without it the test is skipped. The bundle runs
there from its own copy of ``custom/`` (the editable install of this repository is not in that venv).

Small and fast: ``models/model.pt`` is a random tiny ``network_def`` and the copied bundle gets
``configs/inference.json`` and ``configs/train.json``, which MONAI Label reads before the YAML files:
the shipped YAML configs merged with the tiny overrides below (widths, grid, epochs; no N4), nothing else.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from tests.helpers import BUNDLE  # noqa: E402
from tools import package_bundle  # noqa: E402

NAME = package_bundle.DEFAULT_NAME
SHIPPED = f"{NAME}_shipped"  # the bundle as it ships: real configs, trained weights
MR = BUNDLE / "sample_data" / "mr" / "totalseg_mr_sm_image.nii.gz"
MR_LABEL = BUNDLE / "sample_data" / "mr" / "totalseg_mr_sm_label.nii.gz"
VENV = os.environ.get("DALACE_MONAILABEL_VENV", "")
MONAILABEL = Path(VENV) / "bin" / "monailabel"

# the same network in both configs, so that MONAI Label's training writes what its inference loads
TINY = {"width": 4, "num_res_blocks": 1, "code_dim": 2, "segmenter#features": [4, 4, 8, 8, 16, 4],
        "spacing": [6.0, 6.0, 6.0], "roi_size": [64, 64], "bias_correction": False, "num_workers": 0}
TINY_TRAIN = {**TINY, "batch_size": 2, "epoch_length": 2, "image_grids": False, "checkpoint_interval": 1,
              "save_ct_model": False}

pytestmark = [
    pytest.mark.monailabel,
    pytest.mark.slow,
    pytest.mark.skipif(
        not MONAILABEL.is_file(),
        reason="MONAI Label venv not found: set DALACE_MONAILABEL_VENV to a venv built from "
        "requirements-monailabel.txt (.ci/run does)",
    ),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def merged_config(names: list[str], overrides: dict, target: Path) -> None:
    """``configs/<names>`` merged with ``overrides``, written as one JSON config."""
    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "configs" / n) for n in names])
    parser.update(overrides)
    ConfigParser.export_config_file(parser.get(), str(target), indent=1)


def http(method: str, url: str, data: bytes | None = None, headers: dict | None = None, timeout: float = 600):
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.status, resp.read()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("monailabel")
    # the `monailabel` script runs the `python` it finds on PATH: the venv's first
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PATH"] = f"{Path(VENV) / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    # the stock sample app, as `monailabel apps` ships it
    subprocess.run([str(MONAILABEL), "apps", "--download", "--name", "monaibundle", "--output", str(tmp / "apps")],
                   check=True, capture_output=True, timeout=300, env=env)
    app = tmp / "apps" / "monaibundle"

    # our bundle: packaged with a tiny random model.pt, unzipped into the app's model/ folder
    stage = tmp / "stage"
    shutil.copytree(BUNDLE, stage, ignore=shutil.ignore_patterns("runs", "eval", "models", "__pycache__"))
    (stage / "models").mkdir()
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "inference.yaml"))
    parser.update(TINY)
    torch.manual_seed(0)
    torch.save(parser.get_parsed_content("network_def").state_dict(), stage / "models" / "model.pt")
    zipped = package_bundle.package(bundle_dir=stage, output_dir=tmp / "dist", name=NAME)
    zipfile.ZipFile(zipped).extractall(app / "model")
    bundle = app / "model" / NAME
    merged_config(["inference.yaml"], TINY, bundle / "configs" / "inference.json")
    # the packaged train.yaml: configs/monailabel.yaml merged in (tools/package_bundle.py)
    merged_config([str(bundle / "configs" / "train.yaml")], TINY_TRAIN, bundle / "configs" / "train.json")
    shipped = tmp / "stage_shipped"
    shutil.copytree(BUNDLE, shipped, ignore=shutil.ignore_patterns("runs", "eval", "checkpoints", "*.ts", "__pycache__"))
    zipfile.ZipFile(package_bundle.package(bundle_dir=shipped, output_dir=tmp / "dist", name=SHIPPED)).extractall(app / "model")

    # studies: two labelled copies of the sample MR (MONAI Label's local datastore layout)
    studies = tmp / "studies"
    (studies / "labels" / "final").mkdir(parents=True)
    for case in ("mr_a", "mr_b"):
        shutil.copy(MR, studies / f"{case}.nii.gz")
        shutil.copy(MR_LABEL, studies / "labels" / "final" / f"{case}.nii.gz")

    port = free_port()
    log = open(tmp / "server.log", "w")
    cmd = [str(MONAILABEL), "start_server", "--app", str(app), "--studies", str(studies),
           "--conf", "models", f"{NAME},{SHIPPED}", "--conf", "zoo_source", "github", "--conf", "sam2", "false",
           "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                pytest.fail(f"MONAI Label exited ({proc.returncode}):\n{(tmp / 'server.log').read_text()[-5000:]}")
            try:
                http("GET", f"{base}/info/", timeout=10)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    pytest.fail(f"MONAI Label did not start:\n{(tmp / 'server.log').read_text()[-5000:]}")
                time.sleep(2)
        yield {"base": base, "bundle": bundle, "studies": studies, "log": tmp / "server.log"}
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # the server and its training subprocess (its own session)
            proc.wait(30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
        log.close()


def test_info_lists_the_bundle_with_label_liver(server):
    _, body = http("GET", f"{server['base']}/info/")
    info = json.loads(body)
    assert NAME in info["models"], (info["models"].keys(), server["log"].read_text()[-3000:])
    model = info["models"][NAME]
    assert model["labels"] == {"liver": 1} and model["type"] == "segmentation" and model["dimension"] == 2
    assert "liver" in info["labels"]
    assert NAME in info["trainers"]


def infer(server, model: str, out: Path, **params) -> nib.Nifti1Image:
    """``POST /infer/<model>`` on study mr_a (with ``params``); the returned mask, saved to ``out``."""
    query = urllib.parse.urlencode({"image": "mr_a", "output": "image"})
    form = urllib.parse.urlencode({"params": json.dumps({"device": "cpu", **params})}).encode()
    status, body = http("POST", f"{server['base']}/infer/{model}?{query}", data=form,
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200, server["log"].read_text()[-3000:]
    out.write_bytes(body)
    return nib.load(out)


def test_infer_returns_a_mask_with_the_study_geometry(server, tmp_path):
    mask, image = infer(server, NAME, tmp_path / "mask.nii.gz"), nib.load(MR)
    assert mask.shape == image.shape
    np.testing.assert_allclose(mask.affine, image.affine, atol=1e-3)
    assert set(np.unique(np.asarray(mask.dataobj)).tolist()) <= {0, 1}


def test_shipped_bundle_segments_the_sample_liver(server, tmp_path):
    """The bundle as it ships (inference.yaml, N4, models/model.pt) behind MONAI Label: the mask of
    the sample MR overlaps its liver label (tests/test_shipped_model.py measures the same outside)."""
    mask_img, label_img = infer(server, SHIPPED, tmp_path / "mask.nii.gz"), nib.load(MR_LABEL)
    assert mask_img.shape == label_img.shape
    np.testing.assert_allclose(mask_img.affine, label_img.affine, atol=1e-3)
    mask, truth = np.asarray(mask_img.dataobj) > 0, np.asarray(label_img.dataobj) > 0
    dice = 2 * (mask & truth).sum() / (mask.sum() + truth.sum())
    assert dice >= 0.45, f"Dice {dice:.3f}:\n{server['log'].read_text()[-3000:]}"


def test_shipped_bundle_refuses_the_files_that_are_not_its_network(server, tmp_path):
    """MONAI Label offers every ``models/*.pt`` as ``model_filename`` and loads the chosen file into
    ``network_def`` without checking its keys (``strict=False``): the shipped ensembles and ``model_ct.pt``
    would segment with weights left at random. The request fails instead, and the server's log says why."""
    members = list(dict.fromkeys(k.split(".")[1] for k in torch.load(BUNDLE / "models" / "model_seed_ensemble.pt", weights_only=True)))
    ensemble = f"an ensemble of {len(members)} networks ({', '.join(members)})"
    for name, problem in (("model_seed_ensemble.pt", ensemble), ("model_ct.pt", "weights missing")):
        with pytest.raises(urllib.error.HTTPError) as err:
            infer(server, SHIPPED, tmp_path / "mask.nii.gz", model_filename=name)
        assert err.value.code == 500
        deadline = time.monotonic() + 30  # the server writes the traceback after the response
        while problem not in server["log"].read_text() and time.monotonic() < deadline:
            time.sleep(0.5)
        log = server["log"].read_text()
        assert problem in log and "choose model.pt (the model_filename option)" in log, log[-3000:]
    assert infer(server, SHIPPED, tmp_path / "mask.nii.gz", model_filename="model.pt").shape == nib.load(MR).shape


def test_train_rewrites_model_pt(server):
    model = server["bundle"] / "models" / "model.pt"
    before = torch.load(model, weights_only=True)
    mtime = model.stat().st_mtime_ns
    params = {"max_epochs": 1, "val_split": 0.0, "device": "cpu", "multi_gpu": False, "tracking": "None"}
    status, body = http("POST", f"{server['base']}/train/{NAME}?run_sync=true", data=json.dumps(params).encode(),
                        headers={"Content-Type": "application/json"})
    assert status == 200, server["log"].read_text()[-5000:]
    assert model.stat().st_mtime_ns > mtime, f"model.pt not rewritten:\n{server['log'].read_text()[-5000:]}"
    after = torch.load(model, weights_only=True)
    assert after.keys() == before.keys()  # the inference network, loadable by inference
    assert any(not torch.equal(before[k], after[k]) for k in before)  # trained (from the fine-tuning start)
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
