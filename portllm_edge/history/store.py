"""Run history: every train, port, eval, compare and bench run, in one local SQLite file.

Why this module exists: PortLLM's claims (accuracy kept, memory saved) are only as
good as the record of how each number was made. Each run is stored with its inputs,
the versions of the libraries that made it, the hardware, and its results, so that
``portllm-edge runs list/show`` and ``portllm-edge report`` can show them later.

The database is ``paths.runs_db()``. Writes happen in one transaction each, in WAL
mode with a busy timeout, so a crash leaves either the whole run or none of it, and
the CLI and the TUI can read while a job writes. Values are stored as JSON text.

It must not import torch or any UI code, and must not probe the GPU (callers pass the
hardware record they already have).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import platform
import sqlite3
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from portllm_edge import paths
from portllm_edge.errors import ConfigError, StoreError

RunKind = Literal["train", "port", "eval", "compare", "bench", "update", "fleet", "forecast"]
RUN_KINDS: tuple[str, ...] = get_args(RunKind)
RunStatus = Literal["ok", "failed", "error", "running", "interrupted"]
RUN_STATUSES: tuple[str, ...] = get_args(RunStatus)

SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 10.0
"""How long a writer waits for another writer's lock, in seconds."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    status TEXT NOT NULL,
    inputs TEXT NOT NULL,
    versions TEXT NOT NULL,
    hardware TEXT NOT NULL,
    results TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_kind ON runs(kind, seq);
