"""Shared helpers: timers that synchronise the device, the dense-convolution reference rate, memory
figures read from ``/proc/self/status`` (VmRSS, VmHWM), and statistics.

Timings on a shared CPU are noisy: every rate compared in the report is measured in the same run,
interleaved with what it is compared to, and summarised by medians.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable, Sequence

import torch

from tools.paths import BUNDLE, REPO

__all__ = [
    "autocast",
    "conv_reference",
    "median",
    "memory_mb",
    "reset_peak_memory",
    "sync",
    "timed",
]


def sync(device: torch.device | str) -> None:
    """Wait for the device's queued work (CUDA is asynchronous; CPU needs nothing)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable, device: torch.device | str) -> tuple[float, object]:
    """(seconds, result) of ``fn()``, the device synchronised before and after."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def autocast(device: torch.device | str, amp: bool):
    """bfloat16 autocast on ``device`` when ``amp`` (as the bundle's ``amp`` option), else nothing."""
    if not amp:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


# ------------------------------------------------------------------------------------- memory
def _status() -> dict[str, int]:
    """``/proc/self/status`` memory fields in kB (empty off Linux)."""
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


def memory_mb() -> dict[str, float]:
    """Resident memory now (``rss_mb``) and its high-water mark since start or the last reset (``peak_mb``)."""
    s = _status()
    return {"rss_mb": s.get("VmRSS", 0) / 1024.0, "peak_mb": s.get("VmHWM", 0) / 1024.0}


def reset_peak_memory() -> bool:
    """Reset the kernel's resident high-water mark (VmHWM) to the current RSS (Linux >= 4.0).

    Lets one process report the peak of each stage on its own. Returns whether it worked.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def cuda_peak_mb(device: torch.device | str) -> float | None:
    if torch.device(device).type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


# ---------------------------------------------------------------------------- conv reference
#: The reference convolutions: (name, in/out channels, spatial size). 256 channels at 64x64 is the
#: layer that dominates DALACE (the anatomy encoder's and generator's residual blocks at paper
#: defaults); 64 channels at 256x256 is a typical full-resolution layer.
REFERENCE_CONVS = (("conv3x3_256ch_64x64", 256, 64), ("conv3x3_64ch_256x256", 64, 256))


def conv_reference(
    device: torch.device | str,
    batch: int = 4,
    repeats: int = 3,
    amp: bool = False,
    backward: bool = False,
    scale: float = 1.0,
) -> dict[str, float]:
    """The machine's dense 3x3 convolution rate now, in GFLOP/s, per reference layer and their best.

    Each layer runs once to warm up, then ``repeats`` times; the median rate is reported. FLOPs are
    2 * C_in * C_out * 9 * H * W * batch per forward (multiply-adds counted as 2, as
    ``torch.utils.flop_counter`` counts them); with ``backward`` the input and weight gradients are
    added (3x the forward). ``scale`` shrinks the channel counts and sizes (the quick mode).
    """
    out: dict[str, float] = {}
    for name, channels, size in REFERENCE_CONVS:
        c = max(4, int(channels * scale))
        s = max(8, int(size * scale))
        conv = torch.nn.Conv2d(c, c, 3, padding=1, bias=False).to(device)
        x = torch.randn(batch, c, s, s, device=device, requires_grad=backward)
        flops = 2.0 * c * c * 9 * s * s * batch * (3 if backward else 1)

        def step():
            with autocast(device, amp):
                y = conv(x)
            if backward:
                torch.autograd.grad(y.float().sum(), [x, conv.weight])
            return None

        ctx = contextlib.nullcontext() if backward else torch.inference_mode()
        with ctx:
            timed(step, device)
            rates = [flops / timed(step, device)[0] / 1e9 for _ in range(repeats)]
        out[name] = median(rates)
    out["best"] = max(out[name] for name, _, _ in REFERENCE_CONVS)
    return out


def threads_info() -> dict[str, object]:
    return {
        "torch_num_threads": torch.get_num_threads(),
        "torch_num_interop_threads": torch.get_num_interop_threads(),
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
