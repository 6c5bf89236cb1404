"""Mixed precision: the dtype a stage's forward pass runs in under autocast, per device, and a line saying why.

CUDA: bfloat16 where the GPU has it, else float16 with gradient scaling. CPU: bfloat16 where the processor has native
bf16 instructions (AVX512-BF16 or AMX), where oneDNN's bf16 convolutions beat float32 (on an AMD EPYC the `cpu`
plans' structure step 1.3x with 2 threads, 1.5x with one, the control's 1.2x and 1.35x; documentation/benchmarks.md,
step costs); without them oneDNN emulates bf16, which nothing here measured to pay, so float32. The losses always run in
float32 (stages/common.as_float32), and prediction runs in float32 whatever trained.
"""
from __future__ import annotations

import torch


def cpu_has_native_bf16() -> bool:
    """Whether this processor computes bf16 natively. torch exposes the check privately, so a torch without it
    answers False (float32: slower at worst, never wrong)."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in checks if check is not None)


def autocast_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """The dtype autocast trains in on `device`, or None for float32 throughout."""
    if not amp:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return None


def precision_line(device: torch.device, amp: bool) -> str:
    """One line for the training log: what the networks train in and how to change it."""
    dtype = autocast_dtype(device, amp)
    if dtype is not None:
        name = str(dtype).removeprefix("torch.")
        return f"mixed precision: {name} autocast on {device.type}; --no-amp trains in float32"
    if not amp:
        return "precision: float32 (--no-amp)"
    reason = "this processor has no native bf16 instructions" if device.type == "cpu" else "no autocast there"
    return f"precision: float32 ({reason})"
