"""What a device computes in natively, and how fast it reads memory.

Why this module exists: two decisions hang on these facts, and each must be
made in one place. (1) Which dtype a load keeps unquantized tensors in
(embeddings, lm_head, norms): their stored 16-bit dtype where the device
computes in it natively, else fp32. (2) How fast a model decodes: single-stream
decoding reads every weight once per token, so tokens/s is bounded by memory
bandwidth ÷ bytes read per token (the "memory wall" of LLM inference; e.g.
Kim et al., "SqueezeLLM", 2023, §3; llama.cpp's performance notes).

CPU facts come from ``/proc/cpuinfo`` flags (``avx512_bf16``/``amx_bf16``) and a
timed numpy copy; GPU bandwidth from NVML (memory clock × bus width × 2 for
double data rate). It must not import torch.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

from portllm_edge.hardware.nvml import NotAvailable, nvml_query

CPUINFO = Path("/proc/cpuinfo")
MIN_BNB_CPU = (0, 46, 1)
"""First bitsandbytes release with CPU 4-bit/8-bit kernels."""
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
"""x86 flags of native bf16 arithmetic (AVX512-BF16 dot products, AMX tiles)."""


@functools.lru_cache(maxsize=4)
def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The first CPU's feature flags (``flags`` on x86, ``Features`` on Arm); empty when unreadable."""
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("flags", "Features"):
                return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def cpu_bf16_native(cpuinfo: Path = CPUINFO) -> bool:
    """True when the CPU computes bf16 natively (x86 AVX512-BF16/AMX-BF16, Arm ``bf16``)."""
    flags = cpu_flags(cpuinfo)
    return any(f in flags for f in BF16_CPU_FLAGS) or "bf16" in flags


def measure_cpu_bandwidth(size_bytes: int = 256 * 1024**2, repeats: int = 3) -> float:
    """Host memory bandwidth in bytes/s: the best of ``repeats`` numpy copies of ``size_bytes``.

    A copy reads and writes every byte, so bandwidth = 2 × size ÷ seconds (the STREAM
    "Copy" kernel's accounting, McCalpin 1995). Takes about 0.3 s and ``2 × size_bytes`` of RAM.
    """
    import numpy as np

    src = np.ones(size_bytes // 8, dtype=np.float64)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - start)
    return 2.0 * src.nbytes / max(best, 1e-9)


def gpu_bandwidth_bytes_per_s(nvml_index: int) -> int | None:
    """A GPU's peak memory bandwidth from NVML: ``2 × max memory clock (Hz) × bus width (bytes)``; ``None`` when unknown."""
    handle = nvml_query("nvmlDeviceGetHandleByIndex", nvml_index)
    if isinstance(handle, NotAvailable):
        return None
    clock = nvml_query("nvmlDeviceGetMaxClockInfo", handle, 2)  # NVML_CLOCK_MEM = 2, MHz
    width = nvml_query("nvmlDeviceGetMemoryBusWidth", handle)  # bits
    if isinstance(clock, NotAvailable) or isinstance(width, NotAvailable) or not clock or not width:
        return None
    return int(2 * int(clock) * 1_000_000 * int(width) // 8)


def device_kind(device: str) -> str:
    """``"cuda"`` for ``cuda``/``cuda:N``/``unified``, else ``"cpu"``."""
    return "cuda" if device.split(":")[0] in ("cuda", "unified") else "cpu"


@functools.lru_cache(maxsize=1)
def bitsandbytes_installed_version() -> tuple[int, ...] | None:
    """bitsandbytes' version from its package metadata (no import, no torch), or ``None`` when absent."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        text = version("bitsandbytes")
    except PackageNotFoundError:
        return None
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def bitsandbytes_runs_on(device: str) -> bool:
    """True when the installed bitsandbytes has 4-bit/8-bit kernels for ``device`` (CUDA, or CPU from 0.46.1)."""
    version = bitsandbytes_installed_version()
    if version is None:
        return False
    return device_kind(device) == "cuda" or version >= MIN_BNB_CPU
