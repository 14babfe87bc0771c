"""The shareable bundle: metadata conformity, MONAI's verify_net_in_out and ckpt_export, and the
zip that ``tools/package_bundle.py`` writes, downloaded with ``monai.bundle download`` from a local
HTTP server and run in a process that cannot see this repository.

No trained model is needed: ``models/model.pt`` is the state_dict of a randomly initialised
``network_def`` at tiny widths (the same overrides are passed to every command that builds it).
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import site
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from tests.helpers import BUNDLE, REPO  # noqa: E402
METADATA = BUNDLE / "configs" / "metadata.json"
INFERENCE = BUNDLE / "configs" / "inference.yaml"
SAMPLE_MR = "sample_data/mr/totalseg_mr_sm_image.nii.gz"
NAME = "dalace_liver_segmentation"

from tools import package_bundle  # noqa: E402

# tiny network_def (and a coarse grid for the end-to-end run), as command-line overrides
TINY = {"width": 4, "num_res_blocks": 1, "code_dim": 2, "segmenter#features": [4, 4, 8, 8, 16, 4]}
FAST = {**TINY, "spacing": [6.0, 6.0, 6.0], "roi_size": [64, 64], "num_workers": 0, "bias_correction": False}


def cli_overrides(overrides: dict) -> list[str]:
    """``--key value`` pairs as ``python -m monai.bundle`` parses them (python-fire literals)."""
    return [a for k, v in overrides.items() for a in (f"--{k}", json.dumps(v) if isinstance(v, list) else str(v))]


def tiny_state_dict(path: Path) -> Path:
    parser = ConfigParser()
    parser.read_config(str(INFERENCE))
    parser.update({"bundle_root": str(BUNDLE), **TINY})
    torch.manual_seed(0)
    torch.save(parser.get_parsed_content("network_def").state_dict(), path)
    return path


def run(cmd: list[str], cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, **kwargs)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


# ------------------------------------------------------------------------------------ metadata
# The required fields of MONAI's meta_schema_20240725 (monai/bundle/meta_schema.json in MONAI's
# repository; monai 1.6.1 does not ship the file and it cannot be downloaded here), checked by hand.
REQUIRED = {
    "schema": str, "version": str, "monai_version": str, "pytorch_version": str, "numpy_version": str,
    "required_packages_version": dict, "task": str, "description": str, "authors": str, "copyright": str,
    "network_data_format": dict,
}
OPTIONAL = {
    "changelog": dict, "optional_packages_version": dict, "data_source": str, "data_type": str, "image_classes": str,
    "label_classes": str, "pred_classes": str, "eval_metrics": dict, "intended_use": str, "references": list,
}
TENSOR_REQUIRED = {"type": str, "format": str, "num_channels": int, "spatial_shape": list, "dtype": str, "value_range": list}


def pins(requirements: Path) -> dict[str, str]:
    return dict(re.findall(r"^([A-Za-z0-9_.\-]+)==([^\s#]+)", requirements.read_text(), flags=re.M))


def test_metadata_follows_meta_schema_20240725():
    meta = json.loads(METADATA.read_text())  # MONAI Label reads it with json.load
    assert meta["schema"].endswith("/meta_schema_20240725.json")
    for key, kind in {**REQUIRED, **OPTIONAL}.items():
        assert key in meta or key in OPTIONAL, f"metadata.json lacks '{key}'"
        if key in meta:
            assert isinstance(meta[key], kind), f"'{key}' must be {kind.__name__}"
    assert "optional_packages_version" not in meta  # monai 1.6.1 would replace required_packages_version with it
    assert meta["version"] in meta["changelog"]
    assert all(isinstance(r, str) for r in meta["references"])
    io = meta["network_data_format"]
    assert set(io) >= {"inputs", "outputs"}
    for tensor in [*io["inputs"].values(), *io["outputs"].values()]:
        for key, kind in TENSOR_REQUIRED.items():
            assert isinstance(tensor.get(key), kind), f"tensor field '{key}' must be {kind.__name__}"
        assert all(isinstance(s, (int, str)) for s in tensor["spatial_shape"])
        assert all(isinstance(v, (int, float)) for v in tensor["value_range"])
    # the inference module exactly: one (B, 1, 256, 256) image in [-1, 1] -> (B, 2, 256, 256) logits
    (name_in, image), (name_out, pred) = next(iter(io["inputs"].items())), next(iter(io["outputs"].items()))
    assert (name_in, name_out) == ("image", "pred")
    roi = ConfigParser.load_config_file(str(INFERENCE))["roi_size"]
    assert image["num_channels"] == 1 and image["spatial_shape"] == roi and image["value_range"] == [-1, 1]
    assert pred["num_channels"] == 2 and pred["spatial_shape"] == roi
    assert pred["channel_def"] == {"0": "background", "1": "liver"}
    # the versions are the project's pins
    req = pins(REPO / "requirements.txt")
    assert meta["monai_version"] == req["monai"] and meta["pytorch_version"] == req["torch"]
    assert meta["numpy_version"] == req["numpy"]
    for package, version in meta["required_packages_version"].items():
        assert req.get(package) == version, f"required_packages_version[{package}] != requirements.txt"


def test_bundle_files_of_the_model_zoo_structure():
    license_head = (BUNDLE / "LICENSE").read_text()[:300]
    assert "Apache License" in license_head and "Version 2.0" in license_head
    readme = (BUNDLE / "docs" / "README.md").read_text()
    for section in ("Model overview", "Data", "Training configuration", "Performance", "MONAI Label", "Limitations", "References"):
        assert re.search(rf"^#+ .*{section}", readme, flags=re.M | re.I), f"docs/README.md lacks a '{section}' section"
    assert (BUNDLE / "docs" / "data_license.txt").is_file()
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True).stdout.split("\0")
    big = [f for f in tracked if f and (REPO / f).is_file() and (REPO / f).stat().st_size > package_bundle.MAX_FILE_BYTES]
    assert not big, f"tracked files over 25 MB (list them in bundle/large_files.yml instead): {big}"


# ------------------------------------------------------------------- MONAI's bundle commands
@pytest.mark.slow
def test_verify_net_in_out_at_paper_widths():
    run([sys.executable, "-m", "monai.bundle", "verify_net_in_out", "network_def",
         "--meta_file", "configs/metadata.json", "--config_file", "configs/inference.yaml"], cwd=BUNDLE)


@pytest.mark.slow
def test_ckpt_export_writes_torchscript_equal_to_eager(tmp_path):
    ckpt = tiny_state_dict(tmp_path / "model.pt")
    ts = tmp_path / "model.ts"
    run([sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def", "--filepath", str(ts),
         "--ckpt_file", str(ckpt), "--meta_file", "configs/metadata.json", "--config_file", "configs/inference.yaml",
         *cli_overrides(TINY)], cwd=BUNDLE)
    extra = {"metadata.json": ""}
    scripted = torch.jit.load(str(ts), _extra_files=extra)
    assert json.loads(extra["metadata.json"])["network_data_format"]["outputs"]["pred"]["num_channels"] == 2
    parser = ConfigParser()
    parser.read_config(str(INFERENCE))
    parser.update({"bundle_root": str(BUNDLE), **TINY})
    eager = parser.get_parsed_content("network_def")
    eager.load_state_dict(torch.load(ckpt, weights_only=True))
    eager.eval()
    x = torch.rand(2, 1, 256, 256) * 2 - 1
    with torch.no_grad():
        expected, got = eager(x), scripted(x)
    assert got.shape == (2, 2, 256, 256)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------ package & download
def staged_bundle(tmp_path: Path) -> Path:
    """A copy of the repository's bundle with a tiny models/model.pt (no training outputs)."""
    stage = tmp_path / "stage"
    shutil.copytree(BUNDLE, stage, ignore=shutil.ignore_patterns("runs", "eval", "models", "__pycache__"))
    (stage / "models").mkdir()
    tiny_state_dict(stage / "models" / "model.pt")
    return stage


