"""Training benchmark: one real DALACETrainer iteration, built from ``bundle/configs/train.yaml``.

The network, optimizers, loss and trainer come from the training config (with a few ids
overridden: width, image size, batch size, device, amp); only the data is synthetic (random
images in [-1, 1] and a blob label), since the cost of an iteration does not depend on the values.
The pair game (APM) is active, as in the paper's iterations after its warm-up: the most expensive
iteration. FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` over one complete
iteration (forward of every path plus each optimizer's restricted gradients), and seconds per
iteration are the median of the timed iterations that follow, each between two samples of the
dense-convolution reference rate.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from monai.bundle import ConfigParser
from torch.utils.flop_counter import FlopCounterMode

from .common import BUNDLE, conv_reference, cuda_peak_mb, median, memory_mb, sync


def build_trainer(width: int, size: int, batch: int, device: str, amp: bool, num_res_blocks: int | None = None,
                  features: list[int] | None = None, overrides: dict | None = None):
    """The bundle's DALACETrainer at the given scale, with no handlers and no data loader; ``overrides``:
    more train.yaml ids (a recipe's, e.g. ``mr_consistency``)."""
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.yaml"))
    parser.update(
        {
            "bundle_root": str(BUNDLE),
            "device": f"$torch.device('{device}')",
            "width": width,
            "roi_size": [size, size],
            "batch_size": batch,
            "amp": amp,
            "pair_warmup_epochs": 0,  # the pair game on: the full iteration
            "train#trainer#train_data_loader": "$[]",
            "train#trainer#train_handlers": [],
            "train#trainer#max_epochs": 1,
            "mr_consistency_warmup_epochs": 0,  # as the pair game: the full iteration when the recipe has it
            **(overrides or {}),
        }
    )
    if num_res_blocks is not None:
        parser["num_res_blocks"] = num_res_blocks
    if features is not None:
        parser["segmenter#features"] = list(features)
    trainer = parser.get_parsed_content("train#trainer")
    return trainer


def synthetic_batch(batch: int, size: int, device: str, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    blob = ((xx / 0.5) ** 2 + (yy / 0.35) ** 2 < 1).float()[None, None].repeat(batch, 1, 1, 1)
    ct = (torch.rand(batch, 1, size, size, generator=g) * 2 - 1) * 0.3 + 0.5 * blob
    mr = (torch.rand(batch, 1, size, size, generator=g) * 2 - 1) * 0.3 - 0.5 * blob
    mr = mr.clamp(-1, 1)
    # the re-rendered MR slice is read only by recipes with the MR consistency term
    return {"ct_image": ct.clamp(-1, 1).to(device), "ct_label": blob.to(device), "mr_image": mr.to(device),
            "mr_image_strong": (mr * 0.8 + 0.1).to(device)}


def run_training(
    name: str,
    width: int,
    size: int,
    batch: int,
    iterations: int,
    device: str = "cpu",
    amp: bool = False,
    num_res_blocks: int | None = None,
    features: list[int] | None = None,
    ref_batch: int = 4,
    ref_repeats: int = 3,
    ref_scale: float = 1.0,
    overrides: dict | None = None,
    log=print,
) -> dict:
    """Seconds per iteration, counted FLOPs per iteration and the fraction of the conv reference."""
    torch.manual_seed(0)
    t0 = time.perf_counter()
    trainer = build_trainer(width, size, batch, device, amp, num_res_blocks, features, overrides)
    build_s = time.perf_counter() - t0
    data = synthetic_batch(batch, size, device)
    params = sum(p.numel() for p in trainer.network.parameters())

    def iteration():
        return trainer.train_step(data)

    # 1) the counted iteration (also the warm-up: first-call allocations, oneDNN primitives)
    sync(device)
    t = time.perf_counter()
    with FlopCounterMode(display=False) as counter:
        out = iteration()
    sync(device)
    counted_s = time.perf_counter() - t
    flops = float(counter.get_total_flops())
    by_op = {str(k): float(v) for k, v in counter.get_flop_counts().get("Global", {}).items()}
    log(f"  [{name}] counted iteration: {flops / 1e12:.3f} TFLOP in {counted_s:.1f} s (loss {out['loss']:.3f})")

    # 2) timed iterations, each between two reference samples
    refs_fwd, refs_bwd, times = [], [], []
    refs_fwd.append(conv_reference(device, ref_batch, ref_repeats, amp, False, ref_scale))
    refs_bwd.append(conv_reference(device, ref_batch, ref_repeats, amp, True, ref_scale))
    for i in range(iterations):
        sync(device)
        t = time.perf_counter()
        iteration()
        sync(device)
        times.append(time.perf_counter() - t)
        refs_fwd.append(conv_reference(device, ref_batch, ref_repeats, amp, False, ref_scale))
        refs_bwd.append(conv_reference(device, ref_batch, ref_repeats, amp, True, ref_scale))
        log(f"  [{name}] iteration {i + 1}/{iterations}: {times[-1]:.2f} s")
    s_per_it = median(times)
    rate = flops / s_per_it / 1e9
    ref_fwd = median([r["best"] for r in refs_fwd])
    ref_bwd = median([r["best"] for r in refs_bwd])
    # per timed iteration: its rate over the mean of the reference samples just before and after it
    fractions = [
        (flops / t / 1e9) / (0.5 * (refs_fwd[i]["best"] + refs_fwd[i + 1]["best"])) for i, t in enumerate(times)
    ]
    return {
        "name": name,
        "width": width,
        "image_size": [size, size],
        "batch_size": batch,
        "num_res_blocks": trainer.network.anatomy_encoders["ct"].num_res_blocks,
        "segmenter_features": list(getattr(trainer.network.segmenter, "_features", []) or []) or features,
        "amp_bf16": amp,
        "device": device,
        "pair_game": True,
        "overrides": overrides or {},
        "parameters": params,
        "build_s": build_s,
        "flops_per_iteration": flops,
        "flops_by_op": by_op,
        "counted_iteration_s": counted_s,
        "iteration_s": times,
        "s_per_iteration": s_per_it,
        "iterations_per_s": 1.0 / s_per_it,
        "achieved_gflops": rate,
        "reference_fwd_gflops": ref_fwd,
        "reference_fwd_bwd_gflops": ref_bwd,
        "reference_samples_fwd": refs_fwd,
        "reference_samples_fwd_bwd": refs_bwd,
        "fraction_of_reference_fwd": median(fractions),
        "fraction_of_reference_fwd_bwd": rate / ref_bwd,
        "memory": memory_mb(),
        "cuda_peak_mb": cuda_peak_mb(device),
    }
