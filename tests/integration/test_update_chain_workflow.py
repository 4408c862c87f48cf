"""simulate-update --chain through the workflow: each version a recorded update, resumable; compare
runs against a chain version are tracked per lineage (patch health); forecast features on tiny models."""

from __future__ import annotations

import json

import pytest

from portllm_edge.cli import main
from portllm_edge.history import list_runs
from portllm_edge.patches import PatchStore
from portllm_edge.training.update import DRIFT_FILE, read_lineage


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "prose.txt"
    path.write_text(" ".join(f"The ship sailed past island number {i} at dawn." for i in range(200)))
    return path


def test_cli_chain_records_each_version_and_resumes(tiny_pairs, corpus, tmp_path, capsys):
    root = tiny_pairs["qwen2"].old
    args = ["simulate-update", str(root), "--corpus", str(corpus), "--out", str(tmp_path / "chain"),
            "--chain", "2:1e-3,3:3e-3", "--seq-len", "32", "--batch-size", "2"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "lineage of 3 versions" in out and "v3: 3 steps at lr 0.003" in out
    updates = list_runs("update")
    assert sorted(r.inputs["version"] for r in updates) == ["v2", "v3"]
    assert {r.status for r in updates} == {"ok"}
    v3 = next(r for r in updates if r.inputs["version"] == "v3")
    assert v3.inputs["base"] == str(tmp_path / "chain" / "v2")  # trained from the previous version
    version, lineage = read_lineage(tmp_path / "chain" / "v3")
    assert version == "v3" and [v.version for v in lineage] == ["v1", "v2", "v3"]
    assert lineage[0].path == str(root.resolve())
    stamp = (tmp_path / "chain" / "v3" / DRIFT_FILE).read_bytes()
    assert main(args) == 0  # same settings: both versions reused, nothing trained or recorded
    assert len(list_runs("update")) == 2
    assert (tmp_path / "chain" / "v3" / DRIFT_FILE).read_bytes() == stamp
    changed = [*args[:-4], "--chain", "2:1e-3,4:3e-3", *args[-4:]]
    assert main(changed) == 2  # v3's stage changed: its folder is not replaced without --force
    err = capsys.readouterr().err
    assert "chain/v3: already exists" in err and "--force" in err
    assert len(list_runs("update")) == 2  # refused before any version was trained
    assert main([*changed, "--force"]) == 0  # only v3 is trained again
    ok = [r for r in list_runs("update") if r.status == "ok"]
    assert [r.inputs["version"] for r in ok][:1] == ["v3"] and len(ok) == 3
    # v2's stage changed: v2 is remade, and v3 with it (the kept v3 was trained from the old v2)
    assert main([*args[:-4], "--chain", "1:1e-3,4:3e-3", *args[-4:], "--force"]) == 0
    ok = [r for r in list_runs("update") if r.status == "ok"]
    assert [r.inputs["version"] for r in ok][:2] == ["v3", "v2"] and len(ok) == 5


def test_cli_chain_refuses_a_malformed_stage(tiny_pairs, corpus, tmp_path, capsys):
    code = main(["simulate-update", str(tiny_pairs["qwen2"].old), "--corpus", str(corpus),
                 "--out", str(tmp_path / "c"), "--chain", "2:1e-3,fast"])  # fmt: skip
    assert code == 2 and "`--chain` item 'fast' is not STEPS:LR" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_compare_against_a_chain_version_is_a_health_point(
    tiny_pairs, tiny_adapters, corpus, tmp_path, shared_data
):
    from portllm_edge.history.health import lineage_health
    from portllm_edge.porting.compare import ROW_OLD_PATCH
    from portllm_edge.workflow import EvalSpec, UpdateChainRequest, compare, update_chain

    root = tiny_pairs["qwen2"].old
    update_chain(
        UpdateChainRequest(str(root), [str(corpus)], str(tmp_path / "chain"), [(2, 1e-3), (2, 3e-3)], 32, 2)
    )
    PatchStore().import_dir(tiny_adapters["qwen2"], name="qp")
    spec = EvalSpec("sst2", shared_data / "sst2" / "dev.tsv", limit=12, batch_size=4)
    first = compare("qp", old=str(root), new=str(tmp_path / "chain" / "v2"), spec=spec, precision="fp32")
    assert first.extras["lineage"]["version"] == "v2"
    assert first.extras["lineage"]["root"] == str(root.resolve())
    old_row = first.row(ROW_OLD_PATCH)
    second = compare("qp", old=str(root), new=str(tmp_path / "chain" / "v3"), spec=spec, precision="fp32",
                     reuse_rows={ROW_OLD_PATCH: old_row})  # fmt: skip
    assert second.row(ROW_OLD_PATCH) is old_row  # scored once for the lineage
    other_spec = EvalSpec("sst2", shared_data / "sst2" / "dev.tsv", limit=8, batch_size=4)
    third = compare("qp", old=str(root), new=str(tmp_path / "chain" / "v3"), spec=other_spec,
                    precision="fp32", reuse_rows={ROW_OLD_PATCH: old_row}, record=False)  # fmt: skip
    assert third.row(ROW_OLD_PATCH) is not old_row and third.row(ROW_OLD_PATCH).n == 8  # other rows: scored
    gains = [r for r in (first, second) if r.recovered_gain() is not None]
    health = lineage_health("qp")
    if gains:  # the tiny random patch may gain nothing on these rows: then there is no health point
        assert len(health) == 1
        assert [p.version for p in health[0].points] == [r.extras["lineage"]["version"] for r in gains]
        assert [p.recovered_gain for p in health[0].points] == pytest.approx(
            [r.recovered_gain() for r in gains]
        )
    else:
        assert health == []


def test_effect_features_are_exact_for_an_unchanged_base(tiny_pairs, tiny_adapters):
    from portllm_edge.forecast import candidate_features

    pair = tiny_pairs["llama"]
    same = candidate_features(tiny_adapters["llama"], pair.old, pair.old)
    assert same.effect_cosine == pytest.approx(1.0, abs=1e-6) and same.effect_kept == pytest.approx(
        1.0, abs=1e-6
    )
    assert same.base_drift == 0.0 and same.drift_ratio == 0.0 and same.projected_ratio == 0.0
    moved = candidate_features(tiny_adapters["llama"], pair.old, pair.new)
    assert moved.tokens == 512
    assert 0 < moved.drift_ratio and 0 < moved.projected_ratio < moved.drift_ratio
    assert -1.0 <= moved.effect_cosine < 1.0
    assert json.loads(json.dumps(moved.to_dict()))["effect_cosine"] == pytest.approx(moved.effect_cosine)


def test_effect_features_across_a_grown_vocabulary(tiny_pairs, tiny_adapters):
    """Mistral's v0.3-like pair adds 8 tokens: the effects are compared over the 260 shared ones (no crash)."""
    from transformers import AutoTokenizer

    from portllm_edge.forecast import candidate_features
    from portllm_edge.forecast.features import _generic_blocks, _shared_tokens

    pair = tiny_pairs["mistral"]
    ids = _generic_blocks(AutoTokenizer.from_pretrained(pair.old))
    old_cols, new_cols, new_ids = _shared_tokens(pair.old, pair.new, ids)
    assert len(old_cols) == len(new_cols) == 260 and new_ids.equal(ids)  # appended tokens: ids kept
    moved = candidate_features(tiny_adapters["mistral"], pair.old, pair.new)
    assert moved.tokens == 512
    assert 0.99 < moved.effect_cosine < 1.0  # 1 % weight noise barely turns the patch's effect
    assert 0.5 < moved.effect_kept < 1.5
