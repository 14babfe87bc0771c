"""Mixed precision for any inferer, on CPU as on CUDA: the network under autocast, the rest in float32.

MONAI's ``SupervisedEvaluator(amp=True)`` autocasts on CUDA only, and around the whole inferer, so a
sliding window's blending and test-time augmentation's averaging would run in the low precision too.
On a CPU with bfloat16 instructions (AVX-512 BF16, AMX) the network's convolutions are where the time
goes and where bfloat16 pays (benchmarks/); this inferer autocasts each network call alone and hands its
output back in float32, so windows, passes and ensemble members are merged at full precision.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from monai.inferers import Inferer

__all__ = ["AutocastInferer", "native_bfloat16"]


def native_bfloat16(device: str | torch.device, cpu_flags_file: str = "/proc/cpuinfo") -> bool:
    """Whether ``device`` computes bfloat16 in hardware, so that autocast to it saves time: a CUDA GPU
    that supports it, or a CPU whose flags (Linux) list AVX-512 BF16 or AMX BF16. Elsewhere bfloat16
    is emulated and slower than float32, and configs keep ``amp`` off."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:
        with open(cpu_flags_file) as f:
            flags = {flag for line in f if line.startswith("flags") for flag in line.split(":", 1)[1].split()}
    except OSError:  # not Linux: no way to tell here, so no autocast
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def _to_float32(out: Any) -> Any:
    """Floating tensors in ``out`` (a tensor, or a tuple, list or dict of them) as float32."""
    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, (tuple, list)):
        return type(out)(_to_float32(o) for o in out)
    if isinstance(out, dict):
        return {k: _to_float32(v) for k, v in out.items()}
    return out


class AutocastInferer(Inferer):
    """``inferer`` with every call of the network under ``torch.autocast(device_type, dtype)``.

    Args:
        inferer: runs the network over an image (``SliceInferer``, ``TestTimeAugmentationInferer``, ...).
        device_type: ``"cpu"`` or ``"cuda"``: where the network runs.
        dtype: the autocast type; bfloat16 keeps float32's range, so logits cannot overflow.
        enabled: ``False`` passes straight through (configs switch it with ``amp``).
    """

    def __init__(self, inferer: Inferer, device_type: str | torch.device, dtype: torch.dtype = torch.bfloat16, enabled: bool = True) -> None:
        super().__init__()
        self.inferer = inferer
        self.device_type = torch.device(device_type).type
        if dtype not in (torch.bfloat16, torch.float16):
            raise ValueError(f"autocast dtype must be torch.bfloat16 or torch.float16, got {dtype}")
        if self.device_type == "cpu" and dtype == torch.float16:
            raise ValueError("float16 autocast on CPU is slow and overflows easily: use torch.bfloat16")
        self.dtype = dtype
        self.enabled = bool(enabled)

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self.enabled:
            return self.inferer(inputs, network, *args, **kwargs)

        def autocast_network(x: torch.Tensor, *a: Any, **k: Any) -> Any:
            with torch.autocast(self.device_type, dtype=self.dtype):
                out = network(x, *a, **k)
            return _to_float32(out)

        autocast_network.__wrapped__ = network  # what it runs (inspect.unwrap), for inferers that ask

        return self.inferer(inputs, autocast_network, *args, **kwargs)
