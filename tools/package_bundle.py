"""Package the MONAI bundle as ``<name>.zip``: one top folder that runs on its own.

    python tools/package_bundle.py [--bundle_dir bundle] [--output_dir dist] [--name dalace_liver_segmentation]

The zip holds ``<name>/`` with ``configs/``, ``models/``, ``docs/``, ``LICENSE``, ``sample_data/``
(small, licensed in docs/data_license.txt; the configs' default inputs and the CT stream of
fine-tuning), ``large_files.yml`` when there is one, and a copy of the repository's ``custom/``
package, which the configs import: MONAI's bundle runner and MONAI Label put the bundle folder on
``sys.path``, so the bundle needs no ``pip install`` of this repository. ``configs/train.yaml`` ships
merged with ``configs/monailabel.yaml`` (:func:`train_config`), since MONAI Label reads that one file. Training outputs
(``runs/``, ``eval/``, ``models/checkpoints/``), caches and ``__pycache__`` stay out.

A user downloads it with ``python -m monai.bundle download --name <name> --bundle_dir <dir> --url <url>``.
"""

from __future__ import annotations

import fnmatch
import json
import os
import sys
import zipfile
from pathlib import Path

import yaml

if __name__ == "__main__" and not __package__:  # python tools/package_bundle.py: the repository's packages too
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from custom.utils import atomic_path  # noqa: E402
from tools.paths import BUNDLE, CUSTOM, REPO  # noqa: E402

DEFAULT_NAME = "dalace_liver_segmentation"
MAX_FILE_BYTES = 25 * 1024 * 1024  # the model zoo's limit for a file in a bundle (larger: large_files.yml)

# what of the bundle folder goes in (relative paths, folders recursively)
INCLUDE = ["configs", "models", "docs", "sample_data", "LICENSE", "large_files.yml", "large_files.yaml", "large_files.json"]
EXCLUDE = ["*/__pycache__/*", "*.pyc", "models/checkpoints/*", ".*", "*/.*"]
TRAIN, MONAILABEL = "configs/train.yaml", "configs/monailabel.yaml"  # merged into one shipped train.yaml


def _excluded(rel: str) -> bool:
    return any(fnmatch.fnmatch(rel, pattern) for pattern in EXCLUDE)


def bundle_files(bundle_dir: Path, custom_dir: Path) -> dict[str, Path]:
    """Archive path (relative to the top folder) -> file on disk."""
    files: dict[str, Path] = {}
    for entry in INCLUDE:
        src = bundle_dir / entry
        if src.is_file():
            files[entry] = src
        elif src.is_dir():
            for path in sorted(src.rglob("*")):
                rel = path.relative_to(bundle_dir).as_posix()
                if path.is_file() and not _excluded(rel):
                    files[rel] = path
    for path in sorted(custom_dir.rglob("*")):
        rel = "custom/" + path.relative_to(custom_dir).as_posix()
        if path.is_file() and not _excluded(rel) and path.suffix in {".py", ".typed", ".json", ".yaml", ".txt"}:
            files[rel] = path
    return files


def train_config(bundle_dir: str | os.PathLike) -> dict:
    """``configs/train.yaml`` as the bundle ships it: ``configs/monailabel.yaml`` merged in (MONAI's
    ``#`` ids), its ``monailabel_handlers`` first in the raw ``train#handlers``, where MONAI Label
    looks for a ``CheckpointLoader`` before adding its own."""
    from monai.bundle import ConfigParser

    bundle_dir = Path(bundle_dir)
    base = ConfigParser.load_config_file(str(bundle_dir / TRAIN))
    config = ConfigParser.load_config_files([str(bundle_dir / TRAIN), str(bundle_dir / MONAILABEL)])
    config["train"]["handlers"] = config.pop("monailabel_handlers") + config["train"]["handlers"]
    config["train"]["trainer"]["train_handlers"] = base["train"]["trainer"]["train_handlers"]
    return config


def check_bundle(files: dict[str, Path], require_model: bool = True) -> None:
    """The model zoo's structure: metadata.json (JSON), an inference config, LICENSE, docs/README.md,
    models/model.pt (unless ``require_model`` is False), and no file over 25 MB."""
    missing = [f for f in ("configs/metadata.json", "LICENSE", "docs/README.md", "custom/__init__.py") if f not in files]
    if not any(f in files for f in ("configs/inference.yaml", "configs/inference.json")):
        missing.append("configs/inference.yaml")
    if require_model and "models/model.pt" not in files:
        missing.append("models/model.pt (train the bundle first, or pass --require_model False)")
    if missing:
        raise FileNotFoundError(f"the bundle lacks: {', '.join(missing)}")
    json.loads(files["configs/metadata.json"].read_text())  # MONAI Label reads it with json.load
    big = [f"{rel} ({path.stat().st_size / 2**20:.1f} MB)" for rel, path in files.items() if path.stat().st_size > MAX_FILE_BYTES]
    if big:
        raise ValueError(f"files over 25 MB must be listed in large_files.yml and left out: {', '.join(big)}")


def package(
    bundle_dir: str | os.PathLike = BUNDLE,
    output_dir: str | os.PathLike = REPO / "dist",
    name: str = DEFAULT_NAME,
    custom_dir: str | os.PathLike = CUSTOM,
    require_model: bool = True,
) -> str:
    """Write ``<output_dir>/<name>.zip`` and return its path.

    Args:
        bundle_dir: the bundle folder (configs/, models/, docs/, LICENSE).
        output_dir: where the zip goes (created).
        name: the bundle's name: the zip's file name and its top folder, as ``monai.bundle download --name`` expects.
        custom_dir: the ``custom`` package copied into the bundle.
        require_model: fail when ``models/model.pt`` is missing.
    """
    bundle_dir, custom_dir, output_dir = Path(bundle_dir), Path(custom_dir), Path(output_dir)
    files = bundle_files(bundle_dir, custom_dir)
    check_bundle(files, require_model=require_model)
    output_dir.mkdir(parents=True, exist_ok=True)
    target = output_dir / f"{name}.zip"
    merged = files.pop(MONAILABEL, None) is not None and TRAIN in files
    with atomic_path(target, suffix=".zip.part") as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for rel, path in sorted(files.items()):
            if rel == TRAIN and merged:
                header = f"# {TRAIN} merged with {MONAILABEL} by tools/package_bundle.py (comments: the repository's files)\n"
                zf.writestr(f"{name}/{rel}", header + yaml.safe_dump(train_config(bundle_dir), sort_keys=False, width=120))
            else:
                zf.write(path, f"{name}/{rel}")
    print(f"wrote {target} ({len(files)} files, {target.stat().st_size / 2**20:.1f} MB)")
    return str(target)


if __name__ == "__main__":
    import fire

    fire.Fire(package)
