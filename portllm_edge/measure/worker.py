"""Subprocess entry point for :func:`portllm_edge.measure.measure_job`.

``python -m portllm_edge.measure.worker JOB PARAMS_JSON`` runs one job and prints one
line ``PORTLLM_MEASURE_RESULT {json}`` (a MeasureResult, or ``{"error": ...}``).

Each phase start is printed as ``PORTLLM_MEASURE_PHASE <name>`` for the parent's progress.

Jobs:

* ``port``: load the base at ``precision``, attach the patch unmerged (verified), and score
  the evaluation examples when ``eval_data`` is given -- the measured part of a port.
* ``lora_finetune``: load the base at ``dtype`` (or NF4 for QLoRA), add fresh LoRA
  layers and take ``steps`` AdamW steps on ``train_pairs``.
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


def _task_data(p: dict[str, Any], key: str, limit_key: str) -> Any:
    from portllm_edge.evaluation.tasks import LoadOptions, load_task

    opts = LoadOptions(template=p.get("template"), verbalizers=p.get("verbalizers"))
    return load_task(p["task"], p[key], limit=p.get(limit_key), seed=p.get("seed", 0), options=opts)


Announce = Callable[[str], None]
"""announce(phase): tells whoever runs the job that a phase starts."""


def announce_to_parent(name: str) -> None:
    """The worker's :data:`Announce`: one ``PORTLLM_MEASURE_PHASE <name>`` line on stdout."""
    print(PHASE_PREFIX + name, flush=True)


def _phase(name: str | None, phases: dict[str, float], marks: dict[str, float], announce: Announce) -> None:
    """Close the running phase's timer and start ``name``'s (None: just close), announcing it."""
    now = time.perf_counter()
    for last, started in marks.items():
        phases[last] = now - started
    marks.clear()
    if name is not None:
        marks[name] = now
        announce(name)


def run_port_job(p: dict[str, Any], phases: dict[str, float], announce: Announce) -> dict[str, Any]:
    """The measured part of a port: load the base, attach the patch (verified), evaluate if asked.

    Args:
        p: ``base`` (folder), ``adapter`` (folder, already checked and rewritten), ``precision``,
            ``device``; optional ``offload`` (:meth:`Offload.to_dict`), ``task``/``eval_data``/``limit``/``seed``/``template``/``verbalizers``/``batch_size``.
        phases: filled with the wall time of each phase, seconds.
        announce: called as each phase (load, attach, evaluate) starts.

    Returns:
        JSON-ready details: precision, compute_dtype, quantization, device, attach (an
        ``AttachReport`` as a dict), evaluation (dict or None).

    Raises:
        BaseModelError, PortingError, DataError: from the load, the attach check and the evaluation.
    """
    from dataclasses import asdict

    from portllm_edge.porting.attach import attach_patch
    from portllm_edge.porting.load import load_base_model

    marks: dict[str, float] = {}
    _phase("load", phases, marks, announce)
    from portllm_edge.porting.offload import Offload

    offload = Offload.from_dict(p["offload"]) if p.get("offload") else None
    loaded = load_base_model(p["base"], p.get("precision", "nf4"), device=p.get("device"), offload=offload)
    _phase("attach", phases, marks, announce)
    ported = attach_patch(loaded.model, loaded.tokenizer, p["adapter"])
    details: dict[str, Any] = {
        "precision": loaded.precision,
        "compute_dtype": loaded.compute_dtype,
        "quantization": loaded.quantization,
        "device": loaded.device,
        "attach": asdict(ported.report),
        "evaluation": None,
    }
    if p.get("eval_data"):
        from portllm_edge.evaluation.scoring import evaluate

        data = _task_data(p, "eval_data", "limit")
        _phase("evaluate", phases, marks, announce)
        res = evaluate(ported.model, loaded.tokenizer, data, batch_size=p.get("batch_size", 8))
        details["evaluation"] = {
            "task": res.task,
            "n": res.n,
            "accuracy": res.accuracy,
            "ci_low": res.ci_low,
            "ci_high": res.ci_high,
            "f1": res.f1,
            "tokens_per_s": res.tokens_per_s,
        }
        details.update(accuracy=res.accuracy, examples=res.n, tokens_per_s=res.tokens_per_s)
    _phase(None, phases, marks, announce)
    return details


def _job_lora_finetune(p: dict[str, Any], phases: dict[str, float], announce: Announce) -> dict[str, Any]:
    from portllm_edge.evaluation.tasks import training_split
    from portllm_edge.porting.load import load_base_model
    from portllm_edge.training.lora import LoraHyperparams, train_lora

    announce("load")
    t = time.perf_counter()
    quantized = p.get("qlora", False)
    loaded = load_base_model(
        p["base"], "nf4" if quantized else p.get("dtype", "bf16"), device=p.get("device")
    )
    phases["load"] = time.perf_counter() - t
    hp = LoraHyperparams(
        r=p.get("r", 8),
        lora_alpha=p.get("lora_alpha", 16),
        target_modules=tuple(p.get("target_modules", ("q_proj", "k_proj", "v_proj", "o_proj"))),
        max_steps=p.get("steps", 4),
        batch_size=p.get("batch_size", 8),
        max_length=p.get("max_length", 256),
        learning_rate=p.get("learning_rate", 2e-4),
        lora_dropout=0.0,
    )
    pairs = [training_split(e) for e in _task_data(p, "train_data", "train_limit").examples]
    import tempfile

    announce("train")
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        res = train_lora(loaded.model, loaded.tokenizer, pairs, hp, tmp, quantized=quantized)
    phases["train"] = time.perf_counter() - t
    return {
        "dtype": "nf4" if quantized else p.get("dtype", "bf16"),
        "steps": res.steps,
        "final_loss": res.losses[-1],
        "tokens_per_s": res.tokens / res.seconds if res.seconds else None,
    }


JOBS: dict[str, Callable[[dict[str, Any], dict[str, float], Announce], dict[str, Any]]] = {
    "port": run_port_job,
    "lora_finetune": _job_lora_finetune,
}


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
