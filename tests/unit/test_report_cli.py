"""`portllm-edge report` from recorded runs: files written, budget section from the runs' base."""

from __future__ import annotations

import json
import os

from portllm_edge.cli import main
from portllm_edge.history import record_run


def test_report_from_history(tiny_pairs, tmp_path, capsys):
    base = str(tiny_pairs["llama"].new)
    ev = record_run(
        "eval",
        {"task": "rte", "base": base, "base_id": "llama-new", "precision": "nf4"},
        {"task": "rte", "accuracy": 0.5, "n": 10, "ci_low": 0.24, "ci_high": 0.76},
        versions={},
        hardware={},
    )
    bench = record_run(
        "bench",
        {"base": base},
        {"ratio": 1.8, "metric": "peak_rss", "port": {"peak_bytes": 10**9, "estimate_bytes": 9 * 10**8}},
        versions={},
        hardware={},
    )
    train = record_run(
        "train",
        {"name": "p1"},
        {
            "name": "p1",
            "base_id": "llama-old",
            "final_loss": 0.0034,
            "heldout_before": {"accuracy": 0.656, "n": 64},
            "heldout_after": {"accuracy": 0.984, "n": 64},
        },
        versions={},
        hardware={},
    )
    upd = record_run("update", {"base": base}, {}, versions={}, hardware={})  # no figures of a patch
    out_dir = tmp_path / "rep"
    rc = main(["report", "--out", str(out_dir), "--hardware", "rtx-4060-8gb", "--hardware", "cpu-16gb"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "report of 3 runs" in captured.out
    # The run left out is named, with the reason, in the output and in the report.
    left = f"1 update run left out ({upd}): it makes a new base version and scores no patch"
    assert f"note: {left}" in captured.out
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "accuracy.png",
        "estimate_vs_measured.png",
        "memory_breakdown.png",
        "memory_budget.png",
        "report.json",
        "report.md",
    ]
    md = (out_dir / "report.md").read_text()
    assert left in md
    assert f"| {train} | train | ok |" in md
    assert (
        "patch p1 on llama-old: held-out accuracy 0.656 → 0.984 (n=64, training slice), final loss 0.0034"
        in md
    )
    assert "| llama-new (nf4) | 50.0% | 24.0% – 76.0% | 10 |" in md
    assert "**LoRA fine-tune peak / port peak: 1.80×** (metric: peak_rss)" in md
    assert f"## Memory budget for `{base}`" in md and "NVIDIA GeForce RTX 4060 8GB" in md
    doc = json.loads((out_dir / "report.json").read_text())
    assert [r["id"] for r in doc["runs"]] == [ev, bench, train]
    assert [b["profile"] for b in doc["budget"]] == ["rtx-4060-8gb", "cpu-16gb"]


def test_report_of_named_runs_without_budget(tmp_path, capsys):
    rid = record_run(
        "compare",
        {"task": "sst2"},
        {"task": "sst2", "rows": [{"config": "a", "accuracy": 0.9}]},
        versions={},
        hardware={},
    )
    mask = os.umask(0o022)
    try:
        assert main(["report", rid, "--out", str(tmp_path / "r"), "--no-budget"]) == 0
    finally:
        os.umask(mask)
    doc = json.loads((tmp_path / "r" / "report.json").read_text())
    assert doc["accuracy"][0]["config"] == "a" and doc["budget"] == []
    # Files people share get open()'s mode (0644 under the usual umask 022), not mkstemp's 0600.
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "r").iterdir()}
    assert len(modes) >= 3 and set(modes.values()) == {0o644}, modes
    assert main(["report", "missing-id", "--out", str(tmp_path / "r2")]) == 2
    assert "no run with id 'missing-id'" in capsys.readouterr().err
    assert not (tmp_path / "r2").exists()
