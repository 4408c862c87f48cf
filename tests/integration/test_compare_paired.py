"""compare prints and records paired statistics of its rows (tiny real models, real SST-2 rows)."""

from __future__ import annotations

import json

import pytest

from portllm_edge.cli import main
from portllm_edge.patches import PatchStore


def _compare_args(pair, shared_data, *extra):
    return [
        "compare",
        "qp",
        "--old",
        str(pair.old),
        "--new",
        str(pair.new),
        "--task",
        "sst2",
        "--data",
        str(shared_data / "sst2" / "dev.tsv"),
        "--limit",
        "16",
        "--precision",
        "fp32",
        "--baseline",
        "qp",
        *extra,
    ]


def test_compare_records_and_prints_paired_statistics(tiny_pairs, tiny_adapters, shared_data, capsys):
    PatchStore().import_dir(tiny_adapters["qwen2"], name="qp")
    pair = tiny_pairs["qwen2"]
    assert main(_compare_args(pair, shared_data, "--json")) == 0
    res = json.loads(capsys.readouterr().out)
    rows = {r["config"]: r for r in res["rows"]}
    assert all(len(r["correct"]) == 16 for r in rows.values())
    paired = res["paired"]
    old = paired["ported_vs_old"]
    m = old["mcnemar"]
    ported, oldp = rows["new base + ported patch"]["correct"], rows["old base + patch"]["correct"]
    assert m["only_a"] == sum(a and not b for a, b in zip(ported, oldp, strict=True))
    assert m["only_b"] == sum(b and not a for a, b in zip(ported, oldp, strict=True))
    assert m["both_correct"] + m["only_a"] == round(rows["new base + ported patch"]["accuracy"] * 16)
    diff = old["difference"]
    assert diff["estimate"] == pytest.approx(old["accuracy_a"] - old["accuracy_b"])
    assert diff["low"] <= diff["estimate"] <= diff["high"]
    # the baseline row is the same patch on the same base: identical verdicts
    own = paired["ported_vs_baseline"]
    assert own["mcnemar"]["only_a"] == own["mcnemar"]["only_b"] == 0 and own["mcnemar"]["p_value"] == 1.0
    assert own["difference"]["low"] == own["difference"]["high"] == 0.0
    if res["recovered_gain"] is None:
        assert paired["recovered_gain"] is None
    else:
        assert paired["recovered_gain"]["estimate"] == pytest.approx(res["recovered_gain"])

    assert main(_compare_args(pair, shared_data)) == 0
    text = capsys.readouterr().out
    assert "paired: new base + ported patch − old base + patch: " in text
    assert "McNemar p=1 (0 vs 0 discordant)" in text  # ported vs own LoRA
