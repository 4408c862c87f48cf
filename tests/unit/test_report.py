"""Reports: built from run-record dicts, rendered to Markdown/JSON/PNG, budget rows from the real planner."""

from __future__ import annotations

import json

import pytest

from portllm_edge.reports import (
    BudgetCell,
    BudgetRow,
    budget_rows,
    build_report,
    render_charts,
    render_markdown,
    write_report,
)
from portllm_edge.reports.model import breakdown_from_estimate, memory_phases, ratios_of

GiB = 1024**3
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

COMPARE = {
    "id": "compare-20250301T100000-aaaa0001",
    "kind": "compare",
    "status": "ok",
    "started_at": "2025-03-01T10:00:00+00:00",
    "inputs": {"task": "sst2", "old": "v1", "new": "v2"},
    "results": {
        "task": "sst2",
        "rows": [
            {"config": "v2 zero-shot", "accuracy": 0.55, "ci_low": 0.48, "ci_high": 0.62, "n": 200},
            {"config": "v1 + patch", "accuracy": 0.85, "ci_low": 0.79, "ci_high": 0.89, "n": 200},
            {
                "config": "v2 + ported patch (nf4)",
                "accuracy": 0.83,
                "ci_low": 0.77,
                "ci_high": 0.88,
                "n": 200,
            },
            {"config": "v2 + own LoRA", "accuracy": None},
        ],
    },
}
EVAL_MRPC = {
    "id": "eval-20250301T110000-aaaa0002",
    "kind": "eval",
    "status": "ok",
    "started_at": "2025-03-01T11:00:00+00:00",
    "inputs": {"task": "mrpc", "base": "/models/v2", "base_id": "v2", "patch": "mrpc-v1", "precision": "nf4"},
    "results": {
        "task": "mrpc",
        "n": 100,
        "correct": 70,
        "accuracy": 0.7,
        "ci_low": 0.6,
        "ci_high": 0.78,
        "f1": 0.8,
    },
}
BENCH = {
    "id": "bench-20250301T120000-aaaa0003",
    "kind": "bench",
    "status": "ok",
    "started_at": "2025-03-01T12:00:00+00:00",
    "inputs": {"base": "v2"},
    "results": {
        "metric": "peak_rss",
        "ratio": 2.5,
        "measurements": [
            {
                "job": "port",
                "metric": "peak_rss",
                "peak_bytes": 1 * GiB,
                "wall_seconds": 12.5,
                "details": {"precision": "nf4"},
                "estimate": {
                    "total_bytes": int(0.9 * GiB),
                    "terms": [
                        {"key": "weights", "bytes": int(0.1 * GiB)},
                        {"key": "quant_constants", "bytes": int(0.05 * GiB)},
                        {"key": "kv_cache", "bytes": int(0.05 * GiB)},
                        {"key": "activations", "bytes": int(0.2 * GiB)},
                        {"key": "runtime", "bytes": int(0.5 * GiB)},
                    ],
                },
            },
            {
                "job": "lora_finetune",
                "metric": "peak_rss",
                "peak_bytes": int(2.5 * GiB),
                "details": {"dtype": "bf16"},
                "breakdown": {
                    "weights": GiB // 2,
                    "adapter": 10,
                    "optimizer": 20,
                    "activations": GiB,
                    "other": 30,
                    "cuda_context": 40,
                },
            },
        ],
    },
}
FAILED = {
    "id": "bench-x",
    "kind": "bench",
    "status": "error",
    "started_at": "",
    "inputs": {},
    "results": {"ratio": 9.0},
}


