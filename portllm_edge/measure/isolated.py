"""Run a job (port or LoRA fine-tune) in a fresh subprocess and read its peak memory and wall time.

Metrics (the record always names the one it used):

* CPU: ``peak_anon_plus_mapped_weights`` = the worker's peak of anonymous resident memory
  (``RssAnon``: heap, tensors) plus the resident pages of mapped weight files (a bf16 model
  computing from its mmapped safetensors), sampled by a thread in the worker: the one
  rule, :mod:`portllm_edge.measure.memory`. ``baseline_bytes`` is that figure after
  ``import torch, transformers, peft`` and before the job, so ``peak - baseline`` is what
  the job itself added; ``steady_bytes`` is the RSS right after the job (psutil).
  ``details["peak_anon_rss_bytes"]`` is the anonymous part's own peak and
  ``details["vmhwm_bytes"]`` the whole-process high-water mark (Linux ``VmHWM``, shared
  libraries and read-once file pages included), each labelled as such wherever shown.
* CUDA: ``torch.cuda.max_memory_reserved()`` plus the CUDA context (device memory in
  use right after ``torch.cuda.init()``, from ``torch.cuda.mem_get_info``), together
  with NVML's figure for the process where NVML is available.

The caller's own memory never enters a figure: every measured job runs in a fresh
``python -m portllm_edge.measure.worker`` process started by :func:`measure_job`.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import threading
from collections.abc import Callable
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
        metric: "peak_anon_plus_mapped_weights" (CPU, :mod:`portllm_edge.measure.memory`) or
            "cuda_max_reserved_plus_context" (CUDA).
        peak_bytes: the headline peak, bytes (per ``metric``).
        baseline_bytes: the CPU headline's figure after imports, before the job, bytes (CPU).
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


PHASE_PREFIX = "PORTLLM_MEASURE_PHASE "


def _worker_error(job: str, data: dict[str, Any]) -> Exception:
    """The worker's error as the same :mod:`portllm_edge.errors` class (message and hint kept).

    An expected error of the job (a :class:`~portllm_edge.errors.PortllmError` subclass, e.g. a
    ``PortingError`` for a patch that does not change the output) is re-raised as itself, so a
    caller sees the same error whether the job ran in a worker or in its own process.
    """
    from portllm_edge import errors

    cls = getattr(errors, str(data.get("error_type") or ""), None)
    if isinstance(cls, type) and issubclass(cls, errors.PortllmError) and data.get("message"):
        return cls(str(data["message"]), hint=data.get("hint"))
    return MeasurementError(
        f"measurement job {job!r} failed: {data['error']}",
        hint=data.get("hint") or "run the job directly to see the full error",
    )


def measure_job(
    job: str,
    params: dict[str, Any],
    *,
    timeout: float = 1800.0,
    on_phase: Callable[[str], None] | None = None,
) -> MeasureResult:
    """Run ``job`` with ``params`` in a fresh Python subprocess and return its measurement.

    This is the one place a job's memory is measured: the peak is the worker's, never the
    caller's (see the module docstring for the metrics).

    Args:
        job: "port" or "lora_finetune" (see :mod:`portllm_edge.measure.worker`).
        params: JSON-serializable job parameters.
        timeout: seconds before the worker is killed.
        on_phase: called with each phase's name as the worker starts it (load, attach, evaluate,
            train). An exception it raises (``KeyboardInterrupt``, a cancel) kills the worker and
            propagates.

    Raises:
        PortllmError subclass: the job's own expected error, re-raised with its message and hint.
        MeasurementError: the worker crashed, timed out or printed no result.
    """
    cmd = [sys.executable, "-m", "portllm_edge.measure.worker", job, json.dumps(params)]
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    stderr_lines: list[str] = []
    drain = threading.Thread(target=lambda: stderr_lines.extend(proc.stderr or ()), daemon=True)
    drain.start()
    result: dict[str, Any] | None = None
    try:
        for line in proc.stdout or ():
            if line.startswith(PHASE_PREFIX) and on_phase is not None:
                on_phase(line[len(PHASE_PREFIX) :].strip())
            elif line.startswith(RESULT_PREFIX):
                result = json.loads(line[len(RESULT_PREFIX) :])
        proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        timer.cancel()
    drain.join(timeout=5)
    if result is None:
        if proc.returncode == -signal.SIGKILL:
            raise MeasurementError(
                f"measurement job {job!r} ran past {timeout:.0f} s (or was killed).",
                hint="use a smaller --limit or fewer --steps",
            )
        tail = [ln.strip() for ln in stderr_lines if ln.strip()][-3:]
        raise MeasurementError(
            f"measurement job {job!r} exited with {proc.returncode} and no result ({' | '.join(tail)[:300]}).",
            hint="run the job directly to see the full error",
        )
    if "error" in result:
        raise _worker_error(job, result)
    return MeasureResult(**result)


def median_and_spread(values: list[float]) -> tuple[float, float]:
    """Median and spread (max − min) of repeated measurements."""
    if not values:
        raise ValueError("no values")
    return float(statistics.median(values)), float(max(values) - min(values))