def test_package_zip_has_one_top_folder_with_the_bundle_and_custom(tmp_path):
    stage = staged_bundle(tmp_path)
    (stage / "runs" / "x").mkdir(parents=True)
    (stage / "runs" / "x" / "junk.pt").write_bytes(b"0")
    (stage / "models" / "checkpoints").mkdir()
    (stage / "models" / "checkpoints" / "checkpoint_epoch=1.pt").write_bytes(b"0")
    path = package_bundle.package(bundle_dir=stage, output_dir=tmp_path / "dist", name=NAME)
    assert Path(path) == tmp_path / "dist" / f"{NAME}.zip"
    names = zipfile.ZipFile(path).namelist()
    assert {n.split("/")[0] for n in names} == {NAME}
    for required in ("configs/metadata.json", "configs/inference.yaml", "configs/train.yaml", "models/model.pt",
                     "docs/README.md", "docs/data_license.txt", "LICENSE", SAMPLE_MR, "custom/__init__.py",
                     "custom/networks/inference.py", "custom/transforms/spacing.py"):
        assert f"{NAME}/{required}" in names
    assert not [n for n in names if "/runs/" in n or "checkpoints" in n or "__pycache__" in n or n.endswith(".pyc")]
    with pytest.raises(FileNotFoundError, match="model.pt"):
        os.remove(stage / "models" / "model.pt")
        package_bundle.package(bundle_dir=stage, output_dir=tmp_path / "dist2", name=NAME)