def test_build_report_extracts_rows_phases_and_ratio():
    rep = build_report([COMPARE, EVAL_MRPC, BENCH, FAILED], generated_at="2025-03-01T13:00:00+00:00")
    assert [(r.task, r.config, r.accuracy) for r in rep.accuracy] == [
        ("sst2", "v2 zero-shot", 0.55),
        ("sst2", "v1 + patch", 0.85),
        ("sst2", "v2 + ported patch (nf4)", 0.83),
        ("mrpc", "v2 + mrpc-v1 (nf4)", 0.7),
    ]
    assert rep.accuracy[3].f1 == 0.8 and rep.accuracy[3].run_id == EVAL_MRPC["id"]
    port, ft = rep.memory
    assert port.label == "port (nf4)" and port.peak_bytes == GiB and port.breakdown_source == "estimated"
    assert port.breakdown == breakdown_from_estimate(BENCH["results"]["measurements"][0]["estimate"])
    assert port.breakdown["weights"] == int(0.1 * GiB) + int(0.05 * GiB)
    assert port.breakdown["activations"] == int(0.05 * GiB) + int(0.2 * GiB)
    assert port.breakdown["other"] == int(0.5 * GiB)
    assert port.estimate_bytes == int(0.9 * GiB) and port.estimate_ratio == pytest.approx(0.9, abs=1e-6)
    assert ft.label == "LoRA fine-tune (bf16)" and ft.breakdown_source == "measured"
    assert ft.breakdown == {
        "weights": GiB // 2,
        "adapter": 10,
        "optimizer": 20,
        "activations": GiB,
        "other": 70,
    }
    assert [(r.value, r.metric) for r in rep.ratios] == [(2.5, "peak_rss")]
    assert "run bench-x has status error; its numbers are left out" in rep.notes
    assert [s.kind for s in rep.runs] == ["compare", "eval", "bench", "bench"]


def test_other_result_shapes():
    named = {
        "port": {"peak_bytes": 100, "metric": "cuda_max_reserved_plus_context", "estimate_bytes": 80},
        "lora_finetune": {"peak_bytes": 400},
        "ratios": {"LoRA bf16 / port nf4": 4.0},
    }
    phases = memory_phases("bench", named)
    assert [(p.label, p.peak_bytes, p.estimate_bytes) for p in phases] == [
        ("port", 100, 80),
        ("LoRA fine-tune", 400, None),
    ]
    assert [(r.label, r.value) for r in ratios_of(named)] == [("LoRA bf16 / port nf4", 4.0)]
    port_run = {"memory": {"peak_bytes": 123, "metric": "peak_rss"}, "phases": {"load": 1.0}}
    assert [(p.label, p.peak_bytes) for p in memory_phases("port", port_run)] == [("port", 123)]
    compare_map = {"task": "rte", "rows": {"zero-shot": {"accuracy": 0.5, "n": 10}}}
    rep = build_report([{"id": "c", "kind": "compare", "status": "ok", "inputs": {}, "results": compare_map}])
    assert [(r.task, r.config, r.n) for r in rep.accuracy] == [("rte", "zero-shot", 10)]


def test_markdown_has_tables_ratio_and_budget():
    budget = [
        BudgetRow(
            "rtx-4060-8gb",
            "RTX 4060 8GB",
            8 * GiB,
            7 * GiB,
            (BudgetCell("nf4", 5 * GiB, True, 2 * GiB), BudgetCell("bf16", 15 * GiB, False, -8 * GiB)),
            "nf4",
            {"LoRA 16-bit": False, "QLoRA nf4 (checkpointed)": True},
        ),
    ]
    rep = build_report(
        [COMPARE, EVAL_MRPC, BENCH],
        budget=budget,
        budget_model="v2",
        generated_at="2025-03-01T13:00:00+00:00",
    )
    md = render_markdown(rep, ["accuracy.png"])
    assert "| v1 + patch | 85.0% | 79.0% – 89.0% | 200 |" in md
    assert "| v2 + mrpc-v1 (nf4) | 70.0% | 60.0% – 78.0% | 100 | 80.0% |" in md
    assert "v2 + own LoRA" not in md.split("## Runs")[0]
    assert "- **LoRA fine-tune peak / port peak: 2.50×** (metric: peak_rss)" in md
    assert (
        "| port (nf4) | peak_rss | 1.00 GiB | n/a |" in md
        and "| estimated | 921.60 MiB | 0.90 | 12.5 s |" in md
    )
    assert "## Memory budget for `v2`" in md
    assert "| RTX 4060 8GB | 8.00 GiB | 7.00 GiB | ✓ 2.00 GiB | ✗ -8.00 GiB | nf4 | ✗ | ✓ |" in md
    assert "![Accuracy per configuration](accuracy.png)" in md
    assert "![Memory breakdown per phase]" not in md  # only charts passed in are embedded


