"""The PortLLM comparison for one task: the paper's table, on the user's data and hardware.

Rows (PortLLM, Khan et al., ICLR 2025, Tables 1-3):

1. ``new base zero-shot``: the updated base alone;
2. ``old base + patch``: where the patch was trained;
3. ``new base + ported patch``: the patch applied unchanged, training-free;
4. ``new base + own LoRA``: the baseline, a LoRA fine-tuned on the new base with the same
   hyperparameters (optional: it needs the training data).

All rows are evaluated at the same precision (NF4 by default) on the same seeded
examples, so differences come from the weights alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from portllm_edge.evaluation.paired import PortStatistics

ROW_ZERO_SHOT = "new base zero-shot"
ROW_OLD_PATCH = "old base + patch"
ROW_PORTED = "new base + ported patch"
ROW_BASELINE = "new base + own LoRA"


@dataclass(frozen=True)
class CompareRow:
    """One configuration's result.

    Attributes:
        config: one of the ROW_* names.
        base_id: the base model.
        patch: the patch attached (None for zero-shot).
        precision: load precision.
        accuracy, ci_low, ci_high: accuracy and its 95 % Wilson interval.
        f1: binary F1 where the task reports it.
        n: examples scored.
        seconds: wall time of loading + scoring, seconds.
        correct: per-example verdicts in task-data order (for paired statistics); empty when not kept.
    """

    config: str
    base_id: str
    patch: str | None
    precision: str
    accuracy: float
    ci_low: float
    ci_high: float
    f1: float | None
    n: int
    seconds: float
    correct: tuple[bool, ...] = ()


@dataclass
class CompareResult:
    """The table, plus what it was computed on."""

    task: str
    data: str
    limit: int | None
    seed: int
    rows: list[CompareRow]
    run_id: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def row(self, config: str) -> CompareRow | None:
        """The row called ``config``, or None."""
        return next((r for r in self.rows if r.config == config), None)

    def paired(self) -> PortStatistics | None:
        """McNemar tests and paired bootstrap intervals (:func:`~portllm_edge.evaluation.paired.port_statistics`).

        ``None`` unless the zero-shot, old + patch and ported rows kept their per-example verdicts.
        """
        from portllm_edge.evaluation.paired import port_statistics

        z, o, p, b = (self.row(c) for c in (ROW_ZERO_SHOT, ROW_OLD_PATCH, ROW_PORTED, ROW_BASELINE))
        if not (z and o and p and z.correct and o.correct and p.correct):
            return None
        return port_statistics(
            z.correct,
            o.correct,
            p.correct,
            b.correct if b is not None and b.correct else None,
            names=(ROW_PORTED, ROW_OLD_PATCH, ROW_BASELINE),
        )

    def recovered_gain(self) -> float | None:
        """(ported − zero-shot) / (old+patch − zero-shot): the share of the patch's gain that survives the port."""
        z, o, p = self.row(ROW_ZERO_SHOT), self.row(ROW_OLD_PATCH), self.row(ROW_PORTED)
        if not (z and o and p) or o.accuracy == z.accuracy:
            return None
        return (p.accuracy - z.accuracy) / (o.accuracy - z.accuracy)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["recovered_gain"] = self.recovered_gain()
        stats = self.paired()
        d["paired"] = stats.to_dict() if stats is not None else None
        return d


def evaluate_configuration(
    config: str,
    base: str,
    patch: str | None,
    task_data: Any,
    *,
    precision: str,
    batch_size: int = 8,
    old_base: str | None = None,
) -> CompareRow:
    """Load ``base`` at ``precision``, attach ``patch`` (a store name or folder) if any, and score ``task_data``."""
    import tempfile
    import time

    from portllm_edge.evaluation.scoring import evaluate
    from portllm_edge.models import resolve_base
    from portllm_edge.porting.attach import attach_patch
    from portllm_edge.porting.load import load_base_model
    from portllm_edge.porting.port import checked_adapter, resolve_patch

    start = time.perf_counter()
    resolved = resolve_base(base)
    loaded = load_base_model(resolved, precision)
    model = loaded.model
    with tempfile.TemporaryDirectory(prefix="portllm-compare-") as tmp:
        if patch is not None:
            adapter_dir, _ = resolve_patch(patch)
            old = resolve_base(old_base).path if old_base else None
            attach_dir, _report = checked_adapter(adapter_dir, resolved.path, Path(tmp), old_base_dir=old)
            model = attach_patch(model, loaded.tokenizer, attach_dir).model
        res = evaluate(model, loaded.tokenizer, task_data, batch_size=batch_size, keep_predictions=True)
    return CompareRow(
        config=config,
        base_id=resolved.model_id,
        patch=patch,
        precision=loaded.precision,
        accuracy=res.accuracy,
        ci_low=res.ci_low,
        ci_high=res.ci_high,
        f1=res.f1,
        n=res.n,
        seconds=time.perf_counter() - start,
        correct=tuple(p.correct for p in res.predictions or ()),
    )


def compare_patch(
    patch: str,
    *,
    old: str,
    new: str,
    task: str,
    data: str | Path,
    limit: int | None = None,
    seed: int = 0,
    precision: str = "nf4",
    baseline: str | None = None,
    batch_size: int = 8,
    template: str | None = None,
    verbalizers: dict[str, str] | None = None,
    on_row: Callable[[str], None] | None = None,
    record: bool = True,
) -> CompareResult:
    """Produce the PortLLM table for one task.

    Args:
        patch: the patch trained on ``old`` (store name or folder).
        old, new: base references.
        task, data, limit, seed: the evaluation examples (seeded subsample).
        precision: load precision of every row.
        baseline: a patch LoRA-fine-tuned on ``new`` (store name or folder); omitted row when None.
        batch_size: scoring batch size.
        template, verbalizers: for the ``jsonl`` task.
        on_row: called with each row's name as it starts.
        record: store the result as a ``compare`` run.

    Raises:
        Errors of loading, preflight and evaluation (PortllmError subclasses).
    """
    from portllm_edge.evaluation.tasks import LoadOptions, load_task
    from portllm_edge.runs import new_run_id

    run_id = new_run_id("compare")  # at the start, so the record's start time is the run's

    task_data = load_task(
        task, data, limit=limit, seed=seed, options=LoadOptions(template=template, verbalizers=verbalizers)
    )
    plan: list[tuple[str, str, str | None, str | None]] = [
        (ROW_ZERO_SHOT, new, None, None),
        (ROW_OLD_PATCH, old, patch, None),
        (ROW_PORTED, new, patch, old),
    ]
    if baseline is not None:
        plan.append((ROW_BASELINE, new, baseline, None))
    rows = []
    for config, base, p, old_base in plan:
        if on_row is not None:
            on_row(config)
        rows.append(
            evaluate_configuration(
                config, base, p, task_data, precision=precision, batch_size=batch_size, old_base=old_base
            )
        )
    result = CompareResult(
        task=task_data.task.name, data=str(task_data.path), limit=limit, seed=seed, rows=rows
    )
    if record:
        from portllm_edge.runs import record_run

        result.run_id = record_run(
            "compare",
            {
                "patch": patch,
                "old": old,
                "new": new,
                "task": task,
                "data": str(data),
                "limit": limit,
                "seed": seed,
                "precision": precision,
                "baseline": baseline,
            },
            result.to_dict(),
            run_id=run_id,
        )
    return result
