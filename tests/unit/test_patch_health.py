"""Patch health: successive ports of one patch per lineage, from compare runs in the history; report chart."""

from __future__ import annotations

import pytest

from portllm_edge.history import record_run
from portllm_edge.history.health import lineage_health


def _compare(
    patch: str, version: str | None, gain: float, low: float, high: float, task: str = "sst2"
) -> dict:
    extras = {} if version is None else {"lineage": {"root": "/models/v1", "version": version}}
    return {
        "task": task,
        "rows": [
            {"config": "new base zero-shot", "accuracy": 0.5, "n": 64},
            {"config": "old base + patch", "accuracy": 0.75, "n": 64},
        ],
        "recovered_gain": gain,
        "paired": {"recovered_gain": {"estimate": gain, "low": low, "high": high}},
        "extras": extras,
    }


def _record(patch: str, version: str | None, gain: float, **kw) -> str:
    return record_run(
        "compare", {"patch": patch}, _compare(patch, version, gain, gain - 0.1, gain + 0.1, **kw)
    )


def test_series_per_patch_lineage_and_task_in_version_order():
    _record("p", "v10", 0.2)
    _record("p", "v2", 0.9)
    first_v3 = _record("p", "v3", 0.1)
    newest_v3 = _record("p", "v3", 0.7)  # a re-run of v3 replaces the first
    _record("p", None, 0.5)  # a base outside any chain: not a health point
    _record("p", "v2", 0.8, task="rte")
    _record("q", "v2", 0.4)
    record_run("compare", {"patch": "p"}, _compare("p", "v4", 0.3, 0.2, 0.4), status="failed")
    series = {(h.patch, h.task): h for h in lineage_health()}
    assert set(series) == {("p", "sst2"), ("p", "rte"), ("q", "sst2")}
    sst2 = series[("p", "sst2")]
    assert [p.version for p in sst2.points] == ["v2", "v3", "v10"]
    assert [p.recovered_gain for p in sst2.points] == [0.9, 0.7, 0.2]
    assert sst2.points[1].run_id == newest_v3 != first_v3
    assert (sst2.points[0].low, sst2.points[0].high, sst2.points[0].n) == pytest.approx((0.8, 1.0, 64))
    assert sst2.points[0].gain == pytest.approx(0.25)
    assert sst2.label == "p on sst2 (v1)"
    assert [h.patch for h in lineage_health("q")] == ["q"]


def test_report_draws_the_patch_health_chart(tmp_path):
    from portllm_edge.history import list_runs
    from portllm_edge.reports.model import build_report
    from portllm_edge.reports.render import CHART_HEALTH, render_markdown, write_report

    for version, gain in (("v2", 0.95), ("v3", 0.6), ("v4", 0.2)):
        _record("p", version, gain)
    report = build_report(list(reversed(list_runs("compare"))), generated_at="2026-01-01T00:00:00+00:00")
    assert len(report.health) == 1 and [p.version for p in report.health[0].points] == ["v2", "v3", "v4"]
    written = write_report(report, tmp_path / "r")
    chart = tmp_path / "r" / CHART_HEALTH
    assert chart in written and chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = render_markdown(report, [CHART_HEALTH])
    assert "## Patch health across successive updates" in md
    assert "| v3 | 60.0% | 50.0% – 70.0% | +25.0 points | 64 |" in md
    assert f"![Patch health per version]({CHART_HEALTH})" in md


def test_no_chain_no_health_section():
    from portllm_edge.reports.model import build_report
    from portllm_edge.reports.render import render_charts

    report = build_report(
        [
            {
                "id": "c",
                "kind": "compare",
                "status": "ok",
                "inputs": {},
                "results": _compare("p", None, 0.5, 0.4, 0.6),
            }
        ]
    )
    assert report.health == () and "patch_health.png" not in render_charts(report)


def test_report_with_one_point_an_interval_that_excludes_it_and_none(tmp_path, capsys):
    """A percentile bootstrap interval of a ratio need not contain the estimate; the report still draws it."""
    from portllm_edge.cli import main
    from portllm_edge.reports.render import CHART_HEALTH

    record_run("compare", {"patch": "p"}, _compare("p", "v2", 0.8, 0.85, 1.2))  # interval above the estimate
    no_interval = _compare("q", "v2", 0.5, 0.0, 0.0)
    no_interval["paired"] = {}
    record_run("compare", {"patch": "q"}, no_interval)
    assert main(["report", "--out", str(tmp_path / "r"), "--no-budget"]) == 0
    assert (tmp_path / "r" / CHART_HEALTH).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (tmp_path / "r" / "report.md").read_text()
    assert "| v2 | 80.0% | 85.0% – 120.0% |" in md and "| v2 | 50.0% | n/a |" in md
