"""Vocabulary comparison and carrying embedding/lm_head rows over by token string."""

from __future__ import annotations

import json
import shutil

import pytest

from portllm_edge.errors import CompatibilityError
from portllm_edge.porting.tensor_plan import TensorDecision, token_pairs
from portllm_edge.porting.vocab import carry_tokens, compare_vocabs, port_adapter, read_vocab


def test_compare_vocabs_counts_added_removed_remapped():
    old = {"a": 0, "b": 1, "c": 2, "gone": 3}
    new = {"a": 0, "c": 1, "b": 2, "new1": 3, "new2": 4}
    diff = compare_vocabs(old, new)
    assert (diff.shared, diff.added_count, diff.removed_count, diff.remapped_count) == (3, 2, 1, 2)
    assert diff.added == ["new1", "new2"] and diff.removed == ["gone"]
    assert diff.remapped == [("b", 1, 2), ("c", 2, 1)]
    assert not diff.same and compare_vocabs(old, dict(old)).same


def test_token_pairs_and_carry_tokens_by_token_string():
    import torch

    old = {"a": 0, "b": 1, "c": 2}
    new = {"c": 0, "a": 1, "z": 2, "b": 3}
    pairs = tuple(token_pairs(old, new, old_size=3, new_size=4))
    assert pairs == ((2, 0), (0, 1), (1, 3))
    patch = torch.tensor([[1.0], [2.0], [3.0]])
    base = torch.tensor([[10.0], [20.0], [30.0], [40.0]])
    rows = TensorDecision("k", "carry", "", axis=0, old_size=3, new_size=4, pairs=pairs, fill="base")
    out = carry_tokens(patch, rows, base)
    assert out.flatten().tolist() == [3.0, 1.0, 30.0, 2.0]  # z keeps the base row
    assert base.flatten().tolist() == [10.0, 20.0, 30.0, 40.0]  # not modified in place
    cols = TensorDecision("k", "carry", "", axis=1, old_size=3, new_size=4, pairs=pairs, fill="zero")
    out = carry_tokens(patch.T, cols)  # a LoRA factor [r, vocab]: columns follow the tokens, z gets 0
    assert out.flatten().tolist() == [3.0, 1.0, 0.0, 2.0]


def test_read_vocab_includes_added_tokens(tiny_pairs):
    vocab = read_vocab(tiny_pairs["mistral"].new)
    assert len(vocab) == 268 and vocab["<s>"] == 1 and vocab["[CONTROL_8]"] == 267


def test_port_adapter_carries_rows_into_a_grown_vocabulary(tmp_path, tiny_pairs):
    import factories
    from safetensors import safe_open

    pair = tiny_pairs["mistral"]
    ad = factories.build_lora_adapter(pair.old, tmp_path / "mts", modules_to_save=["embed_tokens", "lm_head"])
    res = port_adapter(ad, pair.new, tmp_path / "ported")
    assert [(r.tensor, r.old_rows, r.new_rows, r.carried, r.from_base) for r in res.rows] == [
        ("lm_head.weight", 260, 268, 260, 8),
        ("model.embed_tokens.weight", 260, 268, 260, 8),
    ]
    assert res.rows_carried == 520
    with safe_open(str(ad / "adapter_model.safetensors"), "pt") as f:
        patch_emb = f.get_tensor("base_model.model.model.embed_tokens.weight")
    with safe_open(str(pair.new / "model.safetensors"), "pt") as f:
        base_emb = f.get_tensor("model.embed_tokens.weight")
    with safe_open(str(tmp_path / "ported" / "adapter_model.safetensors"), "pt") as f:
        ported = f.get_tensor("base_model.model.model.embed_tokens.weight")
        lora_keys = [k for k in f.keys() if "lora_" in k]
    assert ported.shape == (268, 64)
    assert ported[:260].equal(
        patch_emb
    )  # shared tokens: the patch's rows (ids are kept in v0.3 style growth)
    assert ported[260:].equal(base_emb[260:])  # the 8 new tokens: the new base's rows
    assert len(lora_keys) == 8
    cfg = json.loads((tmp_path / "ported" / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(pair.new)


def test_port_adapter_never_shrinks(tmp_path, tiny_pairs):
    import factories

    pair = tiny_pairs["mistral"]
    ad = factories.build_lora_adapter(pair.new, tmp_path / "mts", modules_to_save=["embed_tokens"])
    with pytest.raises(CompatibilityError, match="never shrinks"):
        port_adapter(ad, pair.old, tmp_path / "ported")
    assert not (tmp_path / "ported").exists()


def test_port_adapter_remaps_rows_when_ids_move(tmp_path, tiny_pairs):
    """Same row count, two tokens swapped in the new tokenizer: their rows follow the token strings."""
    import factories
    from safetensors import safe_open

    pair = tiny_pairs["llama"]
    new = tmp_path / "swapped"
    shutil.copytree(pair.new, new)
    data = json.loads((new / "tokenizer.json").read_text())
    vocab = data["model"]["vocab"]
    ia, ib = vocab["a"], vocab["b"]
    vocab["a"], vocab["b"] = ib, ia
    (new / "tokenizer.json").write_text(json.dumps(data))
    ad = factories.build_lora_adapter(pair.old, tmp_path / "mts", modules_to_save=["embed_tokens"])
    res = port_adapter(ad, new, tmp_path / "ported")
    assert res.rows[0].carried == 260
    with safe_open(str(ad / "adapter_model.safetensors"), "pt") as f:
        patch_emb = f.get_tensor("base_model.model.model.embed_tokens.weight")
    with safe_open(str(tmp_path / "ported" / "adapter_model.safetensors"), "pt") as f:
        ported = f.get_tensor("base_model.model.model.embed_tokens.weight")
    assert ported[ib].equal(patch_emb[ia]) and ported[ia].equal(patch_emb[ib])
