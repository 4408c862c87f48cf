"""One way to write a report from recorded runs, for the CLI's ``report`` and the app's "write report".

Why this module exists: the two clients wrote different reports (the app's had no planner
estimates and no budget section: 4 files against the CLI's 6). Both now call
:func:`report_runs`, which picks the budget model, adds the planner's estimates, builds the
report and writes it; the clients only choose the runs and the folder and show the result.

It must not import torch or probe the machine: a caller that wants this machine's row in
the budget passes its :class:`~portllm_edge.planning.Budget`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from portllm_edge.errors import PortllmError
from portllm_edge.reports.model import Report

REPORT_KINDS = ("compare", "eval", "bench", "port", "train")
"""Run kinds a report is built from by default (the CLI's ``report`` and the app's Runs screen)."""

LEFT_OUT_WHY = {
    "update": "it makes a new base version and scores no patch (its weight drift: `portllm-edge runs show ID`)",
    "fleet": "each patch it ported is its own `port` run, which the report includes",
    "forecast": "it predicts a recovered gain and measures none (`check` and `forecast` show it)",
}
"""Why a default report leaves out a run of a kind not in :data:`REPORT_KINDS`."""


def select_report_runs(runs: Sequence[Any]) -> tuple[list[Any], list[str]]:
    """The runs a default report is built from, oldest first, and one line per kind it leaves out.

    Args:
        runs: Run records, newest first (as :func:`portllm_edge.history.list_runs` returns them).

    Returns:
        ``(runs of REPORT_KINDS, oldest first; ["2 update runs left out (ids): why", ...])``. The
        lines go into the report's notes and the clients' output, so no run is dropped silently.
    """
    chosen = [r for r in runs if _kind(r) in REPORT_KINDS]
    chosen.reverse()  # oldest first reads naturally in a report
    left: dict[str, list[str]] = {}
    for r in runs:
        if _kind(r) not in REPORT_KINDS:
            left.setdefault(_kind(r), []).append(str(r.id if hasattr(r, "id") else r.get("id")))
    lines = []
    for kind, ids in left.items():
        why = LEFT_OUT_WHY.get(kind, "a report charts accuracy and measured memory, which it does not record")
        lines.append(f"{len(ids)} {kind} run{'s' if len(ids) > 1 else ''} left out ({', '.join(ids)}): {why}")
    return chosen, lines


def _kind(run: Any) -> str:
    return str(run.kind if hasattr(run, "kind") else run.get("kind"))


@dataclass(frozen=True)
class WrittenReport:
    """What :func:`report_runs` wrote.

    Attributes:
        report: The report.
        paths: Files written: ``report.md``, ``report.json``, then the PNG charts.
        warnings: Sections left out and why (no budget model, no planner estimate for a run).
    """

    report: Report
    paths: list[Path]
    warnings: list[str] = field(default_factory=list)


_PORTING_KINDS = ("port", "fleet", "compare")


def budget_candidates(runs: Sequence[Any]) -> list[str]:
    """Model references the runs name (``new``, ``base``, ...): budget-section candidates.

    The bases ported to come first (the newest porting run's first), then the other runs'
    bases, first seen first: a report on a port sizes the new base, not the old one.
    """
    out: list[str] = []

    def kind_of(r: Any) -> Any:
        return r.kind if hasattr(r, "kind") else r.get("kind")

    porting = [r for r in reversed(runs) if kind_of(r) in _PORTING_KINDS]
    for r in porting + [r for r in runs if kind_of(r) not in _PORTING_KINDS]:
        inputs = r.inputs if hasattr(r, "inputs") else r.get("inputs") or {}
        for key in ("new", "base", "base_path", "base_id"):
            value = inputs.get(key)
            if isinstance(value, str) and value and value not in out:
                out.append(value)
    return out


def model_display_name(ref: str | None) -> str | None:
    """``ref`` as a report names it: the store name for a folder in the local model store, else ``ref``."""
    if not ref:
        return ref
    from portllm_edge import paths

    try:
        rel = Path(ref).expanduser().resolve().relative_to(paths.models_dir().resolve())
    except (ValueError, OSError):
        return ref
    return rel.parts[0] if len(rel.parts) == 1 else ref


def report_runs(
    runs: Sequence[Any],
    out: str | Path,
    *,
    budget: bool = True,
    budget_model: str | None = None,
    hardware: Sequence[str] | None = None,
    machine: Any = None,
    context: int = 2048,
    title: str = "portllm-edge report",
    left_out: Sequence[str] = (),
) -> WrittenReport:
    """Build the report of ``runs`` (oldest first) and write it into ``out``.

    Args:
        runs: ``RunRecord`` objects (or dicts of their fields).
        out: Folder for ``report.md``, ``report.json`` and the charts (created if missing).
        budget: Include the memory-budget section.
        budget_model: Model of the budget section; default the first of the runs' bases that
            the planner can size.
        hardware: Hardware profiles of the budget section; default all.
        machine: This machine's :class:`~portllm_edge.planning.Budget`; its row comes first in
            the budget section and chart. ``None``: profiles only.
        context: Tokens per sequence of the budget estimates.
        title: Heading.
        left_out: Lines naming the runs the caller left out and why (:func:`select_report_runs`);
            they open the report's notes.

    Returns:
        The report, the files written and the warnings.

    Raises:
        PortllmError: ``budget_model`` given and not sizeable; ConfigError: ``out`` is a file,
        unknown hardware profile.
    """
    from portllm_edge.reports.budget import budget_rows, with_planner_estimates
    from portllm_edge.reports.model import build_report
    from portllm_edge.reports.render import write_report

    warnings: list[str] = []
    rows: list[Any] = []
    model_used: str | None = None
    if budget:
        candidates = [budget_model] if budget_model else budget_candidates(runs)
        errors: list[str] = []
        for cand in candidates:
            try:
                rows = budget_rows(cand, profiles=hardware, context=context, machine=machine)
                model_used = cand
                break
            except PortllmError as exc:
                errors.append(exc.message)
                if budget_model:
                    raise
        if not rows and candidates:
            warnings.append(f"no memory-budget section ({errors[-1] if errors else 'no model'})")
    records: list[Any] = []
    for run in runs:
        try:
            records.append(with_planner_estimates(run))
        except PortllmError as exc:
            rid = run.id if hasattr(run, "id") else run.get("id")
            warnings.append(f"no planner estimates for run {rid} ({exc.message})")
            records.append(run)
    report = build_report(records, budget=rows, budget_model=model_display_name(model_used), title=title)
    if left_out:
        from dataclasses import replace

        report = replace(report, notes=(*left_out, *report.notes))
    return WrittenReport(report, write_report(report, out), warnings)
