"""LoRA fine-tuning (the initial patch) and continued pretraining (a simulated update) on tiny real models."""

from __future__ import annotations

import json

import pytest

from portllm_edge.cli import main
from portllm_edge.errors import ConfigError, DataError
from portllm_edge.patches import PatchStore
from portllm_edge.porting.load import load_base_model
from portllm_edge.training.batches import IGNORE_INDEX, chunk_text, encode_pairs
from portllm_edge.training.lora import LoraHyperparams, train_lora
from portllm_edge.training.update import read_corpus, simulate_update

PAIRS = [
    ("Review: great fun\nSentiment:", " positive"),
    ("Review: dull and slow\nSentiment:", " negative"),
] * 8


def test_completion_only_labels(tiny_pairs):
    tok = load_base_model(str(tiny_pairs["llama"].old), "fp32").tokenizer
    (ids, labels), *_ = encode_pairs(tok, PAIRS[:1], max_length=64)
    n_completion = len(tok(" positive", add_special_tokens=False)["input_ids"]) + 1  # + eos
    assert len(ids) == len(labels)
    assert labels[-n_completion:] == ids[-n_completion:]
    assert set(labels[:-n_completion]) == {IGNORE_INDEX}
    (ids_short, labels_short), *_ = encode_pairs(tok, PAIRS[:1], max_length=12)
    assert len(ids_short) == 12 and labels_short[-n_completion:] == ids_short[-n_completion:]


def test_train_lora_lowers_the_loss_and_saves_a_peft_adapter(tiny_pairs, tmp_path):
    loaded = load_base_model(str(tiny_pairs["qwen2"].old), "fp32")
    hp = LoraHyperparams(
        r=4,
        lora_alpha=8,
        target_modules=("q_proj", "v_proj"),
        max_steps=30,
        learning_rate=3e-2,
        batch_size=4,
        lora_dropout=0.0,
    )
    res = train_lora(
        loaded.model, loaded.tokenizer, PAIRS, hp, tmp_path / "a", base_model_name_or_path="tiny-qwen"
    )
    assert res.steps == 30 and len(res.losses) == 30
    assert sum(res.losses[-5:]) / 5 < sum(res.losses[:5]) / 5 - 0.25  # nats; uniform over 260 tokens = 5.56
    cfg = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert (cfg["r"], cfg["lora_alpha"], sorted(cfg["target_modules"])) == (4, 8, ["q_proj", "v_proj"])
    assert cfg["base_model_name_or_path"] == "tiny-qwen"
    # r × (in + out) per module, q and v, 2 layers: q 64->64, v 64->32 (GQA with 2 KV heads of 16)
    assert res.trainable_parameters == 2 * (4 * (64 + 64) + 4 * (64 + 32))


def test_hyperparameter_errors_name_the_field():
    with pytest.raises(ConfigError, match="`r`"):
        LoraHyperparams(r=0)
    with pytest.raises(ConfigError, match="`learning_rate`"):
        LoraHyperparams(learning_rate=float("nan"))
    with pytest.raises(ConfigError, match="`target_modules`"):
        LoraHyperparams(target_modules=())


def test_unknown_target_module(tiny_pairs, tmp_path):
    loaded = load_base_model(str(tiny_pairs["llama"].old), "fp32")
    with pytest.raises(ConfigError) as err:
        train_lora(
            loaded.model, loaded.tokenizer, PAIRS, LoraHyperparams(target_modules=("qkv_proj",)), tmp_path
        )
    assert "qkv_proj" in err.value.message and "q_proj" in (err.value.hint or "")


def test_simulate_update_records_drift_and_perplexity(tiny_pairs, tmp_path, shared_data):
    corpus = shared_data / "gutenberg" / "pg120.txt"
    res = simulate_update(
        tiny_pairs["llama"].old,
        [corpus],
        tmp_path / "v2",
        steps=3,
        seq_len=32,
        batch_size=2,
        learning_rate=1e-3,
    )
    assert res.steps == 3 and len(res.losses) == 3
    assert res.perplexity_before > 1 and res.perplexity_after > 1
    proj = {k: v for k, v in res.drift.items() if k.endswith("proj")}
    assert len(proj) == 2 * 7  # every linear of 2 layers moved
    assert all(v > 0 for v in proj.values())
    assert res.mean_linear_drift == pytest.approx(sum(proj.values()) / len(proj))
    meta = json.loads((tmp_path / "v2" / "portllm_update.json").read_text())
    assert meta["steps"] == 3 and meta["mean_linear_drift"] == pytest.approx(res.mean_linear_drift)
    assert (tmp_path / "v2" / "model.safetensors").is_file() and (
        tmp_path / "v2" / "tokenizer.json"
    ).is_file()
    with pytest.raises(FileExistsError):
        simulate_update(tiny_pairs["llama"].old, [corpus], tmp_path / "v2", steps=1)


def test_corpus_errors(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_corpus([tmp_path / "missing"])
    (tmp_path / "empty.txt").write_text("   \n")
    with pytest.raises(DataError, match="no text found"):
        read_corpus([tmp_path])


def test_chunk_text_stops_early(tiny_pairs):
    tok = load_base_model(str(tiny_pairs["llama"].old), "fp32").tokenizer
    blocks = chunk_text(tok, ["abcdefghij" * 10_000], seq_len=16, max_blocks=5)
    assert len(blocks) == 5 and all(len(b) == 16 for b in blocks)


def test_train_cli_stores_patch_with_lineage(tiny_pairs, shared_data, capsys):
    code = main(
        [
            "train",
            "--base",
            str(tiny_pairs["gemma2"].old),
            "--task",
            "sst2",
            "--data",
            str(shared_data / "sst2" / "train.tsv"),
            "--name",
            "sst2-gemma",
            "--limit",
            "16",
            "--max-steps",
            "2",
            "--batch-size",
            "4",
            "--r",
            "4",
            "--lora-alpha",
            "8",
            "--target-modules",
            "q_proj,v_proj",
        ]
    )
    assert code == 0, capsys.readouterr().err
    m = PatchStore().get("sst2-gemma").manifest
    assert m.task == "sst2" and m.adapter.r == 4 and m.adapter.lora_alpha == 8
    assert m.source_base.fingerprint.startswith("w1:")
    assert m.lineage[0].kind == "train" and m.lineage[0].precision == "fp32"


def test_train_scores_a_heldout_slice_and_warns_when_nothing_was_learned(tiny_pairs, shared_data, capsys):
    """A patch that learned nothing says so: held-out accuracy before/after, and a hint."""
    from portllm_edge.history import list_runs

    argv = ["train", "--base", str(tiny_pairs["llama"].old), "--task", "sst2"]
    argv += ["--data", str(shared_data / "sst2" / "train.tsv"), "--name", "flat", "--limit", "30"]
    code = main([*argv, "--max-steps", "1", "--batch-size", "4", "--lr", "1e-12"])
    cap = capsys.readouterr()
    assert code == 0, cap.err
    text = cap.out + cap.err
    assert "on 24 examples" in text and "held-out check (6 training examples not trained on)" in text
    assert "gain +0.000" in text
    assert "learned nothing" in text and "--max-steps" in text and "--lr" in text
    (run,) = list_runs("train")
    assert run.status == "ok" and run.results["examples"] == 24
    assert run.results["heldout_before"]["n"] == 6 and run.results["heldout_gain"] == 0.0
