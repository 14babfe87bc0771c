"""Inference benchmark of one volume, stage by stage, with the objects of ``bundle/configs/inference.yaml``.

The config is parsed as users run it (same ids); its ``preprocessing`` and ``postprocessing``
transforms are applied one at a time and timed, the network runs through the config's
``inferer`` in MONAI's ``eval_mode`` (as ``SupervisedEvaluator`` does), and the data between them
is collated and decollated as the evaluator does. Each stage records its wall time, the resident
memory after it and its own peak (``VmHWM`` reset before the stage).

Run one case per fresh process (``python -m benchmarks.inference SPEC.json OUT.json``) so that the
peak resident memory is that case's alone; the runner does this unless ``--in-process``.

Network budget: at paper defaults a slice costs ~150 GFLOP (seconds on a CPU), so the network may be
run for real on only the first ``network_calls`` sliding-window batches; later batches return the
last real output without computing (the inferer's padding, Gaussian weighting and aggregation still
run over the whole volume, so their time and memory are real), and the network time of those
batches is added from the measured median seconds per window. The JSON says how many windows ran.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from .common import BUNDLE, autocast, conv_reference, cuda_peak_mb, median, memory_mb, reset_peak_memory, sync, threads_info

#: transform class name -> reported stage
STAGES = {
    "LoadImaged": "read",
    "EnsureChannelFirstd": "read",
    "Orientationd": "orientation",
    "N4BiasFieldCorrectiond": "bias_correction",
    "Identityd": "bias_correction",
    "SafeSpacingd": "resampling",
    "Spacingd": "resampling",
    "ScaleIntensityRanged": "normalization",
    "ScaleIntensityRangePercentilesd": "normalization",
    "ScaleIntensityRangePercentilesCappedd": "normalization",
    "EnsureTyped": "normalization",
    "Activationsd": "softmax",
    "Invertd": "inversion",
    "AsDiscreted": "argmax",
    "KeepLargestConnectedComponentd": "largest_component",
    "DetachThinBridgesd": "thin_bridges",
    "KeepContinuousSlicesd": "slice_continuity",
    "SaveImaged": "write",
    "CopyItemsd": "other_post",
    "Lambdad": "other_post",
}


def stage_of(transform, default: str) -> str:
    """The reported stage of a transform, by its class or the nearest MONAI class it extends
    (``AtomicSaveImaged`` is a ``SaveImaged``)."""
    return next((STAGES[c.__name__] for c in type(transform).__mro__ if c.__name__ in STAGES), default)


class BudgetedNetwork(torch.nn.Module):
    """Times every call of ``net``; after ``max_calls`` real calls, returns the last output unchanged."""

    def __init__(self, net: torch.nn.Module, device, max_calls: int | None = None) -> None:
        super().__init__()
        self.net, self.device, self.max_calls = net, device, max_calls
        # what it runs, for inferers that ask (inspect.unwrap: test-time augmentation skips ensembles)
        object.__setattr__(self, "__wrapped__", net)
        self.calls: list[tuple[int, float]] = []  # (windows, seconds) of real calls
        self.skipped_windows = 0
        self._last: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.max_calls is not None and len(self.calls) >= self.max_calls and self._last is not None:
            self.skipped_windows += x.shape[0]
            last = self._last
            if last.shape[0] < x.shape[0]:
                last = last.repeat((x.shape[0] + last.shape[0] - 1) // last.shape[0], *[1] * (last.ndim - 1))
            return last[: x.shape[0]].clone()
        sync(self.device)
        t = time.perf_counter()
        y = self.net(x)
        sync(self.device)
        self.calls.append((int(x.shape[0]), time.perf_counter() - t))
        self._last = y
        return y


def _stage(stages: list, name: str, fn, device):
    reset_peak_memory()
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    dt = time.perf_counter() - t
    mem = memory_mb()
    stages.append({"stage": name, "seconds": dt, "rss_mb": mem["rss_mb"], "peak_mb": mem["peak_mb"]})
    return out


def window_flops(network: torch.nn.Module, roi: list[int], device, amp: bool, channels: int = 1) -> float:
    """FLOPs of the network on one window (one slice of ``channels`` at roi size), counted by FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, channels, *roi, device=device)
    with FlopCounterMode(display=False) as counter, torch.no_grad(), autocast(device, amp):
        network(x)
    return float(counter.get_total_flops())