"""

_PACKAGES = ("portllm-edge", "torch", "transformers", "peft", "bitsandbytes", "safetensors", "accelerate")


@dataclass(frozen=True)
class RunRecord:
    """One stored run.

    Attributes:
        id: ``<kind>-<UTC time>-<8 hex>`` (``eval-20250301T120000-1a2b3c4d``), sortable by time;
            ``runs show`` also takes a unique prefix or the 8-hex suffix.
        kind: ``train``, ``port``, ``eval``, ``compare``, ``bench``, ``update``, ``fleet`` or ``forecast``.
        started_at: ISO 8601 UTC time the run started.
        finished_at: ISO 8601 UTC time it finished, or ``None`` while running.
        status: ``ok``, ``failed``/``error``, ``running`` or ``interrupted``.
        inputs: What the run was asked to do (base, patch, task, data path, options).
        versions: Library versions (``{"torch": "2.13.0", ...}``) and Python.
        hardware: Host and accelerator description.
        results: What it measured (for ``eval``: an ``EvalResult.to_dict()``).
    """

    id: str
    kind: str
    started_at: str
    finished_at: str | None
    status: str
    inputs: dict[str, Any]
    versions: dict[str, Any]
    hardware: dict[str, Any]
    results: dict[str, Any]

    @property
    def seconds(self) -> float | None:
        """Wall time from start to finish, in seconds, or ``None`` while running."""
        if self.finished_at is None:
            return None
        start = _dt.datetime.fromisoformat(self.started_at)
        end = _dt.datetime.fromisoformat(self.finished_at)
        return (end - start).total_seconds()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return dataclasses.asdict(self)


def utc_now() -> str:
    """The current UTC time as ISO 8601 with microseconds (``2025-03-01T12:00:00.123456+00:00``)."""
    return _dt.datetime.now(_dt.UTC).isoformat()


def _json_default(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if isinstance(obj, (Path, os.PathLike)):
        return os.fspath(obj)
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, (_dt.datetime, _dt.date)):
        return obj.isoformat()
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    return str(obj)


def _dumps(value: Any, field: str) -> str:
    if value is None:
        value = {}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    elif hasattr(value, "to_dict"):
        value = value.to_dict()
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"run `{field}` must be a mapping, got {type(value).__name__}", hint=f"Pass `{field}` as a dict."
        )
    return json.dumps(value, default=_json_default, sort_keys=True, allow_nan=True)


def collect_versions() -> dict[str, str | None]:
    """Versions of Python and the libraries that shape results, from package metadata (imports nothing)."""
    from importlib import metadata

    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def collect_host() -> dict[str, Any]:
    """A cheap host description: OS, machine, CPU count and total RAM (bytes). No GPU probing."""
    info: dict[str, Any] = {
        "system": platform.system(),
        "release": platform.release(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    try:
        import psutil

        info["ram_total_bytes"] = int(psutil.virtual_memory().total)
    except Exception:  # psutil missing or unsupported platform: leave the field out
        pass
    return info


def _connect(db: Path | None = None) -> sqlite3.Connection:
    path = Path(db) if db is not None else paths.runs_db()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(
            f"cannot open the run history {path}: {exc}",
            hint="Check that the data folder is writable (or pass --home).",
        ) from exc
    try:
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"run history {path} has schema version {version}; this portllm-edge reads up to {SCHEMA_VERSION}",
                hint="Upgrade portllm-edge, or point --home at another data folder.",
            )
        if version < SCHEMA_VERSION:
            with _transaction(conn):
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)  # idempotent CREATE ... IF NOT EXISTS
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StoreError(
            f"run history {path} is not a readable SQLite database ({exc})",
            hint="Move the file aside; a new history will be created.",
        ) from exc
    except BaseException:
        conn.close()
        raise
    return conn


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, or ``ROLLBACK`` on any exception."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


@contextmanager
def _open(db: Path | None = None) -> Iterator[sqlite3.Connection]:
    conn = _connect(db)
    try:
        yield conn
    finally:
        conn.close()


def _check_kind(kind: str) -> None:
    if kind not in RUN_KINDS:
        raise ConfigError(f"unknown run kind `{kind}`", hint=f"Use one of {', '.join(RUN_KINDS)}.")


def _check_status(status: str) -> None:
    if status not in RUN_STATUSES:
        raise ConfigError(f"unknown run status `{status}`", hint=f"Use one of {', '.join(RUN_STATUSES)}.")


def new_run_id(kind: str) -> str:
    """``<kind>-<UTC timestamp>-<8 hex>``: unique, sortable by time, readable in a listing."""
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%S")
    return f"{kind}-{stamp}-{uuid.uuid4().hex[:8]}"


def record_run(
    kind: str,
    inputs: Mapping[str, Any] | Any,
    results: Mapping[str, Any] | Any,
    *,
    versions: Mapping[str, Any] | None = None,
    hardware: Mapping[str, Any] | None = None,
    status: str = "ok",
    run_id: str | None = None,
    started_at: str | None = None,
    finished_at: str | None = None,
    db: Path | None = None,
) -> str:
    """Store a finished run in one transaction and return its id.

    Args:
        kind: ``train``, ``port``, ``eval``, ``compare``, ``bench``, ``update``, ``fleet`` or ``forecast``.
        inputs: What the run was asked to do (dict, dataclass or pydantic model).
        results: What it measured (dict, dataclass with ``to_dict``, or pydantic model).
        versions: Library versions; default :func:`collect_versions`.
        hardware: Hardware record; default :func:`collect_host`.
        status: ``ok``, ``failed``, ``error``, ``running`` or ``interrupted``.
        run_id: Reuse an id (e.g. the one of a JSON record); default :func:`new_run_id`.
        started_at: ISO 8601 start time; default now.
        finished_at: ISO 8601 end time; default now (``None`` kept for ``running``).
        db: Database file; default ``paths.runs_db()``.

    Returns:
        The run's id.

    Raises:
        ConfigError: Unknown kind or status, or a value that is not a mapping.
        StoreError: The id exists already, or the database can't be opened or written.
    """
    _check_kind(kind)
    _check_status(status)
    now = utc_now()
    rid = run_id or new_run_id(kind)
    row = (
        rid,
        kind,
        started_at or now,
        finished_at if (finished_at is not None or status == "running") else now,
        status,
        _dumps(inputs, "inputs"),
        _dumps(versions if versions is not None else collect_versions(), "versions"),
        _dumps(hardware if hardware is not None else collect_host(), "hardware"),
        _dumps(results, "results"),
    )
    try:
        with _open(db) as conn, _transaction(conn):
            conn.execute(
                "INSERT INTO runs (id, kind, started_at, finished_at, status, inputs, versions, hardware, results) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
    except sqlite3.IntegrityError as exc:
        raise StoreError(
            f"a run with id {rid} is already in the run history",
            hint="Pass a new run id, or none to get one.",
        ) from exc
    except sqlite3.Error as exc:
        raise StoreError(
            f"could not write to the run history {db or paths.runs_db()}: {exc}",
            hint="Check free disk space and that no other program holds the file.",
        ) from exc
    return rid


def start_run(
    kind: str,
    inputs: Mapping[str, Any] | Any,
    *,
    hardware: Mapping[str, Any] | None = None,
    db: Path | None = None,
) -> str:
    """Store a run with status ``running`` (finish it with :func:`finish_run`); returns its id.

    A process killed mid-run leaves the row as ``running``, which ``runs list`` shows.
    """
    return record_run(kind, inputs, {}, status="running", hardware=hardware, db=db)


def finish_run(
    run_id: str,
    results: Mapping[str, Any] | Any,
    *,
    status: str = "ok",
    db: Path | None = None,
    inputs: Mapping[str, Any] | Any | None = None,
) -> None:
    """Set a running run's results, status and finish time (and, when given, its inputs), in one transaction.

    ``inputs`` replaces the inputs stored at the start, for facts learned during the run
    (the concrete precision ``auto`` chose, the resolved base id).

    Raises:
        StoreError: No run has this id.
    """
    _check_status(status)
    payload = _dumps(results, "results")
    sets, args = "results = ?, status = ?, finished_at = ?", [payload, status, utc_now()]
    if inputs is not None:
        sets, args = sets + ", inputs = ?", [*args, _dumps(inputs, "inputs")]
    with _open(db) as conn, _transaction(conn):
        cur = conn.execute(f"UPDATE runs SET {sets} WHERE id = ?", (*args, str(run_id)))
        if cur.rowcount == 0:
            raise StoreError(
                f"no run with id {run_id} in the run history", hint="List runs with `portllm-edge runs list`."
            )


class RunCancelled(Exception):
    """Raised by a caller's progress callback to stop a run (the app's Cancel); recorded as ``interrupted``."""


class RunTracker:
    """Handle yielded by :func:`tracking`: set ``results`` before the block ends.

    Attributes:
        id: the run's id (known from the start, so lineage entries can name it).
        results: what the run measured; stored at the end, also when the run fails.
        inputs: when set, replaces the inputs stored at the start (e.g. with the concrete precision).
    """

    def __init__(self, run_id: str) -> None:
        self.id = run_id
        self.results: dict[str, Any] = {}
        self.inputs: Mapping[str, Any] | Any | None = None


def _failure(exc: BaseException) -> dict[str, Any]:
    """``{"error": one line, "hint": fix or None, "error_type": class name}`` for a failed run's record."""
    one_line = getattr(exc, "one_line", None)
    return {
        "error": one_line() if callable(one_line) else f"{type(exc).__name__}: {exc}",
        "hint": getattr(exc, "hint", None),
        "error_type": type(exc).__name__,
    }