def test_write_report_files(tmp_path):
    rep = build_report([COMPARE, EVAL_MRPC, BENCH], generated_at="2025-03-01T13:00:00+00:00")
    written = write_report(rep, tmp_path / "out")
    names = [p.name for p in written]
    assert names == [
        "report.md",
        "report.json",
        "accuracy.png",
        "memory_breakdown.png",
        "estimate_vs_measured.png",
    ]
    for p in written[2:]:
        data = p.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000
    doc = json.loads((tmp_path / "out" / "report.json").read_text())
    assert doc["ratios"][0]["value"] == 2.5
    assert doc["memory"][1]["breakdown"]["activations"] == GiB
    assert len(doc["accuracy"]) == 4
    md = (tmp_path / "out" / "report.md").read_text()
    assert "![Planner estimate beside measured peak](estimate_vs_measured.png)" in md
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".tmp-")]


def test_charts_are_skipped_without_data():
    rep = build_report([EVAL_MRPC])
    assert list(render_charts(rep)) == ["accuracy.png"]
    empty = build_report([])
    assert render_charts(empty) == {}
    assert "No accuracy or memory results" in render_markdown(empty)


def test_budget_rows_from_the_planner(tiny_pairs):
    rows = budget_rows(
        tiny_pairs["llama"].new, profiles=["rtx-4060-8gb", "t4-16gb"], precisions=("nf4", "fp32")
    )
    assert [r.profile for r in rows] == ["rtx-4060-8gb", "t4-16gb"]
    r = rows[0]
    assert [c.precision for c in r.cells] == ["nf4", "fp32"]
    assert all(c.fits for c in r.cells)  # a tiny model fits everywhere
    assert r.cells[0].headroom_bytes == r.usable_bytes - r.cells[0].needed_bytes
    assert r.usable_bytes < r.total_bytes
    assert r.best is not None
    assert set(rows[0].finetune_fits) == set(rows[1].finetune_fits)  # bf16 and fp16 share a column


def test_bench_run_gets_planner_estimates(tiny_pairs):
    from portllm_edge.planning.estimate import estimate_inference_peak, estimate_lora_finetune_peak
    from portllm_edge.planning.plan import resolve_model_spec
    from portllm_edge.reports import with_planner_estimates

    base = str(tiny_pairs["llama"].new)
    run = {
        "id": "bench-1",
        "kind": "bench",
        "status": "ok",
        "started_at": "",
        "inputs": {"base": base, "seq_len": 64, "batch_size": 4, "device": "cpu"},
        "results": {
            "configs": [
                {
                    "name": "lora_bf16",
                    "metric": "peak_rss",
                    "peak_median_bytes": 9e8,
                    "peak_spread_bytes": 1e6,
                    "wall_median_seconds": 3.0,
                },
                {
                    "name": "port_nf4",
                    "metric": "peak_rss",
                    "peak_median_bytes": 6e8,
                    "peak_spread_bytes": 0.0,
                    "wall_median_seconds": 2.0,
                },
            ],
            "ratio": 1.5,
            "ratio_metric": "peak_rss (median of 1)",
        },
    }
    enriched = with_planner_estimates(run)
    assert "estimate" not in run["results"]["configs"][0]  # the input is not modified
    arch = resolve_model_spec(base).arch
    lora = estimate_lora_finetune_peak(
        arch, "bf16", 8, ("q_proj", "k_proj", "v_proj", "o_proj"), 64, 4, False, device="cpu"
    )
    port = estimate_inference_peak(arch, "nf4", 64, 4, device="cpu")
    rep = build_report([enriched])
    ft, pt = rep.memory
    # One label scheme: the record's key (lora_bf16, port_nf4) shows as the job's name; a bench's
    # port job scores examples, so it is "port + eval", not the same job as a plain port.
    assert pt.label == "port + eval (nf4)"
    assert (ft.label, ft.peak_bytes, ft.spread_bytes, ft.wall_seconds) == (
        "LoRA fine-tune (bf16)",
        900_000_000,
        1_000_000,
        3.0,
    )
    assert ft.estimate_bytes == lora.total_bytes and pt.estimate_bytes == port.total_bytes
    assert pt.breakdown_source == "estimated" and sum(pt.breakdown.values()) == port.total_bytes
    assert ft.breakdown["optimizer"] == lora.term("optimizer") > 0
    assert [(r.label, r.value, r.metric) for r in rep.ratios] == [
        ("LoRA fine-tune (bf16) peak / port + eval (nf4) peak", 1.5, "peak_rss (median of 1)")
    ]
    assert with_planner_estimates({"kind": "eval", "inputs": {}, "results": {}}) == {
        "kind": "eval",
        "inputs": {},
        "results": {},
    }


