"""The PortLLM table for one task (see :mod:`portllm_edge.porting.compare` for its rows).

resolve every base and patch -> read the task file -> preflight (and rewrite) each patch
against the base it is attached to -> then, row by row: load -> attach -> score -> record.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from portllm_edge.porting.compare import (
    ROW_BASELINE,
    ROW_OLD_PATCH,
    ROW_PORTED,
    ROW_ZERO_SHOT,
    CompareResult,
    CompareRow,
)
from portllm_edge.workflow.types import EvalSpec

if TYPE_CHECKING:
    from portllm_edge.models.refs import ResolvedBase
    from portllm_edge.workflow.steps import CheckedPatch


@dataclass(frozen=True)
class CompareRequest:
    """What a comparison was asked to do (the run record's inputs). See :func:`compare`."""

    patch: str
    old: str
    new: str
    spec: EvalSpec
    precision: str = "auto"
    baseline: str | None = None


@dataclass(frozen=True)
class _Row:
    config: str
    base: ResolvedBase
    patch: CheckedPatch | None


def _plan(req: CompareRequest, work: Path) -> list[_Row]:
    """Resolve and preflight every row's base and patch (no weights loaded)."""
    from portllm_edge.models.refs import resolve_base
    from portllm_edge.workflow.resolve import resolve_patch_ref
    from portllm_edge.workflow.steps import checked_patch

    old, new = resolve_base(req.old), resolve_base(req.new)
    patch = resolve_patch_ref(req.patch)
    rows = [
        _Row(ROW_ZERO_SHOT, new, None),
        _Row(ROW_OLD_PATCH, old, checked_patch(patch, old, None, work / "old")),
        _Row(ROW_PORTED, new, checked_patch(patch, new, old, work / "ported")),
    ]
    if req.baseline is not None:
        own = checked_patch(resolve_patch_ref(req.baseline), new, None, work / "baseline")
        rows.append(_Row(ROW_BASELINE, new, own))
    return rows


def _score_row(row: _Row, data: Any, req: CompareRequest) -> CompareRow:
    from portllm_edge.evaluation.scoring import evaluate as score
    from portllm_edge.workflow.steps import load_configuration

    start = time.perf_counter()
    config = load_configuration(row.base, req.precision, row.patch.attach_dir if row.patch else None)
    res = score(config.model, config.tokenizer, data, batch_size=req.spec.batch_size, keep_predictions=True)
    return CompareRow(
        config=row.config,
        base_id=config.base_id,
        patch=row.patch.patch.ref if row.patch else None,
        precision=config.precision,
        accuracy=res.accuracy,
        ci_low=res.ci_low,
        ci_high=res.ci_high,
        f1=res.f1,
        n=res.n,
        seconds=time.perf_counter() - start,
        correct=tuple(p.correct for p in res.predictions or ()),
    )


def _reusable(known: CompareRow, row: _Row, precision: str, n: int) -> bool:
    """A row scored earlier is reused only for the same base, precision and number of examples, verdicts kept."""
    return len(known.correct) == n and known.precision == precision and known.base_id == row.base.model_id


def _lineage_of(base_dir: Path) -> dict[str, Any] | None:
    """``{"root": v1 folder, "version": "v3", "versions": [...]}`` for a version of an update chain, else None."""
    from portllm_edge.training.update import read_lineage

    found = read_lineage(base_dir)
    if found is None:
        return None
    version, lineage = found
    return {"root": lineage[0].path, "version": version, "versions": [v.version for v in lineage]}


def compare(
    patch: str,
    *,
    old: str,
    new: str,
    spec: EvalSpec,
    precision: str = "auto",
    baseline: str | None = None,
    on_row: Callable[[str], None] | None = None,
    record: bool = True,
    reuse_rows: Mapping[str, CompareRow] | None = None,
) -> CompareResult:
    """Produce the PortLLM table for one task.

    Args:
        patch: the patch trained on ``old`` (store name or folder).
        old, new: base references.
        spec: the evaluation examples (task, file, seeded subsample, template, batch size).
        precision: load precision of every row: auto, nf4, int8, bf16 or fp32. ``auto`` is the
            planner's choice for porting onto ``new`` (:func:`portllm_edge.planning.decide_precision`,
            as for ``port``); each row's ``precision`` holds the concrete one.
        baseline: a patch LoRA-fine-tuned on ``new`` (store name or folder); omitted row when None.
        on_row: called with each row's name as it starts.
        record: store the result as a ``compare`` run (also when it fails).
        reuse_rows: rows scored earlier on the same ``spec`` and precision, by config name
            (``old base + patch`` is the same row for every version of a lineage); not scored again.

    When ``new`` is a version of an update chain (``simulate-update --chain``), the result's
    ``extras["lineage"]`` names the chain's root and the version, so successive ports of the
    patch are tracked per lineage in the history (:func:`portllm_edge.history.health.patch_health`).

    Raises:
        DataError, StoreError, BaseModelError, CompatibilityError -- before any load; then
        errors of loading, the attach check and evaluation (PortllmError subclasses).
    """
    from portllm_edge.workflow import checks
    from portllm_edge.workflow.steps import maybe_recorded

    req = CompareRequest(patch, old, new, spec, precision, baseline)
    with (
        maybe_recorded("compare", req, record) as run,
        tempfile.TemporaryDirectory(prefix="portllm-cmp-") as tmp,
    ):
        data = checks.check_eval_spec(spec)
        rows = _plan(req, Path(tmp))
        precision = checks.check_precision(precision, None, rows[0].base)  # rows[0]: the new base
        req = replace(req, precision=precision)
        scored = []
        for row in rows:
            if on_row is not None:
                on_row(row.config)
            known = (reuse_rows or {}).get(row.config)
            reuse = known is not None and _reusable(known, row, precision, len(data))
            scored.append(known if known is not None and reuse else _score_row(row, data, req))
        result = CompareResult(
            task=data.task.name, data=str(data.path), limit=spec.limit, seed=spec.seed, rows=scored
        )
        lineage = _lineage_of(rows[0].base.path)
        if lineage is not None:
            result.extras["lineage"] = lineage
        result.run_id = run.id
        run.results = result.to_dict()
    return result
