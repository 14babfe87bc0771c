"""The benchmark runs end to end in its quick mode (tiny synthetic inputs) and writes its JSON and
Markdown with the expected fields. No timing thresholds: figures only have to be finite and positive."""

from __future__ import annotations

import json
import math

import pytest
import torch

from benchmarks import report
from benchmarks.run import main


def _positive(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v) and v > 0


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    threads = torch.get_num_threads()
    try:  # one thread: tiny ops on a busy 2-core machine are otherwise dominated by OpenMP hand-offs
        results = main(["--quick", "--threads", "1", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    return out, results


def test_quick_run_writes_json_and_markdown(quick_run):
    out, results = quick_run
    data = json.loads((out / "quick.json").read_text())
    md = (out / "summary_quick.md").read_text()
    assert set(data) >= {"environment", "reference", "training", "inference", "scaling", "goals", "run_seconds"}
    assert data["environment"]["device"] == "cpu" and data["environment"]["quick"] is True
    for heading in ("## Goals", "## Training", "## Inference", "## Scaling"):
        assert heading in md
    assert "Quick mode" in md


def test_training_figures_are_finite_and_positive(quick_run):
    _, results = quick_run
    (r,) = results["training"]
    for key in ("flops_per_iteration", "s_per_iteration", "achieved_gflops", "reference_fwd_gflops",
                "reference_fwd_bwd_gflops", "fraction_of_reference_fwd", "fraction_of_reference_fwd_bwd", "parameters"):
        assert _positive(r[key]), key
    # the counted iteration has a forward and the backward of the restricted gradients
    assert r["flops_by_op"].get("aten.convolution", 0) > 0 and r["flops_by_op"].get("aten.convolution_backward", 0) > 0


def test_inference_stages_memory_and_network_figures(quick_run):
    _, results = quick_run
    cases = {r["modality"]: r for r in results["inference"]}
    assert set(cases) == {"mr", "ct"}
    for modality, r in cases.items():
        stages = r["seconds_by_stage"]
        expected = {"read", "orientation", "bias_correction", "resampling", "normalization", "network", "inversion", "write"}
        assert expected <= set(stages), set(stages)
        assert all(math.isfinite(v) and v >= 0 for v in stages.values())
        for key in ("total_seconds", "network_seconds", "s_per_window", "slices_per_s", "flops_per_window",
                    "network_gflops", "reference_gflops", "network_fraction_of_reference", "peak_rss_mb"):
            assert _positive(r[key]), (modality, key)
        assert r["windows"] >= r["windows_run"] > 0 and r["outputs_written"] == 1
    assert cases["mr"]["seconds_by_stage"]["itk_load"] >= 0  # N4 ran on MR only


def test_scaling_and_goals(quick_run):
    _, results = quick_run
    axes = [r["axis"] for r in results["scaling"]]
    assert axes.count("slices") >= 3 and axes.count("inplane") >= 3
    sc = report.scaling_summary(results)
    assert math.isfinite(sc["slices"]["time_slope_s_per_slice"]) and math.isfinite(sc["slices"]["memory_slope_mb_per_slice"])
    goals = {g["goal"].split(" (")[0] for g in results["goals"]}
    assert any(g.startswith("network >=") for g in goals)
    assert any("CHAOS T2" in g for g in goals) and any("peak memory" in g for g in goals)
    assert any("linear" in g for g in goals) and any("memory not growing" in g for g in goals)
    assert all(isinstance(g["met"], bool) and math.isfinite(g["value"]) for g in results["goals"])


def test_the_timed_network_gets_the_passes_the_network_itself_gets():
    """The benchmark times the network through a wrapper (BudgetedNetwork): test-time augmentation must
    still see an ensemble through it and give it one pass, as inference does, or the timed inference is
    not the default's (it once timed MR's default ensemble with five passes)."""
    from monai.inferers import SliceInferer

    from benchmarks.inference import BudgetedNetwork
    from custom import inferers
    from custom.networks import ProbabilityEnsemble

    torch.manual_seed(0)
    x = torch.rand(1, 1, 32, 32, 3) * 2 - 1
    base = SliceInferer(roi_size=(32, 32), spatial_dim=2, sw_batch_size=4)
    inferer = inferers.AutocastInferer(inferers.TestTimeAugmentationInferer(base, gammas=(0.8, 1.25), zooms=(), ensembles=False), "cpu")
    windows = {}
    for name, net in (("single", torch.nn.Conv2d(1, 2, 1)), ("ensemble", ProbabilityEnsemble({"a": torch.nn.Conv2d(1, 2, 1)}))):
        timed = BudgetedNetwork(net.eval(), "cpu")
        with torch.no_grad():
            inferer(x, timed)
        windows[name] = sum(n for n, _ in timed.calls)
    assert windows == {"single": 9, "ensemble": 3}  # 3 slices: plain and two gammas, or plain alone
