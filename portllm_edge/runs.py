"""Record a run (train, port, eval, compare, bench) as JSON and in the run history.

Every record lands in ``<home>/runs/<run_id>.json`` (atomic write) and, when the
history database is available, in ``<home>/runs.sqlite`` (see
:mod:`portllm_edge.history`). Records carry inputs, results, library versions and
a hardware summary, so that a number in a report can be traced to how it was made.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from portllm_edge import paths
from portllm_edge.fsutil import atomic_write_json
from portllm_edge.versions import library_versions


def _hardware_summary() -> dict[str, Any]:
    try:
        from portllm_edge.hardware import probe  # type: ignore[attr-defined]

        report = probe()
        to_dict = getattr(report, "to_dict", None)
        return to_dict() if callable(to_dict) else {"probe": str(report)}
    except Exception:
        import os
        import platform

        return {"machine": platform.machine(), "cpus": os.cpu_count()}


def _started_from_id(run_id: str) -> str | None:
    """The UTC start time encoded in a :func:`new_run_id` id (``<kind>-YYYYmmddTHHMMSS-<hex>``), or None."""
    try:
        stamp = run_id.rsplit("-", 2)[-2]
        return datetime.strptime(stamp, "%Y%m%dT%H%M%S").replace(tzinfo=UTC).isoformat()
    except (IndexError, ValueError):
        return None


def new_run_id(kind: str) -> str:
    """``<kind>-<UTC timestamp>-<8 hex>``, sortable by time."""
    return f"{kind}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"


def record_run(
    kind: str,
    inputs: dict[str, Any],
    results: dict[str, Any],
    *,
    status: str = "ok",
    run_id: str | None = None,
    started_at: str | None = None,
) -> str:
    """Store a run record; returns its id.

    Args:
        kind: train, port, eval, compare, bench or update.
        inputs: what the run was asked to do (JSON-serializable).
        results: what it measured (JSON-serializable; times in seconds, memory in bytes).
        status: "ok" or "failed".
        run_id: reuse an id made with :func:`new_run_id` (default: a new one).
        started_at: ISO 8601 start time (default: parsed from a :func:`new_run_id` id, else now).
    """
    run_id = run_id or new_run_id(kind)
    if started_at is None:
        started_at = _started_from_id(run_id)
    versions = library_versions()
    hardware = _hardware_summary()
    record = {
        "id": run_id,
        "kind": kind,
        "status": status,
        "started_at": started_at,
        "finished_at": datetime.now(UTC).isoformat(),
        "inputs": inputs,
        "results": results,
        "versions": versions,
        "hardware": hardware,
    }
    atomic_write_json(paths.runs_dir() / f"{run_id}.json", record)
    try:
        from portllm_edge.history import record_run as history_record
    except ImportError:
        return run_id
    from portllm_edge.errors import PortllmError

    try:
        history_record(
            kind,
            inputs,
            results,
            versions=versions,
            hardware=hardware,
            status=status,
            run_id=run_id,
            started_at=started_at,
        )
    except PortllmError as exc:  # the JSON record above is complete; the index is a convenience
        import logging

        logging.getLogger("portllm_edge").warning(
            "run %s not added to the run history: %s", run_id, exc.message
        )
    return run_id