def _finish_quietly(tracker: RunTracker, results: dict[str, Any], status: str, db: Path | None) -> None:
    """Finish a run while another exception is on its way up: a history error must not replace it."""
    import logging

    run_id = tracker.id
    try:
        finish_run(run_id, results, status=status, db=db, inputs=tracker.inputs)
    except (StoreError, ConfigError) as exc:
        logging.getLogger("portllm_edge").warning("run %s: could not record its end: %s", run_id, exc)


@contextmanager
def tracking(
    kind: str,
    inputs: Mapping[str, Any] | Any,
    *,
    hardware: Mapping[str, Any] | None = None,
    db: Path | None = None,
) -> Iterator[RunTracker]:
    """Record a run around a block -- the one record path of every run kind.

    The row is written as ``running`` at entry, then finished as ``ok``; ``failed`` with the
    error's message and hint for an expected error (:class:`~portllm_edge.errors.PortllmError`);
    ``interrupted`` for ``KeyboardInterrupt`` or :class:`RunCancelled`; ``error`` for anything
    else (a bug). The exception is re-raised in every case.

    Example::

        with tracking("eval", {"task": "sst2"}) as run:
            run.results = evaluate(...).to_dict()

    Raises:
        ConfigError: unknown ``kind``.
        StoreError: the history cannot be written at entry.
    """
    from portllm_edge.errors import PortllmError

    tracker = RunTracker(start_run(kind, inputs, hardware=hardware, db=db))
    try:
        yield tracker
    except (KeyboardInterrupt, RunCancelled) as exc:
        reason = str(exc) or "interrupted by the user"
        _finish_quietly(tracker, {**tracker.results, "error": reason}, "interrupted", db)
        raise
    except PortllmError as exc:
        _finish_quietly(tracker, {**tracker.results, **_failure(exc)}, "failed", db)
        raise
    except BaseException as exc:
        _finish_quietly(tracker, {**tracker.results, **_failure(exc)}, "error", db)
        raise
    finish_run(tracker.id, tracker.results, status="ok", db=db, inputs=tracker.inputs)