def test_compare_gain_kept_is_reported():
    run = {**COMPARE, "results": {**COMPARE["results"], "recovered_gain": 0.9333}}
    rep = build_report([run])
    assert [(g.task, g.value) for g in rep.gains] == [("sst2", 0.9333)]
    assert "- sst2: the port keeps **93.3%** of the patch's gain over zero-shot" in render_markdown(rep)


def test_in_process_port_peak_is_left_out_and_worker_peak_is_kept():
    old_style = {
        "id": "port-1",
        "kind": "port",
        "status": "ok",
        "started_at": "",
        "inputs": {"patch": "p", "precision": "nf4"},
        "results": {
            "peak_rss_bytes": 452239360,  # the calling process's own peak: not an isolated measurement
            "cuda_max_reserved_bytes": None,
            "precision": "nf4",
            "phases": {"load": 0.5, "attach": 0.25, "check": 4.0},
            "evaluation": None,
        },
    }
    rep = build_report([old_style])
    assert rep.memory == ()
    assert any("port-1" in n and "isolated worker" in n for n in rep.notes)
    assert render_charts(rep) == {}
    workflow = {  # a workflow.port record: the worker's peak and the planner's port estimate
        **old_style,
        "id": "port-2",
        "results": {
            "peak_bytes": 1_300_000_000,
            "metric": "peak_anon_rss",
            "precision": "nf4",
            "phases": {"load": 0.5, "attach": 0.25, "check": 4.0},
            "memory": {"metric": "peak_anon_rss", "peak_bytes": 1_300_000_000, "wall_seconds": 5.0},
            "saving": {"port_estimate_bytes": 800_000_000, "baseline_bytes": 2_600_000_000},
        },
    }
    (phase,) = build_report([workflow]).memory
    assert (phase.label, phase.peak_bytes, phase.metric, phase.wall_seconds, phase.estimate_bytes) == (
        "port (nf4)",
        1_300_000_000,
        "peak_anon_rss",
        4.75,
        800_000_000,
    )


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        (
            {"task": "jsonl", "data": "/h/cache/demo/animal-or-vehicle/dev.jsonl"},
            "animal-or-vehicle/dev.jsonl",
        ),
        ({"task": "jsonl", "data": "/data/reviews.jsonl"}, "reviews"),
        ({"task": "jsonl", "evaluate": {"data": "/data/tickets.jsonl"}}, "tickets"),
        ({"task": "jsonl", "data": "/x/dev.jsonl", "task_title": "animal or vehicle"}, "animal or vehicle"),
        ({"task": "sst2", "data": "/shared/sst2/dev.tsv"}, "sst2"),
        ({"task": "jsonl"}, "jsonl"),
    ],
)
def test_task_label_names_a_jsonl_task_after_its_file(inputs, expected):
    run = {
        "id": "compare-1",
        "kind": "compare",
        "status": "ok",
        "started_at": "",
        "inputs": inputs,
        "results": {
            "task": inputs["task"],
            "rows": [{"config": "a", "accuracy": 0.9}],
            "recovered_gain": 1.0,
        },
    }
    rep = build_report([run])
    assert [r.task for r in rep.accuracy] == [expected]
    assert [g.task for g in rep.gains] == [expected]


def test_budget_rows_put_this_machine_first(tiny_pairs):
    from portllm_edge.planning import Budget

    machine = Budget("host RAM", "probe", "cpu", 16 * GiB, 12 * GiB, 0.1)
    rows = budget_rows(tiny_pairs["llama"].new, profiles=["t4-16gb"], machine=machine)
    assert [(r.profile, r.this_machine) for r in rows] == [("this-machine", True), ("t4-16gb", False)]
    assert rows[0].display_name == "this machine: host RAM, 16.00 GiB"
    assert rows[0].usable_bytes == int(12 * GiB * 0.9) and rows[0].total_bytes == 16 * GiB
    md = render_markdown(build_report([], budget=rows, budget_model="tiny"))
    assert "| this machine: host RAM, 16.00 GiB | 16.00 GiB | 10.80 GiB |" in md
    assert render_charts(build_report([], budget=rows))["memory_budget.png"].startswith(PNG_MAGIC)


