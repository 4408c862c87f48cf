"""Memory-budget rows for a report: which precision of a model fits each hardware profile, with headroom.

Why this module exists: the report's budget section answers "which card do we need?"
for the model that was ported. The estimates come from the planner
(:func:`portllm_edge.planning.plan.plan_model`) and the cards from the hardware
profiles (:func:`portllm_edge.catalog.loader.load_catalog`); this module only turns
those into :class:`~portllm_edge.reports.model.BudgetRow` records. It is the single
hook between reports and planning: if the planner's API changes, only this file does.

It must not import torch, and must not probe the local GPU (profiles only).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
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
) -> list[BudgetRow]:
    """Plan ``model`` against every hardware profile (or the named ones).

    Args:
        model: Anything :func:`portllm_edge.planning.plan.resolve_model_spec` accepts:
            a model folder, a store name, a profile name, a ``config.json`` dict.
        profiles: Hardware profile names; default every known profile, in name order.
        precisions: Inference precisions to estimate.
        context: Tokens per sequence for the estimate.
        batch: Sequences per batch.
        headroom_fraction: Kept-back fraction of each card; default the planner's.

    Returns:
        One row per profile: estimate, fit and headroom per precision, best precision,
        and whether LoRA/QLoRA fine-tuning fits.

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
    rows: list[BudgetRow] = []
    for name in names:
        profile = catalog.hardware_profile(name)
        budget = budget_from_profile(
            profile, DEFAULT_HEADROOM if headroom_fraction is None else headroom_fraction
        )
        plan = plan_model(spec, budget=budget, context=context, batch=batch, precisions=precs)
        cells = tuple(
            BudgetCell(o.breakdown.precision.value, o.breakdown.total_bytes, o.fits, o.spare_bytes)
            for o in plan.inference
        )
        rows.append(
            BudgetRow(
                profile=profile.name,
                display_name=getattr(profile, "display_name", None) or profile.name,
                total_bytes=budget.total_bytes,
                usable_bytes=budget.usable_bytes,
                cells=cells,
                best=plan.best.value if plan.best is not None else None,
                finetune_fits={_same_label(o.label): o.fits for o in plan.finetune},
            )
        )
    return rows
