"""Run history: every train, port, eval, compare and bench run in a local SQLite database.

Public API: :func:`record_run`, :func:`start_run` / :func:`finish_run`, :func:`tracking`,
:func:`list_runs`, :func:`get_run`, :class:`RunRecord`.
"""

from __future__ import annotations

from portllm_edge.history.store import (
    RUN_KINDS,
    RunCancelled,
    RunRecord,
    collect_host,
    collect_versions,
    finish_run,
    get_run,
    list_runs,
    new_run_id,
    record_run,
    start_run,
    tracking,
)

__all__ = [
    "RUN_KINDS",
    "RunCancelled",
    "RunRecord",
    "collect_host",
    "collect_versions",
    "finish_run",
    "get_run",
    "list_runs",
    "new_run_id",
    "record_run",
    "start_run",
    "tracking",
]