def test_a_ports_own_evaluation_is_an_accuracy_row():
    port = {
        "id": "port-3",
        "kind": "port",
        "status": "ok",
        "started_at": "",
        "inputs": {
            "patch": "demo-tags",
            "base": "SmolLM2-135M-Instruct-demo-v2",
            "precision": "auto",
            "evaluate": {"task": "jsonl", "data": "/h/cache/demo/animal-or-vehicle/dev.jsonl"},
        },
        "results": {
            "base_id": "SmolLM2-135M-Instruct-demo-v2",
            "precision": "nf4",
            "evaluation": {"task": "jsonl", "n": 50, "accuracy": 0.94, "ci_low": 0.84, "ci_high": 0.98},
        },
    }
    (row,) = build_report([port]).accuracy
    assert (row.task, row.config, row.n, row.accuracy, row.run_id) == (
        "animal-or-vehicle/dev.jsonl",
        "SmolLM2-135M-Instruct-demo-v2 + demo-tags (nf4), ported",
        50,
        0.94,
        "port-3",
    )


def test_one_label_scheme_for_measured_jobs():
    """bench's configuration keys and port runs show under one scheme; a port that scored
    examples (bench's always does) is labelled so, since its peak holds the scoring passes."""
    from portllm_edge.reports import job_label, latest_savings
    from portllm_edge.reports.model import memory_phases

    assert job_label("lora_bf16") == "LoRA fine-tune (bf16)"
    assert job_label("qlora_nf4") == "QLoRA fine-tune (nf4)"
    assert job_label("port_bf16", evaluated=True) == "port + eval (bf16)"
    assert job_label("port", "nf4") == "port (nf4)"
    mem = {"metric": "peak_anon_rss", "peak_bytes": 700 * 2**20, "wall_seconds": 2.0}
    plain_port = {"precision": "bf16", "memory": mem}
    scored = {**plain_port, "evaluation": {"task": "jsonl", "accuracy": 1.0, "n": 32}}
    assert [p.label for p in memory_phases("port", plain_port)] == ["port (bf16)"]
    assert [p.label for p in memory_phases("port", scored)] == ["port + eval (bf16)"]
    bench = {
        "id": "bench-1",
        "kind": "bench",
        "status": "ok",
        "started_at": "2026-12-01T12:57:19",
        "inputs": {"base": "/m/SmolLM2-135M-Instruct-demo-v2"},
        "results": {
            "configs": [
                {"name": "lora_bf16", "peak_median_bytes": 1166 * 2**20, "metric": "peak_anon_rss"},
                {"name": "port_bf16", "peak_median_bytes": 1074 * 2**20, "metric": "peak_anon_rss"},
            ]
        },
    }
    (saving,) = latest_savings([bench])
    assert (saving.port_label, saving.finetune_label) == ("port + eval (bf16)", "LoRA fine-tune (bf16)")
    assert saving.saved_bytes == 92 * 2**20


def test_budget_section_sizes_the_base_ported_to_by_its_store_name(portllm_home):
    from portllm_edge.reports.assemble import budget_candidates, model_display_name

    v2 = portllm_home / "models" / "tiny-v2"
    v2.mkdir(parents=True)
    runs = [
        {"kind": "train", "inputs": {"base": "/data/tiny-v1"}},
        {"kind": "port", "inputs": {"patch": "p", "base": str(v2), "old": "/data/tiny-v1"}},
    ]
    assert budget_candidates(runs)[0] == str(v2)
    assert model_display_name(str(v2)) == "tiny-v2"
    assert model_display_name("/data/tiny-v1") == "/data/tiny-v1"


def _port_run(i: int) -> dict:
    mem = {"metric": "peak_anon_rss", "peak_bytes": (600 + i) * 2**20, "wall_seconds": 2.0}
    return {
        "id": f"port-20261201T1500{i:02d}-{i:08x}",
        "kind": "port",
        "status": "ok",
        "started_at": f"2026-12-01T15:00:{i:02d}+00:00",
        "inputs": {"base": "v2", "patch": "p"},
        "results": {"precision": "bf16", "memory": mem, "estimate": {"total_bytes": 500 * 2**20}},
    }


def test_chart_labels_are_unique_and_name_the_run_where_job_labels_repeat():
    """Ten `port (bf16)` bars were ten identical x labels: each now carries its run's id suffix
    (`runs show SUFFIX` finds the run); a label that occurs once keeps the plain job label."""
    from portllm_edge.reports.model import memory_labels

    rep = build_report([_port_run(i) for i in range(10)] + [BENCH])
    labels = memory_labels(rep.memory)
    assert len(rep.memory) == 12 and len(set(labels)) == 12
    assert labels[:10] == [f"port (bf16) · {i:08x}" for i in range(10)]
    assert labels[10:] == ["port (nf4)", "LoRA fine-tune (bf16)"]
    for phase, label in zip(rep.memory, labels, strict=True):
        assert phase.label in label and (label == phase.label or phase.run_id.endswith(label[-8:]))
    md = render_markdown(rep)
    assert "| port (bf16) · 00000009 |" in md