def run_case(spec: dict) -> dict:
    """Benchmarks one volume. ``spec``: image, modality, device, amp, overrides (config ids), network_calls,
    ref_batch, ref_repeats, ref_scale, output_dir (optional), name."""
    from monai.bundle import ConfigParser
    from monai.data import decollate_batch, list_data_collate
    from monai.networks.utils import eval_mode
    from monai.transforms import apply_transform

    t_start = time.perf_counter()
    device = spec.get("device", "cpu")
    amp = bool(spec.get("amp", False))
    stages: list[dict] = []
    out_dir = spec.get("output_dir") or tempfile.mkdtemp(prefix="dalace_bench_")

    def setup():
        parser = ConfigParser()
        parser.read_config([str(BUNDLE / "configs" / c) for c in ["inference.yaml", *spec.get("configs", [])]])
        parser.update(
            {
                "bundle_root": str(BUNDLE),
                "input": spec["image"],
                "modality": spec.get("modality", "mr"),
                "output_dir": out_dir,
                "device": f"$torch.device('{device}')",
                "amp": amp,
                "num_workers": 0,
                **spec.get("overrides", {}),
            }
        )
        network = parser.get_parsed_content("network")
        ckpt = parser.get_parsed_content("ckpt_path")
        loaded = False
        if spec.get("load_weights", True) and Path(ckpt).is_file():
            try:
                network.load_state_dict(torch.load(ckpt, map_location=device, weights_only=True))
                loaded = True
            except (RuntimeError, KeyError):  # weights of another width: random ones time the same
                loaded = False
        return parser, network, loaded

    parser, network, loaded = _stage(stages, "setup", setup, device)
    preprocessing = parser.get_parsed_content("preprocessing")
    postprocessing = parser.get_parsed_content("postprocessing")
    inferer = parser.get_parsed_content("inferer")
    roi = list(parser.get_parsed_content("roi_size"))

    if any(type(t).__name__ == "N4BiasFieldCorrectiond" for t in preprocessing.transforms):
        # ITK loads its N4 module lazily on first use (seconds, hundreds of MB): a once-per-process cost
        def itk_load():
            import itk

            return itk.N4BiasFieldCorrectionImageFilter, itk.image_from_array

        _stage(stages, "itk_load", itk_load, device)

    data = {"image": spec["image"]}
    for t in preprocessing.transforms:
        name = stage_of(t, "other_pre")
        data = _stage(stages, name, lambda t=t, d=data: apply_transform(t, d), device)
        if name == "read":
            input_shape = list(data["image"].shape[-3:])
            input_pixdim = [float(v) for v in data["image"].pixdim[:3]]
    shape = list(data["image"].shape[-3:])  # after resampling: the network's grid

    batch = list_data_collate([data])
    image = batch["image"].to(device)
    budget = BudgetedNetwork(network, device, spec.get("network_calls"))
    ref_before = conv_reference(device, spec.get("ref_batch", 4), spec.get("ref_repeats", 3), amp, False, spec.get("ref_scale", 1.0))

    def infer():  # the config's inferer autocasts the network's calls when amp (custom.inferers.AutocastInferer)
        with eval_mode(network):
            return inferer(image, budget)

    pred = _stage(stages, "network", infer, device)
    ref_after = conv_reference(device, spec.get("ref_batch", 4), spec.get("ref_repeats", 3), amp, False, spec.get("ref_scale", 1.0))
    inferer_s = stages[-1]["seconds"]

    real_windows = sum(n for n, _ in budget.calls)
    real_s = sum(s for _, s in budget.calls)
    per_window = [s / n for n, s in budget.calls]
    # the first call carries one-off costs (oneDNN primitive creation): the median excludes it when possible
    steady = per_window[1:] if len(per_window) > 2 else per_window
    s_per_window = median(steady)
    extrapolated_s = budget.skipped_windows * s_per_window
    total_windows = real_windows + budget.skipped_windows
    network_s = inferer_s + extrapolated_s  # inferer wall (real calls + aggregation) + skipped calls' compute
    stages[-1]["seconds"] = network_s
    stages[-1]["measured_seconds"] = inferer_s
    stages[-1]["extrapolated_seconds"] = extrapolated_s
    with eval_mode(network):
        flops_window = window_flops(network, roi, device, amp, channels=image.shape[1])

    def to_items():
        items_b = decollate_batch(batch, detach=True)
        items_o = decollate_batch({"image": image, "pred": pred}, detach=True)
        return {**items_b[0], **items_o[0]}

    data = _stage(stages, "decollate", to_items, device)
    for t in postprocessing.transforms:
        name = stage_of(t, "other_post")
        data = _stage(stages, name, lambda t=t, d=data: apply_transform(t, d), device)
    written = sorted(str(p) for p in Path(out_dir).glob("*_seg.nii.gz"))

    by_stage: dict[str, float] = {}
    for s in stages:
        by_stage[s["stage"]] = by_stage.get(s["stage"], 0.0) + s["seconds"]
    total = sum(v for k, v in by_stage.items() if k != "setup")
    ref = 0.5 * (ref_before["best"] + ref_after["best"])
    net_rate = flops_window / s_per_window / 1e9
    return {
        "name": spec.get("name", Path(spec["image"]).name),
        "image": spec["image"],
        "modality": spec.get("modality", "mr"),
        "device": device,
        "amp_bf16": amp,
        "weights": "bundle checkpoint" if loaded else "random initialisation (timing does not depend on the weights)",
        "input_shape": input_shape,
        "input_pixdim": input_pixdim,
        "network_grid_shape": shape,
        "roi_size": roi,
        "slices": shape[2],
        "windows": total_windows,
        "windows_run": real_windows,
        "network_calls": [{"windows": n, "seconds": s} for n, s in budget.calls],
        "flops_per_window": flops_window,
        "s_per_window": s_per_window,
        "network_seconds": network_s,
        "network_measured_seconds": inferer_s,
        "network_extrapolated_seconds": extrapolated_s,
        "inferer_overhead_seconds": max(inferer_s - real_s, 0.0),
        "slices_per_s": shape[2] / network_s,
        "windows_per_s": 1.0 / s_per_window,
        "network_gflops": net_rate,
        "reference_gflops_before": ref_before,
        "reference_gflops_after": ref_after,
        "reference_gflops": ref,
        "network_fraction_of_reference": net_rate / ref,
        "stages": stages,
        "seconds_by_stage": by_stage,
        "total_seconds": total,
        "setup_seconds": by_stage.get("setup", 0.0),
        "peak_rss_mb": max(s["peak_mb"] for s in stages),
        "peak_rss_mb_by_stage": {s["stage"]: s["peak_mb"] for s in stages},
        "final_rss_mb": memory_mb()["rss_mb"],
        "cuda_peak_mb": cuda_peak_mb(device),
        "outputs_written": len(written),
        "worker_seconds": time.perf_counter() - t_start,
        "threads": threads_info(),
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(argv[0]).read_text())
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    result = run_case(spec)
    Path(argv[1]).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
