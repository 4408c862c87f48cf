"""The memory a port saves: its measured peak against a LoRA fine-tune of the same base.

The baseline is a fine-tune *measured* in its own worker process when the run history
has one for the same base (a ``bench`` run, or the demo's), else the planner's
estimate from config.json (:func:`portllm_edge.planning.estimate_lora_finetune_peak`),
labelled as an estimate. Nothing here measures the caller's process.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from portllm_edge.workflow.types import Memory, Saving

if TYPE_CHECKING:
    from portllm_edge.history import RunRecord


def _same_base(run: RunRecord, base_dir: Path) -> bool:
    ref = run.inputs.get("base")
    try:
        return ref is not None and Path(str(ref)).resolve() == base_dir.resolve()
    except OSError:
        return False


def measured_finetune_baseline(base_dir: Path, metric: str) -> tuple[int, str, str] | None:
    """The newest measured LoRA fine-tune peak of ``base_dir`` in ``metric``, from ``bench`` runs.

    Returns:
        ``(peak bytes, config name, run id)``, or None when the history has none.
    """
    from portllm_edge.history import list_runs

    for run in list_runs("bench", limit=200):
        if run.status != "ok" or not _same_base(run, base_dir):
            continue
        for cfg in run.results.get("configs") or ():
            if str(cfg.get("name", "")).startswith("lora_") and cfg.get("metric") == metric:
                return int(cfg["peak_median_bytes"]), str(cfg["name"]), run.id
    return None


def estimated_finetune_baseline(base_dir: Path, r: int, targets: tuple[str, ...], device: str) -> int:
    """The planner's LoRA fine-tune peak for this base, rank and targets (512 tokens, batch 1), bytes.

    Raises:
        PlanningError: the base can't be sized from its config.json.
    """
    from portllm_edge.planning import estimate_lora_finetune_peak, resolve_model_spec

    spec = resolve_model_spec(base_dir)
    return int(estimate_lora_finetune_peak(spec.arch, None, r, targets, device=device).total_bytes)  # type: ignore[arg-type]


def estimated_port_peak(
    base_dir: Path, precision: str, device: str, *, quantized_copy: bool = False
) -> int | None:
    """The planner's estimate of a port's peak at ``precision`` (bytes), or None when it can't size the base.

    ``quantized_copy``: the port's load read the model store's quantized copy (its
    ``quantization["cache"]["hit"]``), so the estimate has no quantizing transient.
    """
    from portllm_edge.errors import PortllmError
    from portllm_edge.planning import estimate_inference_peak, port_peak_bytes, resolve_model_spec

    try:
        spec = resolve_model_spec(base_dir)
        inference = estimate_inference_peak(
            spec.arch,
            precision,
            device=device,  # type: ignore[arg-type]
            quantized_copy=quantized_copy,
        )
        return int(port_peak_bytes(spec, inference))
    except (PortllmError, ValueError):
        return None


def port_saving(
    memory: Memory,
    base_dir: Path,
    r: int,
    targets: tuple[str, ...],
    precision: str,
    *,
    quantized_copy: bool = False,
) -> Saving | None:
    """The port's :class:`Saving` against the best baseline available (see the module docstring).

    ``quantized_copy``: the port's load read the store's quantized copy (see :func:`estimated_port_peak`).
    """
    from portllm_edge.errors import PortllmError

    port_est = estimated_port_peak(base_dir, precision, memory.device, quantized_copy=quantized_copy)
    found = measured_finetune_baseline(base_dir, memory.metric)
    if found is not None:
        from portllm_edge.reports.model import job_label

        peak, name, run_id = found
        label = f"{job_label(name)} measured in run {run_id}"
        return Saving(memory.peak_bytes, peak, "measured", label, memory.metric, run_id, port_est)
    try:
        est = estimated_finetune_baseline(base_dir, r, targets, memory.device)
    except PortllmError:
        return None
    label = f"planner estimate of a LoRA fine-tune (r={r}, 512 tokens, batch 1); measure it with `bench`"
    return Saving(memory.peak_bytes, est, "estimate", label, memory.metric, None, port_est)
