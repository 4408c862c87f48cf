"""simulate_update_chain: v1 -> v2 -> v3 on a tiny real model, each version knowing its lineage."""

from __future__ import annotations

import json

import pytest

from portllm_edge.errors import ConfigError
from portllm_edge.training.update import DRIFT_FILE, UpdateStage, simulate_update_chain


def test_chain_of_two_updates_records_the_lineage(tiny_pairs, tmp_path):
    from safetensors.torch import load_file

    root = tiny_pairs["llama"].old
    corpus = tmp_path / "prose.txt"
    corpus.write_text(" ".join(f"The ship sailed past island number {i} at dawn." for i in range(200)))
    stages = [UpdateStage(steps=2, learning_rate=1e-3), UpdateStage(steps=3, learning_rate=3e-3)]
    lineage = simulate_update_chain(root, [corpus], tmp_path / "chain", stages, seq_len=32, batch_size=2)
    assert [v.version for v in lineage] == ["v1", "v2", "v3"]
    assert [(v.steps, v.learning_rate) for v in lineage] == [(None, None), (2, 1e-3), (3, 3e-3)]
    v3 = json.loads((tmp_path / "chain" / "v3" / DRIFT_FILE).read_text())
    assert v3["version"] == "v3" and v3["base"] == str(tmp_path / "chain" / "v2")  # v3 trained from v2
    assert [v["path"] for v in v3["lineage"]] == [str(root.resolve())] + [
        str((tmp_path / "chain" / f"v{k}").resolve()) for k in (2, 3)
    ]
    assert v3["lineage"][2]["mean_linear_drift"] == pytest.approx(v3["mean_linear_drift"])
    assert v3["mean_linear_drift"] > 0
    w = "model.layers.0.self_attn.q_proj.weight"
    weights = [
        load_file(p / "model.safetensors")[w]
        for p in (root, tmp_path / "chain" / "v2", tmp_path / "chain" / "v3")
    ]
    assert not weights[0].equal(weights[1]) and not weights[1].equal(weights[2])


def test_chain_refuses_bad_stages_before_training(tiny_pairs, tmp_path):
    root = tiny_pairs["llama"].old
    with pytest.raises(ConfigError, match="at least one stage"):
        simulate_update_chain(root, [tmp_path], tmp_path / "c", [])
    with pytest.raises(ConfigError, match="LR of `--chain` item '1:-1' must be a positive number"):
        simulate_update_chain(root, [tmp_path], tmp_path / "c", [UpdateStage(1, 1e-3), UpdateStage(1, -1.0)])
    assert not (tmp_path / "c").exists()


def test_chain_leaves_a_folder_that_is_not_one_of_its_versions_alone(tiny_pairs, tmp_path):
    """--out/v2 holding the user's own model is refused before any training, unless force."""
    root = tiny_pairs["llama"].old
    mine = tmp_path / "c" / "v2"
    mine.mkdir(parents=True)
    (mine / "NOTE.txt").write_text("mine")
    with pytest.raises(ConfigError, match="already exists \\(not a version of this chain\\)") as err:
        simulate_update_chain(root, [tmp_path], tmp_path / "c", [UpdateStage(1, 1e-3)])
    assert str(mine) in str(err.value) and "--force" in err.value.one_line()
    assert [p.name for p in (tmp_path / "c").iterdir()] == ["v2"]
    assert (mine / "NOTE.txt").read_text() == "mine"
