"""compare (the PortLLM table) and bench (isolated peak memory) on tiny real models and real SST-2 rows."""

from __future__ import annotations

import pytest

from portllm_edge.cli import main
from portllm_edge.history import get_run
from portllm_edge.patches import PatchStore
from portllm_edge.porting.compare import (
    ROW_OLD_PATCH,
    ROW_PORTED,
    ROW_ZERO_SHOT,
    CompareResult,
    CompareRow,
)
from portllm_edge.workflow import EvalSpec, bench, compare


def _row(config, acc):
    return CompareRow(config, "b", None, "nf4", acc, 0.0, 1.0, None, 10, 0.1)


def test_recovered_gain_by_hand():
    res = CompareResult(
        "sst2", "f", None, 0, [_row(ROW_ZERO_SHOT, 0.5), _row(ROW_OLD_PATCH, 0.9), _row(ROW_PORTED, 0.8)]
    )
    assert res.recovered_gain() == pytest.approx(0.75)  # (0.8-0.5)/(0.9-0.5)
    flat = CompareResult(
        "sst2", "f", None, 0, [_row(ROW_ZERO_SHOT, 0.5), _row(ROW_OLD_PATCH, 0.5), _row(ROW_PORTED, 0.6)]
    )
    assert flat.recovered_gain() is None


def test_compare_on_real_sst2_rows(tiny_pairs, tiny_adapters, shared_data):
    PatchStore().import_dir(tiny_adapters["qwen2"], name="qp")
    pair = tiny_pairs["qwen2"]
    res = compare(
        "qp",
        old=str(pair.old),
        new=str(pair.new),
        spec=EvalSpec("sst2", shared_data / "sst2" / "dev.tsv", limit=12),
        precision="fp32",
        baseline="qp",
    )
    assert [r.config for r in res.rows] == [ROW_ZERO_SHOT, ROW_OLD_PATCH, ROW_PORTED, "new base + own LoRA"]
    assert all(r.n == 12 for r in res.rows)
    assert all(0.0 <= r.ci_low <= r.accuracy <= r.ci_high <= 1.0 for r in res.rows)
    # the same patch on the same base gives the same accuracy: rows 3 and 4 use identical weights here
    assert res.rows[2].accuracy == res.rows[3].accuracy
    record = get_run(res.run_id)
    assert record.kind == "compare" and record.status == "ok" and len(record.results["rows"]) == 4
    assert CompareResult.from_dict(record.results).rows == res.rows


def test_compare_default_precision_is_the_planners_choice_for_the_new_base(
    tiny_pairs, tiny_adapters, shared_data, capsys
):
    from portllm_edge.planning import decide_precision
    from portllm_edge.porting.load import default_device

    PatchStore().import_dir(tiny_adapters["qwen2"], name="qp")
    pair = tiny_pairs["qwen2"]
    want = decide_precision(pair.new, device=default_device()).precision.value
    args = ["compare", "qp", "--old", str(pair.old), "--new", str(pair.new), "--task", "sst2"]
    code = main([*args, "--data", str(shared_data / "sst2" / "dev.tsv"), "--limit", "4"])
    text = " ".join(capsys.readouterr().out.split())  # the table title may wrap
    assert code == 0 and f"all rows at {want} (--precision auto)" in text
    record = get_run(text.rsplit("run ", 1)[1].split()[0])
    assert {r["precision"] for r in record.results["rows"]} == {want}


def test_bench_measures_both_in_subprocesses(tiny_pairs, tiny_adapters, shared_data):
    pair = tiny_pairs["llama"]
    res = bench(
        str(tiny_adapters["llama"]),
        str(pair.new),
        task="sst2",
        train_data=shared_data / "sst2" / "train.tsv",
        eval_data=shared_data / "sst2" / "dev.tsv",
        precision="nf4",
        seq_len=32,
        batch_size=4,
        steps=2,
    )
    names = [c.name for c in res.configs]
    from portllm_edge.measure.bench import default_finetune_dtype

    # the baseline fine-tunes in bf16 where the CPU computes in it natively (AVX512-BF16/AMX), else fp32
    assert names == [f"lora_{default_finetune_dtype('cpu')}", "port_nf4"]
    for c in res.configs:
        assert (
            c.metric == "peak_anon_plus_mapped_weights"
        )  # the headline: RssAnon + mapped weight pages of the worker
        assert c.peak_median_bytes > 100 * 2**20  # a whole Python + torch process
        assert c.peak_spread_bytes == 0.0  # one repeat
        run = c.runs[0]
        assert run["baseline_bytes"] <= run["peak_bytes"]
    assert res.ratio == pytest.approx(res.configs[0].peak_median_bytes / res.configs[1].peak_median_bytes)
    assert res.configs[0].runs[0]["details"]["steps"] == 2
    from portllm_edge.workflow.jobs import PortJobResult

    quick = PortJobResult.from_json(res.configs[1].runs[0]["details"]).evaluation
    assert quick is not None and quick.n == 16 and res.configs[1].tokens_per_s == quick.tokens_per_s
    # a later port of this base compares its own worker-measured peak with this measured fine-tune
    from portllm_edge.workflow import port

    ported = port(str(tiny_adapters["llama"]), str(pair.new), precision="nf4", save=False)
    assert ported.memory is not None and ported.saving is not None
    assert ported.saving.baseline_source == "measured" and ported.saving.baseline_run_id == res.run_id
    assert ported.saving.baseline_bytes == int(res.configs[0].peak_median_bytes)
    assert ported.saving.port_peak_bytes == ported.memory.peak_bytes


def test_compare_cli_unknown_task_exits_2(capsys, tiny_pairs, tiny_adapters, tmp_path):
    PatchStore().import_dir(tiny_adapters["llama"], name="lp")
    pair = tiny_pairs["llama"]
    code = main(
        [
            "compare",
            "lp",
            "--old",
            str(pair.old),
            "--new",
            str(pair.new),
            "--task",
            "sst-3",
            "--data",
            str(tmp_path),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "sst-3" in err and "Traceback" not in err
