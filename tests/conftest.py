"""Shared pytest fixtures: where the bundle's sample data and the optional shared data live."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = REPO_ROOT / "bundle" / "sample_data"

if importlib.util.find_spec("custom") is None:  # not pip-installed: test the working tree
    sys.path.insert(0, str(REPO_ROOT))

# Tiny test networks gain nothing from a second OpenMP thread and lose a lot to thread hand-offs on
# a busy 2-core machine (benchmarks/results: 21x on the sample config); subprocesses inherit the env.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def shared_data_dir() -> Path | None:
    """The shared data folder (``$DALACE_DATA_DIR``, else ``../shared/data`` beside the repo), or None if absent."""
    env = os.environ.get("DALACE_DATA_DIR")
    root = Path(env) if env else REPO_ROOT.parent / "shared" / "data"
    return root if (root / "manifest.json").is_file() else None


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The small sample shipped in ``bundle/sample_data``."""
    return SAMPLE_DIR


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder; skips the test, saying why, when it is not there."""
    root = shared_data_dir()
    if root is None:
        where = os.environ.get("DALACE_DATA_DIR") or REPO_ROOT.parent / "shared" / "data"
        pytest.skip(f"shared data not found at {where} (set DALACE_DATA_DIR to the folder holding manifest.json)")
    return root
