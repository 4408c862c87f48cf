"""Run history: round trip, ordering, filters, crash-safe tracking, concurrent writers, bad files."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap

import pytest

from portllm_edge import paths
from portllm_edge.errors import ConfigError, StoreError
from portllm_edge.evaluation.results import EvalResult, Prediction
from portllm_edge.history import finish_run, get_run, list_runs, record_run, start_run, tracking


def test_round_trip_with_defaults(portllm_home):
    rid = record_run(
        "eval", {"task": "sst2", "data": paths.home() / "dev.tsv", "limit": 5}, {"accuracy": 0.8}
    )
    run = get_run(rid)
    assert run.id == rid and run.kind == "eval" and run.status == "ok"
    assert run.inputs == {"task": "sst2", "data": str(portllm_home / "dev.tsv"), "limit": 5}
    assert run.results == {"accuracy": 0.8}
    assert run.versions["torch"].startswith("2.13.0") and run.versions["python"].count(".") == 2
    assert run.hardware["cpu_count"] >= 1 and run.hardware["ram_total_bytes"] > 0
    assert run.seconds is not None and run.seconds >= 0
    assert paths.runs_db().is_file()
    assert rid.startswith("eval-") and len(rid.rsplit("-", 1)[1]) == 8


def test_abbreviated_ids():
    a = record_run("eval", {}, {}, run_id="eval-20250301T120000-aaaa1111")
    b = record_run("eval", {}, {}, run_id="eval-20250301T130000-bbbb2222")
    assert get_run("aaaa1111").id == a
    assert get_run("eval-20250301T13").id == b
    with pytest.raises(StoreError, match="matches 2 runs"):
        get_run("eval-20250301")
    with pytest.raises(StoreError, match="already in the run history"):
        record_run("eval", {}, {}, run_id=a)
    with pytest.raises(StoreError, match="no run with id"):
        get_run("eval_%")


def test_dataclass_results_are_stored_as_dicts():
    res = EvalResult.from_predictions(
        "mrpc", [Prediction("0", 1, 1, True)], seconds=1.0, tokens=10, positive=1
    )
    rid = record_run("eval", {"task": "mrpc"}, res, versions={"x": "1"}, hardware={"gpu": None})
    back = get_run(rid)
    assert EvalResult.from_dict(back.results) == res
    assert back.versions == {"x": "1"} and back.hardware == {"gpu": None}


def test_list_is_newest_first_and_filters_by_kind():
    ids = [record_run(k, {"i": i}, {}) for i, k in enumerate(["eval", "port", "eval", "bench"])]
    assert [r.id for r in list_runs()] == ids[::-1]
    assert [r.inputs["i"] for r in list_runs(kind="eval")] == [2, 0]
    assert [r.id for r in list_runs(limit=2)] == ids[:1:-1]
    assert list_runs(kind="compare") == []


def test_empty_history_lists_nothing_without_creating_a_file():
    assert list_runs() == []
    assert not paths.runs_db().exists()


def test_unknown_run_and_kind():
    record_run("port", {}, {})
    with pytest.raises(StoreError, match="no run with id '99'") as err:
        get_run("99")
    assert "runs list" in err.value.hint
    with pytest.raises(ConfigError, match="unknown run kind `tune`"):
        record_run("tune", {}, {})
    with pytest.raises(ConfigError, match="must be a mapping"):
        record_run("eval", {}, [1, 2])


def test_start_and_finish():
    rid = start_run("train", {"epochs": 1})
    run = get_run(rid)
    assert run.status == "running" and run.finished_at is None and run.seconds is None
    finish_run(rid, {"loss": 0.5})
    run = get_run(rid)
    assert run.status == "ok" and run.results == {"loss": 0.5} and run.finished_at is not None
    with pytest.raises(StoreError, match="no run with id port-x"):
        finish_run("port-x", {})


def test_tracking_records_errors():
    with tracking("compare", {"task": "rte"}) as run:
        run.results = {"rows": []}
    assert get_run(run.id).status == "ok"
    with pytest.raises(RuntimeError), tracking("bench", {}) as failed:
        failed.results = {"partial": 1}
        raise RuntimeError("out of memory")
    rec = get_run(failed.id)
    assert rec.status == "error"
    assert rec.results == {
        "partial": 1,
        "error": "RuntimeError: out of memory",
        "error_type": "RuntimeError",
        "hint": None,
    }


def test_tracking_records_expected_failures_and_interrupts():
    from portllm_edge.errors import StoreError
    from portllm_edge.history import RunCancelled

    with pytest.raises(StoreError), tracking("port", {"patch": "p"}) as failed:
        raise StoreError("patch store already has 'p@x'.", hint="pass --overwrite")
    rec = get_run(failed.id)
    assert rec.status == "failed"
    assert "already has 'p@x'" in rec.results["error"] and rec.results["hint"] == "pass --overwrite"
    with pytest.raises(KeyboardInterrupt), tracking("train", {}) as stopped:
        raise KeyboardInterrupt
    assert get_run(stopped.id).status == "interrupted"
    with pytest.raises(RunCancelled), tracking("port", {}) as cancelled:
        raise RunCancelled("cancelled before the load phase")
    rec = get_run(cancelled.id)
    assert rec.status == "interrupted" and rec.results["error"] == "cancelled before the load phase"


def test_wal_mode_and_schema_version():
    record_run("eval", {}, {})
    conn = sqlite3.connect(paths.runs_db())
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    finally:
        conn.close()


def test_newer_schema_is_refused():
    record_run("eval", {}, {})
    conn = sqlite3.connect(paths.runs_db())
    conn.execute("PRAGMA user_version = 7")
    conn.close()
    with pytest.raises(StoreError, match="schema version 7"):
        list_runs()


def test_corrupt_file_is_a_store_error():
    paths.runs_db().parent.mkdir(parents=True, exist_ok=True)
    paths.runs_db().write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a readable SQLite database") as err:
        record_run("eval", {}, {})
    assert "Move the file aside" in err.value.hint


def test_concurrent_writers_lose_nothing(portllm_home):
    script = textwrap.dedent(
        """
        import sys
        from portllm_edge.history import record_run
        for i in range(15):
            record_run("eval", {"writer": sys.argv[1], "i": i}, {}, versions={}, hardware={})
        """
    )
    env = {"PORTLLM_EDGE_HOME": str(portllm_home), "PATH": "/usr/bin:/bin"}
    procs = [subprocess.Popen([sys.executable, "-c", script, str(w)], env=env) for w in range(3)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    runs = list_runs(limit=100)
    assert len(runs) == 45 and len({r.id for r in runs}) == 45
    assert sorted((r.inputs["writer"], r.inputs["i"]) for r in runs) == sorted(
        (str(w), i) for w in range(3) for i in range(15)
    )
