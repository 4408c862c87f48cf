"""Reports: Markdown, JSON and PNG charts built from recorded runs.

Public API (pure functions over run records; matplotlib and the planner load lazily):

* :func:`build_report` (runs, budget=...) -> :class:`Report`;
* :func:`budget_rows` (model, profiles=...) -> list of :class:`BudgetRow`;
* :func:`with_planner_estimates` (bench run) -> the run with planner estimates per configuration;
* :func:`render_markdown`, :func:`render_json`, :func:`render_charts`, :func:`write_report`;
* :func:`report_runs` (runs, out, machine=...) -> :class:`WrittenReport`: the one path from
  recorded runs to written files, used by the CLI's ``report`` and the app's Runs screen.
"""

from __future__ import annotations

from portllm_edge.reports.assemble import REPORT_KINDS, WrittenReport, report_runs, select_report_runs
from portllm_edge.reports.budget import budget_rows, with_planner_estimates
from portllm_edge.reports.model import (
    BREAKDOWN_KEYS,
    AccuracyRow,
    BudgetCell,
    BudgetRow,
    GainKept,
    MeasuredSaving,
    MemoryPhase,
    Ratio,
    Report,
    build_report,
    describe_run,
    job_label,
    latest_savings,
    task_label,
)
from portllm_edge.reports.render import render_charts, render_json, render_markdown, write_report

__all__ = [
    "BREAKDOWN_KEYS",
    "REPORT_KINDS",
    "AccuracyRow",
    "BudgetCell",
    "BudgetRow",
    "GainKept",
    "MeasuredSaving",
    "MemoryPhase",
    "Ratio",
    "Report",
    "WrittenReport",
    "budget_rows",
    "build_report",
    "describe_run",
    "job_label",
    "latest_savings",
    "render_charts",
    "render_json",
    "render_markdown",
    "report_runs",
    "select_report_runs",
    "task_label",
    "with_planner_estimates",
    "write_report",
]