def test_packaged_train_config_carries_monai_label_fine_tuning(tmp_path):
    """The shipped train.yaml is train.yaml + monailabel.yaml: MONAI Label finds a CheckpointLoader in the raw
    train#handlers (first, before the resume loader and the weight averaging), and a plain list of
    labelled MR as train#dataset#data turns on joint learning; a datalist run is unchanged."""
    path = package_bundle.package(bundle_dir=staged_bundle(tmp_path), output_dir=tmp_path / "dist", name=NAME)
    zipfile.ZipFile(path).extractall(tmp_path / "dl")
    bundle = tmp_path / "dl" / NAME
    shipped = ConfigParser.load_config_file(str(bundle / "configs" / "train.yaml"))
    assert shipped["train"]["handlers"][0]["_target_"] == "CheckpointLoader"
    # MONAI Label (t.get("_target_")) and MONAI's check_properties (h["_target_"]) read every handler item as a dict
    assert all(isinstance(h, dict) and "_target_" in h for h in shipped["train"]["handlers"])
    assert shipped["train"]["trainer"]["train_handlers"] == "@train#handlers"
    assert f"{NAME}/configs/monailabel.yaml" not in zipfile.ZipFile(path).namelist()
    base = ConfigParser.load_config_file(str(BUNDLE / "configs" / "train.yaml"))
    assert [h for h in shipped["train"]["handlers"][1:]] == base["train"]["handlers"]
    for data, labelled in ((None, False), ([{"image": str(BUNDLE / SAMPLE_MR), "label": str(BUNDLE / SAMPLE_MR)}], True)):
        parser = ConfigParser()
        parser.read_config(str(bundle / "configs" / "train.yaml"))
        parser.update({"bundle_root": str(bundle), "train#dataset#num_workers": 0})
        if data is not None:
            parser["train#dataset#data"] = data
        assert parser.get_parsed_content("labelled_mr_list") is labelled
        assert parser.get_parsed_content("train#trainer#mr_supervised") is labelled
        loaders = [h for h in parser.get_parsed_content("train#handlers") if type(h).__name__ == "CheckpointLoader"]
        assert len(loaders) == int(labelled)  # models/model.pt exists: fine-tuning only for MONAI Label


# Runs `python -m monai.bundle run` as a user does from the downloaded bundle's folder, in an
# interpreter started with -I -S: no PYTHONPATH, no user site, no .pth files (so not the editable
# install of this repository); the environment's site-packages are appended as plain folders.
ISOLATED = r"""
import importlib.util, os, runpy, sys
from pathlib import Path
repo, site_dirs, args = sys.argv[1], sys.argv[2].split(os.pathsep), sys.argv[3:]
sys.path.extend(site_dirs)
assert importlib.util.find_spec("custom") is None, "custom is importable without the bundle"
sys.path.insert(0, os.getcwd())  # what `python -m` does: the current folder first
assert not [p for p in sys.path if p and Path(p).resolve() == Path(repo).resolve()], sys.path
import custom
assert Path(custom.__file__).resolve().is_relative_to(Path.cwd().resolve()), custom.__file__
sys.argv = ["monai.bundle", *args]
runpy.run_module("monai.bundle", run_name="__main__", alter_sys=True)
"""


@pytest.mark.slow
def test_download_from_local_http_server_and_run_without_the_repository(tmp_path):
    stage = staged_bundle(tmp_path)
    package_bundle.package(bundle_dir=stage, output_dir=tmp_path / "www", name=NAME)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "www"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{NAME}.zip"
        run([sys.executable, "-m", "monai.bundle", "download", "--name", NAME, "--bundle_dir", str(tmp_path / "dl"),
             "--url", url], cwd=tmp_path)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    bundle = tmp_path / "dl" / NAME
    assert (bundle / "configs" / "metadata.json").is_file() and (bundle / "custom" / "__init__.py").is_file()

    out = tmp_path / "out"
    site_dirs = os.pathsep.join(site.getsitepackages())
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    run([sys.executable, "-I", "-S", "-c", ISOLATED, str(REPO), site_dirs,
         "run", "--config_file", "configs/inference.yaml", "--meta_file", "configs/metadata.json",
         "--output_dir", str(out), *cli_overrides(FAST)], cwd=bundle, env=env)

    image = nib.load(bundle / SAMPLE_MR)
    masks = list(out.glob("*_seg.nii.gz"))
    assert len(masks) == 1
    mask = nib.load(masks[0])
    assert mask.shape == image.shape
    np.testing.assert_allclose(mask.affine, image.affine, atol=1e-4)
    assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1}