def test_accuracy_series_keep_runs_with_the_same_configuration_apart():
    """Two compare runs on sst2 with the same configuration names were merged into one bar each
    (the first run's); now each run's configurations are their own series, named by the run."""
    from portllm_edge.reports.model import accuracy_series

    second = {**COMPARE, "id": "compare-20250302T100000-bbbb0001"}
    rep = build_report([COMPARE, second, EVAL_MRPC])
    series = accuracy_series(rep.accuracy)
    bars = list(zip((r.task for r in rep.accuracy), series, strict=True))
    assert len(set(bars)) == len(bars) == 7
    assert series[:3] == [
        "v2 zero-shot (n=200) · aaaa0001",
        "v1 + patch (n=200) · aaaa0001",
        "v2 + ported patch (nf4) (n=200) · aaaa0001",
    ]
    assert series[3] == "v2 zero-shot (n=200) · bbbb0001"
    assert (
        series[6] == "v2 + mrpc-v1 (nf4) (n=100)" == f"{rep.accuracy[6].config} (n=100)"
    )  # alone: no run id


@pytest.mark.parametrize("correct", [48, 0])
def test_a_100_or_0_percent_row_writes_its_chart(tmp_path, correct):
    """48/48 stored ci_high 0.9999999999999999 < accuracy 1.0: the chart's error bar was negative,
    matplotlib raised and `report` wrote nothing (the app left an empty folder)."""
    from portllm_edge.evaluation.metrics import wilson_interval

    low, high = wilson_interval(correct, 48)
    assert low <= correct / 48 <= high
    assert (low, high)[correct == 48] == correct / 48  # the end at the estimate is exact
    raw = {"config": "v2 + ported patch (nf4)", "accuracy": correct / 48, "n": 48}
    # the value records written before the interval was clamped hold (the case the chart must survive)
    raw |= {"ci_low": 0.9, "ci_high": 0.9999999999999999} if correct else {"ci_low": 2.8e-17, "ci_high": 0.07}
    run = {**COMPARE, "results": {"task": "sst2", "rows": [raw]}}
    written = write_report(build_report([run]), tmp_path / "out")
    png = tmp_path / "out" / "accuracy.png"
    assert png in written and png.read_bytes().startswith(PNG_MAGIC)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary sibling left


def test_a_failed_report_leaves_no_folder(tmp_path, monkeypatch):
    from portllm_edge.reports import render

    def boom(report):
        raise RuntimeError("chart failed")

    monkeypatch.setattr(render, "render_charts", boom)
    with pytest.raises(RuntimeError, match="chart failed"):
        write_report(build_report([COMPARE]), tmp_path / "reports" / "report-x")
    assert list(tmp_path.iterdir()) == []


def test_accuracy_labels_carry_the_number_of_examples():
    """A port's quick check on 32 examples sat beside the compare's 192-example rows under the
    same kind of label: each chart series now names its n (a row without n keeps its plain label)."""
    from portllm_edge.reports.model import accuracy_series

    port = {
        "id": "port-20250301T090000-cccc0001",
        "kind": "port",
        "status": "ok",
        "started_at": "",
        "inputs": {"patch": "sst2-v1", "base": "v2", "evaluate": {"task": "sst2"}},
        "results": {
            "base_id": "v2",
            "precision": "nf4",
            "evaluation": {"task": "sst2", "n": 32, "accuracy": 0.875, "ci_low": 0.72, "ci_high": 0.95},
        },
    }
    rows = [{**r, "n": 192} if r.get("accuracy") is not None else r for r in COMPARE["results"]["rows"]]
    compare = {**COMPARE, "results": {"task": "sst2", "rows": rows}}
    rep = build_report([compare, port])
    assert accuracy_series(rep.accuracy) == [
        "v2 zero-shot (n=192)",
        "v1 + patch (n=192)",
        "v2 + ported patch (nf4) (n=192)",
        "v2 + sst2-v1 (nf4), ported (n=32)",
    ]
