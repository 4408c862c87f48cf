"""Subprocess entry point for :func:`portllm_edge.measure.measure_job`.

``python -m portllm_edge.measure.worker JOB PARAMS_JSON`` runs one job and prints one
line ``PORTLLM_MEASURE_RESULT {json}`` (a MeasureResult, or ``{"error": ...}``).

Each phase start is printed as ``PORTLLM_MEASURE_PHASE <name>`` for the parent's progress.

Jobs:

* ``port``: a :class:`~portllm_edge.workflow.jobs.PortJob` (JSON): the measured part of a port,
  :func:`portllm_edge.workflow.jobs.run_port_job` -- load the base, attach the checked patch
  unmerged (verified), and score the quick evaluation when one is given. Its details are a
  :class:`~portllm_edge.workflow.jobs.PortJobResult` (JSON).
* ``lora_finetune``: a :class:`~portllm_edge.workflow.jobs.FinetuneJob` (JSON):
  :func:`portllm_edge.workflow.jobs.run_finetune_job` -- load the base at ``dtype`` (or NF4
  for QLoRA), add fresh LoRA layers and take ``hp.max_steps`` AdamW steps. Its details are a
  :class:`~portllm_edge.workflow.jobs.FinetuneJobResult` (JSON).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from portllm_edge.measure.isolated import PHASE_PREFIX, peak_rss_bytes
from portllm_edge.measure.memory import HEADLINE_METRIC, PeakSampler, read_memory


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def _nvml_process_bytes() -> int | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if proc.pid == os.getpid() and proc.usedGpuMemory is not None:
                    return int(proc.usedGpuMemory)
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return None
    return None


Announce = Callable[[str], None]
"""announce(phase): tells whoever runs the job that a phase starts."""


def announce_to_parent(name: str) -> None:
    """The worker's :data:`Announce`: one ``PORTLLM_MEASURE_PHASE <name>`` line on stdout."""
    print(PHASE_PREFIX + name, flush=True)


def _job_port(p: dict[str, Any], phases: dict[str, float], announce: Announce) -> dict[str, Any]:
    """``port``: :func:`portllm_edge.workflow.jobs.run_port_job` on the :class:`~portllm_edge.workflow.jobs.PortJob` ``p``."""
    from portllm_edge.workflow.jobs import PortJob, run_port_job

    return _timed(lambda on_phase: run_port_job(PortJob.from_json(p), on_phase).to_json(), phases, announce)


def _job_lora_finetune(p: dict[str, Any], phases: dict[str, float], announce: Announce) -> dict[str, Any]:
    """``lora_finetune``: :func:`portllm_edge.workflow.jobs.run_finetune_job` on the :class:`~portllm_edge.workflow.jobs.FinetuneJob` ``p``."""
    from portllm_edge.workflow.jobs import FinetuneJob, run_finetune_job

    return _timed(
        lambda on_phase: run_finetune_job(FinetuneJob.from_json(p), on_phase).to_json(), phases, announce
    )


def _timed(
    run: Callable[[Announce], dict[str, Any]], phases: dict[str, float], announce: Announce
) -> dict[str, Any]:
    """``run(on_phase)`` with each phase it announces timed into ``phases`` (seconds)."""
    from portllm_edge.workflow.steps import Phases

    clock = Phases(announce, phases)
    try:
        return run(clock.start)
    finally:
        clock.stop()


JOBS: dict[str, Callable[[dict[str, Any], dict[str, float], Announce], dict[str, Any]]] = {
    "port": _job_port,
    "lora_finetune": _job_lora_finetune,
}
"""Job name -> runner: JSON parameters in (the job's ``to_json``), JSON details out (its result's ``to_json``)."""


def main(argv: list[str]) -> int:
    job, params = argv[0], json.loads(argv[1])
    try:
        import peft  # noqa: F401
        import torch
        import transformers  # noqa: F401

        from portllm_edge.porting.load import default_device

        device = params.setdefault("device", None) or default_device()
        params["device"] = device
        on_cuda = device.split(":")[0] == "cuda"  # "cuda" or "cuda:N" (the planner's GPU)

        context = None
        if on_cuda:
            torch.cuda.init()
            torch.cuda.set_device(torch.device(device))
            free, total = torch.cuda.mem_get_info()
            context = int(total - free)
            torch.cuda.reset_peak_memory_stats()
        before = read_memory(children=False)
        baseline = None if before is None else before.anon_bytes + (before.mapped_weight_bytes or 0)
        phases: dict[str, float] = {}
        start = time.perf_counter()
        with PeakSampler() as sampled:
            details = JOBS[job](params, phases, announce_to_parent)
        wall = time.perf_counter() - start
        details["peak_anon_rss_bytes"] = sampled.anon_peak or None
        details["mapped_weight_bytes_at_peak"] = sampled.mapped_at_peak if sampled.peak else None
        details["vmhwm_bytes"] = peak_rss_bytes()
        if on_cuda:
            peak = int(torch.cuda.max_memory_reserved()) + int(context or 0)
            metric = "cuda_max_reserved_plus_context"
        elif sampled.peak:
            peak, metric = sampled.peak, HEADLINE_METRIC
        else:  # no /proc (not Linux): the whole-process high-water mark, labelled as such
            peak, metric = peak_rss_bytes(), "peak_rss"
        result = {
            "job": job,
            "device": device,
            "metric": metric,
            "peak_bytes": peak,
            "baseline_bytes": baseline,
            "steady_bytes": _rss(),
            "cuda_context_bytes": context,
            "nvml_process_bytes": _nvml_process_bytes() if on_cuda else None,
            "wall_seconds": wall,
            "phases": phases,
            "details": details,
        }
    except Exception as exc:  # reported to the parent, which re-raises it (see measure_job)
        result = {
            "error": f"{type(exc).__name__}: {getattr(exc, 'message', str(exc))[:300]}",
            "error_type": type(exc).__name__,
            "message": getattr(exc, "message", None),
            "hint": getattr(exc, "hint", None),
        }
    print("PORTLLM_MEASURE_RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
