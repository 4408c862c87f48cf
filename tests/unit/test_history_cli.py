"""`portllm-edge runs list/show` on a recorded history."""

from __future__ import annotations

import json

from portllm_edge.cli import main
from portllm_edge.history import record_run


def _seed_runs() -> tuple[str, str]:
    a = record_run(
        "eval",
        {"task": "sst2", "base_id": "v2", "precision": "nf4"},
        {"task": "sst2", "accuracy": 0.8125, "n": 16},
        versions={"torch": "2.13.0"},
        hardware={"cpu_count": 2},
    )
    b = record_run(
        "bench", {"base": "v2"}, {"ratio": 3.0, "port": {"peak_bytes": 2 * 1024**3}}, versions={}, hardware={}
    )
    return a, b


def test_runs_list_table_and_json(capsys):
    a, b = _seed_runs()
    assert main(["runs", "list"]) == 0
    out = capsys.readouterr().out
    assert a in out and b in out and out.index(b) < out.index(a)  # newest first
    assert "sst2: accuracy 0.812 (n=16) — v2 (nf4)" in out
    assert "ratio 3.00×; port 2.00 GiB" in out
    assert main(["runs", "list", "--kind", "eval", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in doc] == [a]


def test_runs_show_by_suffix(capsys):
    a, _ = _seed_runs()
    assert main(["runs", "show", a.rsplit("-", 1)[1]]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"run {a}  (eval, ok)")
    assert '"accuracy": 0.8125' in out and '"torch": "2.13.0"' in out
    assert main(["runs", "show", a, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"]["n"] == 16


def test_runs_empty_and_unknown(capsys):
    assert main(["runs", "list"]) == 0
    assert "no runs recorded" in capsys.readouterr().out
    assert main(["runs", "show", "nope"]) == 2
    err = capsys.readouterr().err
    assert "no run with id 'nope'" in err and "runs list" in err
    assert main(["runs", "list", "--kind", "tune"]) == 2
    assert "unknown run kind `tune`" in capsys.readouterr().err


def test_a_failed_runs_summary_says_why(capsys):
    import pytest

    from portllm_edge.errors import CompatibilityError
    from portllm_edge.history import list_runs, tracking

    with pytest.raises(CompatibilityError), tracking("port", {"patch": "p1", "base": "v2"}):
        raise CompatibilityError("hidden size 64 != 128", hint="port onto a base of the same family")
    (run,) = list_runs()
    assert run.status == "failed"
    assert main(["runs", "show", run.id]) == 0
    out = capsys.readouterr().out
    assert "summary  hidden size 64 != 128. Fix: port onto a base of the same family (patch p1)" in out


def test_runs_list_fits_100_columns_with_whole_ids_and_shortened_summaries(capsys):
    """`runs list` was about 200 columns wide; now one line per run within 100 columns, each id
    whole (to copy into `runs show`), a long summary cut with an ellipsis (in full in `runs show`)."""
    import re

    import pytest

    from portllm_edge.errors import CompatibilityError
    from portllm_edge.history import tracking

    a, b = _seed_runs()
    reason = "the patch's target module model.layers.0.self_attn.q_proj has no counterpart " * 3
    with pytest.raises(CompatibilityError), tracking("port", {"patch": "p1", "base": "v2"}):
        raise CompatibilityError(reason, hint="port onto a base of the same family")
    assert main(["runs", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= 100
    rows = [line for line in lines if re.match(r"[a-z]+-\d{8}T\d{6}-[0-9a-f]{8} ", line.strip())]
    assert len(rows) == 3  # one line per run
    assert rows[1].split()[0] == b and rows[2].split()[0] == a
    assert rows[0].split()[0].startswith("port-") and rows[0].split()[1] == "failed"
    assert rows[0].rstrip().endswith("…") and "the patch's target module" in rows[0]
    assert "sst2: accuracy 0.812 (n=16) — v2 (nf4)" in rows[2]
    assert lines[-1] == "full records: portllm-edge runs show ID (or its last 8 characters)"
