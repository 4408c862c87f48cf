"""Memory-budget rows for a report: which precision of a model fits each hardware profile, with headroom.

Why this module exists: the report's budget section answers "which card do we need?"
for the model that was ported. The estimates come from the planner
(:func:`portllm_edge.planning.plan.plan_model`) and the cards from the hardware
profiles (:func:`portllm_edge.catalog.loader.load_catalog`); this module only turns
those into :class:`~portllm_edge.reports.model.BudgetRow` records. It is the single
hook between reports and planning: if the planner's API changes, only this file does.

It must not import torch, and must not probe the machine itself: a caller that wants
this machine's row passes the :class:`~portllm_edge.planning.Budget` it built from the probe.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from portllm_edge.reports.model import BudgetCell, BudgetRow

DEFAULT_PRECISIONS = ("nf4", "int8", "bf16", "fp32")


def _same_label(label: str) -> str:
    """``LoRA bf16`` and ``LoRA fp16`` (cards without native bf16) share one report column."""
    return label.replace("bf16", "16-bit").replace("fp16", "16-bit")


def budget_rows(
    model: str | Path | Any,
    *,
    profiles: Sequence[str] | None = None,
    precisions: Iterable[str] = DEFAULT_PRECISIONS,
    context: int = 2048,
    batch: int = 1,
    headroom_fraction: float | None = None,
    machine: Any = None,
) -> list[BudgetRow]:
    """Plan ``model`` against this machine (when given) and every hardware profile (or the named ones).

    Args:
        model: Anything :func:`portllm_edge.planning.plan.resolve_model_spec` accepts:
            a model folder, a store name, a profile name, a ``config.json`` dict.
        profiles: Hardware profile names; default every known profile, in name order.
        precisions: Inference precisions to estimate.
        context: Tokens per sequence for the estimate.
        batch: Sequences per batch.
        headroom_fraction: Kept-back fraction of each card; default the planner's.
        machine: This machine's :class:`~portllm_edge.planning.Budget` (built from the probe by
            the caller); its row comes first, marked ``this_machine``.

    Returns:
        One row per profile (this machine first): estimate, fit and headroom per precision,
        best precision, and whether LoRA/QLoRA fine-tuning fits.

    Raises:
        PlanningError: The model can't be sized. ConfigError: Unknown profile.
    """
    from portllm_edge.catalog.loader import load_catalog
    from portllm_edge.planning.budget import DEFAULT_HEADROOM, budget_from_profile
    from portllm_edge.planning.plan import plan_model, resolve_model_spec

    catalog = load_catalog()
    names = list(profiles) if profiles is not None else sorted(catalog.hardware)
    spec = resolve_model_spec(model)
    precs = tuple(precisions)
    budgets: list[tuple[Any, str, str, bool]] = []
    if machine is not None:
        from portllm_edge.hardware.sizes import format_size

        label = f"this machine: {machine.name}, {format_size(machine.total_bytes)}"
        budgets.append((machine, "this-machine", label, True))
    for name in names:
        profile = catalog.hardware_profile(name)
        budget = budget_from_profile(
            profile, DEFAULT_HEADROOM if headroom_fraction is None else headroom_fraction
        )
        display = getattr(profile, "display_name", None) or profile.name
        budgets.append((budget, profile.name, display, False))
    rows: list[BudgetRow] = []
    for budget, key, display, mine in budgets:
        plan = plan_model(spec, budget=budget, context=context, batch=batch, precisions=precs)
        cells = tuple(
            BudgetCell(o.breakdown.precision.value, o.breakdown.total_bytes, o.fits, o.spare_bytes)
            for o in plan.inference
        )
        rows.append(
            BudgetRow(
                profile=key,
                display_name=display,
                total_bytes=budget.total_bytes,
                usable_bytes=budget.usable_bytes,
                cells=cells,
                best=plan.best.value if plan.best is not None else None,
                finetune_fits={_same_label(o.label): o.fits for o in plan.finetune},
                this_machine=mine,
            )
        )
    return rows


DEFAULT_BENCH_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
"""Target modules of the benchmark's LoRA fine-tune when its run does not record them (the worker's default)."""


def _config_estimate(name: str, arch: Any, inputs: Mapping[str, Any], device: str) -> dict[str, Any] | None:
    from portllm_edge.planning.estimate import estimate_inference_peak, estimate_lora_finetune_peak

    seq_len = int(inputs.get("seq_len") or 256)
    batch = int(inputs.get("batch_size") or 8)
    if name.startswith("port_"):
        prec = name.split("_", 1)[1]
        return estimate_inference_peak(arch, prec, seq_len, batch, device=device).to_dict()  # type: ignore[arg-type]
    if name.startswith(("lora_", "qlora_")):
        prec = name.split("_", 1)[1]
        targets = tuple(inputs.get("target_modules") or DEFAULT_BENCH_TARGETS)
        est = estimate_lora_finetune_peak(
            arch,
            prec,
            int(inputs.get("r") or 8),
            targets,
            seq_len,
            batch,
            False,
            device=device,  # type: ignore[arg-type]
        )
        return est.to_dict()
    return None


def with_planner_estimates(run: Mapping[str, Any] | Any) -> dict[str, Any]:
    """A copy of a ``bench`` run record with the planner's estimate added to each configuration.

    Each entry of ``results.configs`` named ``lora_<precision>``, ``qlora_<precision>`` or
    ``port_<precision>`` that has no ``estimate`` gets
    :func:`~portllm_edge.planning.estimate.estimate_lora_finetune_peak` or
    :func:`~portllm_edge.planning.estimate.estimate_inference_peak` for the run's base,
    sequence length, batch size and device, as a ``MemoryBreakdown.to_dict()``. The
    report then shows the estimate beside the measured peak and an estimated breakdown.

    Args:
        run: A ``RunRecord`` or a dict of its fields.

    Returns:
        The run as a dict (unchanged copy when it is not a bench run or has no configs).

    Raises:
        PlanningError: The base can't be sized from its ``config.json``.
    """
    import copy

    data = run.to_dict() if hasattr(run, "to_dict") else dict(run)
    data = copy.deepcopy(data)
    results = data.get("results") or {}
    inputs = data.get("inputs") or {}
    configs = results.get("configs")
    if data.get("kind") != "bench" or not isinstance(configs, list) or not inputs.get("base"):
        return data
    from portllm_edge.planning.plan import resolve_model_spec

    arch = resolve_model_spec(inputs["base"]).arch
    device = "cuda" if str(inputs.get("device") or "cpu").startswith("cuda") else "cpu"
    for cfg in configs:
        if isinstance(cfg, dict) and "estimate" not in cfg and isinstance(cfg.get("name"), str):
            est = _config_estimate(cfg["name"], arch, inputs, device)
            if est is not None:
                cfg["estimate"] = est
    return data
