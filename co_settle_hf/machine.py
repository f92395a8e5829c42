"""What this machine can do: its CPU, its matmul flags and rate. Benchmarks and the demo name them."""

from __future__ import annotations

import platform
import time
from pathlib import Path

import torch


def cpu_fields() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields = dict(line.split(":", 1) for line in info.split("\n\n")[0].splitlines() if ":" in line)
    return {key.strip(): value.strip() for key, value in fields.items()}


def cpu_has_bf16_matmuls() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX), where bf16 halves a backbone pass."""
    flags = cpu_fields().get("flags", "").split()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_model() -> str:
    """The CPU's model name and the matmul flags that matter here."""
    fields = cpu_fields()
    if not fields:
        return platform.processor() or platform.machine()
    flags = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in fields.get("flags", "").split()]
    return f"{fields.get('model name', platform.machine())}, {'/'.join(flags) or 'no AVX2'}"


def matmul_rate(dtype: torch.dtype = torch.float32, size: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of a square ``size`` matmul on the CPU in ``dtype`` (best of ``repeats``), the yardstick for every timing."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        tic = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - tic)
    return 2 * size**3 / best / 1e9
