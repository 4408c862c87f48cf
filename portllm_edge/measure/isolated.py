"""Run a job (port or LoRA fine-tune) in a fresh subprocess and read its peak memory and wall time.

Metrics (the record always names the one it used):

* CPU: ``peak_rss`` = the worker's peak resident set (Linux ``VmHWM``, which equals
  ``ru_maxrss`` except that it is reset by ``execve``; ``ru_maxrss`` elsewhere), i.e. the
  whole process including the Python interpreter, imported libraries and file-backed
  (mmap'd safetensors) pages, and ``steady_rss`` = the RSS right after the job (psutil).
  ``details["peak_anon_rss_bytes"]`` is the sampled peak of anonymous memory alone
  (tensors and heap, without the page cache of mmap'd weight files). ``baseline_rss`` is the RSS after ``import torch,
  transformers, peft`` and before the job, so ``peak_rss - baseline_rss`` is what
  the job itself added.
* CUDA: ``torch.cuda.max_memory_reserved()`` plus the CUDA context (device memory in
  use right after ``torch.cuda.init()``, from ``torch.cuda.mem_get_info``), together
  with NVML's figure for the process where NVML is available.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from portllm_edge.errors import MeasurementError

RESULT_PREFIX = "PORTLLM_MEASURE_RESULT "


@dataclass(frozen=True)
class MeasureResult:
    """One isolated measurement.

    Attributes:
        job: "port" or "lora_finetune".
        device: "cpu" or "cuda".
        metric: "peak_rss" (CPU) or "cuda_max_reserved_plus_context" (CUDA).
        peak_bytes: the headline peak, bytes (per ``metric``).
        baseline_bytes: RSS after imports, before the job, bytes (CPU).
        steady_bytes: RSS after the job, bytes (CPU).
        cuda_context_bytes: device memory used by the CUDA context, bytes (CUDA only).
        nvml_process_bytes: NVML's used-memory figure for the worker process (CUDA, when available).
        wall_seconds: the job's wall time, seconds (imports excluded).
        phases: per-phase wall times, seconds.
        details: job-specific numbers (accuracy, steps, tokens/s, precision ...).
    """

    job: str
    device: str
    metric: str
    peak_bytes: int
    baseline_bytes: int | None
    steady_bytes: int | None
    cuda_context_bytes: int | None
    nvml_process_bytes: int | None
    wall_seconds: float
    phases: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def peak_rss_bytes() -> int:
    """Peak RSS of this process image, bytes.

    On Linux this is ``VmHWM`` from ``/proc/self/status``: ``ru_maxrss`` is *not* reset by
    ``execve`` (the kernel keeps the forked parent's high-water mark), so a worker started
    from a parent holding a model would report the parent's size. Elsewhere ``ru_maxrss``
    (bytes on macOS, KiB on other systems).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def measure_job(job: str, params: dict[str, Any], *, timeout: float = 1800.0) -> MeasureResult:
    """Run ``job`` with ``params`` in a fresh Python subprocess and return its measurement.

    Args:
        job: "port" or "lora_finetune" (see :mod:`portllm_edge.measure.worker`).
        params: JSON-serializable job parameters.
        timeout: seconds before the worker is killed.

    Raises:
        MeasurementError: the worker failed, timed out or printed no result.
    """
    cmd = [sys.executable, "-m", "portllm_edge.measure.worker", job, json.dumps(params)]
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired as exc:
        raise MeasurementError(
            f"measurement job {job!r} ran past {timeout:.0f} s.",
            hint="use a smaller --limit or fewer --steps",
        ) from exc
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            data = json.loads(line[len(RESULT_PREFIX) :])
            if "error" in data:
                raise MeasurementError(
                    f"measurement job {job!r} failed: {data['error']}",
                    hint=data.get("hint") or "run the job directly to see the full error",
                )
            return MeasureResult(**data)
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    raise MeasurementError(
        f"measurement job {job!r} exited with {proc.returncode} and no result ({' | '.join(tail)[:300]}).",
        hint="run the job directly to see the full error",
    )


def median_and_spread(values: list[float]) -> tuple[float, float]:
    """Median and spread (max − min) of repeated measurements."""
    if not values:
        raise ValueError("no values")
    return float(statistics.median(values)), float(max(values) - min(values))
