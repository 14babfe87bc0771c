"""The repository's paths, defined once for the tools, the experiments, the benchmarks and the tests."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundle"
BUNDLE_CONFIGS = BUNDLE / "configs"
SAMPLE_DATA = BUNDLE / "sample_data"
CUSTOM = REPO / "custom"

__all__ = ["BUNDLE", "BUNDLE_CONFIGS", "CUSTOM", "REPO", "SAMPLE_DATA"]
