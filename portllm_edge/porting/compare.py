"""The PortLLM comparison for one task: the paper's table, on the user's data and hardware.

Rows (PortLLM, Khan et al., ICLR 2025, Tables 1-3):

1. ``new base zero-shot``: the updated base alone;
2. ``old base + patch``: where the patch was trained;
3. ``new base + ported patch``: the patch applied unchanged, training-free;
4. ``new base + own LoRA``: the baseline, a LoRA fine-tuned on the new base with the same
   hyperparameters (optional: it needs the training data).

All rows are evaluated at the same precision (NF4 by default) on the same seeded
examples, so differences come from the weights alone. This module holds the table's
types; :func:`portllm_edge.workflow.compare` computes it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
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

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CompareResult:
        """Inverse of :meth:`to_dict` (``recovered_gain`` and ``paired`` are recomputed)."""
        rows = [CompareRow(**{**r, "correct": tuple(r.get("correct") or ())}) for r in d["rows"]]
        return cls(
            d["task"], d["data"], d["limit"], d["seed"], rows, d.get("run_id"), dict(d.get("extras") or {})
        )