def _row_to_record(row: sqlite3.Row) -> RunRecord:
    return RunRecord(
        id=str(row["id"]),
        kind=row["kind"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        status=row["status"],
        inputs=json.loads(row["inputs"]),
        versions=json.loads(row["versions"]),
        hardware=json.loads(row["hardware"]),
        results=json.loads(row["results"]),
    )


def list_runs(kind: str | None = None, limit: int = 50, *, db: Path | None = None) -> list[RunRecord]:
    """The most recent runs first, optionally of one kind.

    Args:
        kind: Only runs of this kind, or ``None`` for all.
        limit: At most this many (>= 1).
        db: Database file; default ``paths.runs_db()``.

    Raises:
        ConfigError: Unknown kind or ``limit < 1``.
    """
    if kind is not None:
        _check_kind(kind)
    if limit < 1:
        raise ConfigError(f"`limit` must be at least 1, got {limit}", hint="Pass --limit 1 or more.")
    path = Path(db) if db is not None else paths.runs_db()
    if not path.exists():
        return []
    with _open(db) as conn:
        if kind is None:
            rows = conn.execute("SELECT * FROM runs ORDER BY seq DESC LIMIT ?", (limit,)).fetchall()
        else:
            rows = conn.execute(
                "SELECT * FROM runs WHERE kind = ? ORDER BY seq DESC LIMIT ?", (kind, limit)
            ).fetchall()
    return [_row_to_record(r) for r in rows]


def get_run(run_id: str, *, db: Path | None = None) -> RunRecord:
    """The run with id ``run_id``, or the one run whose id starts or ends with it.

    ``eval-20250301T120000-1a2b3c4d``, ``eval-20250301T12`` (unique prefix) and
    ``1a2b3c4d`` (the random suffix) all find the same run.

    Raises:
        StoreError: No such run, or the abbreviation matches several runs.
    """
    key = str(run_id).strip()
    path = Path(db) if db is not None else paths.runs_db()
    rows: list[sqlite3.Row] = []
    if key and path.exists():
        with _open(db) as conn:
            rows = conn.execute("SELECT * FROM runs WHERE id = ?", (key,)).fetchall()
            if not rows:
                pattern = key.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                rows = conn.execute(
                    "SELECT * FROM runs WHERE id LIKE ? ESCAPE '\\' OR id LIKE ? ESCAPE '\\' ORDER BY seq",
                    (pattern + "%", "%-" + pattern),
                ).fetchall()
    if not rows:
        raise StoreError(
            f"no run with id {key!r} in the run history {path}",
            hint="List runs with `portllm-edge runs list`.",
        )
    if len(rows) > 1:
        ids = ", ".join(r["id"] for r in rows[:5])
        raise StoreError(f"run id {key!r} matches {len(rows)} runs ({ids})", hint="Type more of the id.")
    return _row_to_record(rows[0])
