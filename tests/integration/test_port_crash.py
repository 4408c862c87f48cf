"""Crash safety of the other writers: ``port`` (saving the ported patch) and the run history.

Together with tests/integration/test_store_crash.py (patch import, remove, lineage, export) these
bring the SIGKILL trials to 55. After each kill the store must verify clean (every entry complete
and checksum-valid, or absent; no temp folder visible as an entry) and the history database must
pass SQLite's integrity check with every row's JSON complete.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from pathlib import Path

from crash_harness import kill_at_random, listing_changes

from portllm_edge import paths
from portllm_edge.patches import PatchStore

PORT_TRIALS = 5
HISTORY_TRIALS = 5

# The port of the CLI's `port g --base NEW --precision fp32 --force --overwrite`, through the same
# workflow call with load -> attach in this process (isolate=False): a kill interrupts the same
# store write, without a measurement worker's start-up (seconds of torch imports) in every trial.
PORT_WRITER = """
import sys
from portllm_edge.workflow import port
port("g", sys.argv[1], precision="fp32", force=True, overwrite=True, isolate=False)
"""

HISTORY_WRITER = """
import sys
from portllm_edge.history import record_run
for i in range(10_000):
    record_run("eval", {"i": i, "pad": "x" * 2000}, {"accuracy": i / 10_000, "rows": list(range(200))})
"""


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({paths.ENV_HOME: str(home), "HF_HUB_OFFLINE": "1", "PORTLLM_EDGE_TEST_WRITE_DELAY": "0.03"})
    return env


def test_port_save_survives_sigkill(tmp_path, tiny_pairs, tiny_adapters):
    home = tmp_path / "home"
    store = PatchStore(home / "patches")
    store.import_dir(tiny_adapters["gemma2"], name="g", task="sst2")
    src = store.get("g").manifest.files
    killed = 0
    stored = False
    for seed in range(PORT_TRIALS):
        # overwrite: after the first complete port, each trial replaces it (the store must never lose it)
        cmd = [sys.executable, "-c", PORT_WRITER, str(tiny_pairs["gemma2"].new)]
        # kill once the store's listing changes (the ported entry's temp folder appears), within its write window
        outcome = kill_at_random(
            cmd, seed, max_delay_s=0.15, wait_for=listing_changes(store.root), env=_env(home), timeout_s=120
        )
        killed += outcome.killed
        if not outcome.killed:
            assert outcome.returncode == 0, outcome.stderr
        store.recover()
        results = store.verify()
        assert all(r.ok for r in results if r.kind == "entry"), [r.problems for r in results]
        names = set(store.names())
        assert "g" in names and store.get("g").manifest.files == src  # the parent is never touched
        assert names <= {"g", "g@gemma2-new"}
        assert not stored or "g@gemma2-new" in names, f"trial {seed}: a replaced port was lost"
        stored = "g@gemma2-new" in names
        if "g@gemma2-new" in names:  # complete, with its lineage
            assert [e.kind for e in store.get("g@gemma2-new").manifest.lineage][-1] == "port"
        assert not [p for p in store.root.iterdir() if p.name.startswith(".tmp-") and p.is_dir()]
    assert killed >= 1


def test_history_writes_survive_sigkill(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    killed = 0
    for seed in range(HISTORY_TRIALS):
        outcome = kill_at_random(
            [sys.executable, "-c", HISTORY_WRITER],
            seed,
            min_delay_s=1.5,
            max_delay_s=3.0,
            env=_env(home),
            timeout_s=60,
        )
        killed += outcome.killed
        db = home / "runs.sqlite"
        con = sqlite3.connect(db)
        try:
            assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            cols = [r[1] for r in con.execute("PRAGMA table_info(runs)")]
            rows = con.execute("SELECT * FROM runs").fetchall()
        finally:
            con.close()
        assert rows, "the writer recorded nothing before the kill"
        for row in rows:
            rec = dict(zip(cols, row, strict=True))
            for key in ("inputs", "results"):
                if key in rec and isinstance(rec[key], str):
                    json.loads(rec[key])  # complete JSON, never torn
        assert not (home / "runs").exists()  # the history is runs.sqlite alone
    assert killed == HISTORY_TRIALS
