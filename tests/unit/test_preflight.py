"""Preflight checks: each one passes on a compatible port and fails on an input built to break it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from portllm_edge.porting.preflight import CHECK_NAMES, run_preflight


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    for k, v in changes.items():
        if v is _DELETE:
            data.pop(k, None)
        else:
            data[k] = v
    path.write_text(json.dumps(data))


_DELETE = object()


def rename_adapter_keys(adapter: Path, rename) -> None:
    """Rewrite adapter_model.safetensors with ``rename(key) -> new key`` (None drops the key)."""
    from safetensors.torch import load_file, save_file

    f = adapter / "adapter_model.safetensors"
    tensors = load_file(f)
    out = {}
    for k, v in tensors.items():
        nk = rename(k)
        if nk is not None:
            out[nk] = v
    save_file(out, f, metadata={"format": "pt"})


def add_adapter_tensor(adapter: Path, key: str, shape) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    f = adapter / "adapter_model.safetensors"
    tensors = load_file(f)
    tensors[key] = torch.zeros(shape)
    save_file(tensors, f, metadata={"format": "pt"})


@pytest.fixture(scope="module")
def narrow_llama(tmp_path_factory, tiny_pairs) -> Path:
    """A tiny llama with hidden size 32 (same tokenizer): the wrong model size for a hidden-64 patch."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    out = tmp_path_factory.mktemp("narrow") / "llama-32"
    cfg = AutoConfig.for_model(
        "llama",
        vocab_size=260,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(out)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_pairs["llama"].new / f, out / f)
    return out


def statuses(report) -> dict[str, str]:
    return {c.name: c.status for c in report.checks}


def test_compatible_port_passes_every_check_and_lists_them_in_order(tiny_pairs, tiny_adapters):
    rep = run_preflight(tiny_adapters["llama"], tiny_pairs["llama"].new, old_base_dir=tiny_pairs["llama"].old)
    assert [c.name for c in rep.checks] == list(CHECK_NAMES)
    assert rep.ok and not rep.needs_rewrite
    assert set(statuses(rep).values()) == {"pass"}
    arch = rep.get("architecture")
    assert "rope_parameters" in arch.details["config_changes"]  # Llama 3 -> 3.1 style change is reported
    assert rep.get("target_modules").details["matched"] == 4
    data = json.loads(json.dumps(rep.to_dict()))
    assert data["ok"] is True and data["counts"] == {"pass": 11, "warn": 0, "fail": 0}


def test_architecture_fails_for_llama_patch_on_qwen2(tiny_pairs, tiny_adapters):
    rep = run_preflight(tiny_adapters["llama"], tiny_pairs["qwen2"].new)
    arch = rep.get("architecture")
    assert arch.status == "fail"
    assert "`llama`" in arch.reason and "`qwen2`" in arch.reason and "model_type" in arch.reason
    assert not rep.ok
    # shapes alone would have let it through: that is why the model type is checked
    assert rep.get("target_modules").status == "pass"


def test_architecture_warns_when_the_patch_base_is_unknown(tmp_path, tiny_pairs, tiny_adapters):
    ad = copy(tiny_adapters["llama"], tmp_path / "a")
    edit_json(ad / "adapter_config.json", base_model_name_or_path="someone/unknown-model")
    assert run_preflight(ad, tiny_pairs["llama"].new).get("architecture").status == "warn"
    edit_json(ad / "adapter_config.json", base_model_name_or_path="meta-llama/Llama-3-8B")
    assert run_preflight(ad, tiny_pairs["llama"].new).get("architecture").status == "pass"


def test_hidden_size_and_shapes_fail_on_a_narrower_model(tiny_adapters, narrow_llama):
    rep = run_preflight(tiny_adapters["llama"], narrow_llama)
    hs = rep.get("hidden_size")
    assert hs.status == "fail"
    assert "64" in hs.reason and "`hidden_size` is 32" in hs.reason
    tm = rep.get("target_modules")
    assert tm.status == "fail"
    assert "model.layers.0.self_attn.q_proj.weight` is [32, 32]" in tm.reason
    assert tm.details["shape_mismatch_count"] == 4


def test_hidden_size_inferred_from_lora_a_when_no_old_config(tmp_path, tiny_adapters, narrow_llama):
    ad = copy(tiny_adapters["llama"], tmp_path / "a")
    edit_json(ad / "adapter_config.json", base_model_name_or_path="org/llama-like")
    hs = run_preflight(ad, narrow_llama).get("hidden_size")
    assert hs.status == "fail" and hs.details["patch_hidden_size"] == 64 and "in-features" in hs.reason


def test_target_modules_fail_when_absent(tmp_path, tiny_pairs, tiny_adapters):
    ad = copy(tiny_adapters["llama"], tmp_path / "a")
    rename_adapter_keys(ad, lambda k: k.replace("q_proj", "qkv_proj"))
    tm = run_preflight(ad, tiny_pairs["llama"].new).get("target_modules")
    assert tm.status == "fail"
    assert tm.details["missing_count"] == 2 and "qkv_proj" in tm.reason


def test_empty_patch_fails(tmp_path, tiny_pairs, tiny_adapters):
    ad = copy(tiny_adapters["llama"], tmp_path / "a")
    rename_adapter_keys(ad, lambda k: None if "lora" in k else k)
    add_adapter_tensor(ad, "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", (4, 64))
    rename_adapter_keys(ad, lambda k: None)
    tm = run_preflight(ad, tiny_pairs["llama"].new).get("target_modules")
    assert tm.status == "fail" and "would do nothing" in tm.reason


def test_rank_fails_when_config_disagrees_with_tensors(tmp_path, tiny_pairs, tiny_adapters):
    ad = copy(tiny_adapters["llama"], tmp_path / "a")
    edit_json(ad / "adapter_config.json", r=8)
    rk = run_preflight(ad, tiny_pairs["llama"].new).get("rank")
    assert rk.status == "fail" and "rank 4" in rk.reason and "r=8" in rk.reason
    # a rank_pattern entry for v_proj that disagrees too
    edit_json(ad / "adapter_config.json", r=4, rank_pattern={"v_proj": 2})
    rk = run_preflight(ad, tiny_pairs["llama"].new).get("rank")
    assert rk.status == "fail" and "v_proj" in rk.reason and "r=2" in rk.reason


def test_modules_to_save_growth_warns_and_shrink_fails(tmp_path, tiny_pairs):
    import factories

    pair = tiny_pairs["mistral"]
    on_old = factories.build_lora_adapter(
        pair.old, tmp_path / "old-mts", modules_to_save=["embed_tokens", "lm_head"]
    )
    grow = run_preflight(on_old, pair.new)
    mts = grow.get("modules_to_save")
    assert mts.status == "warn" and "260 → 268" in mts.reason and grow.ok and grow.needs_rewrite
    on_new = factories.build_lora_adapter(pair.new, tmp_path / "new-mts", modules_to_save=["embed_tokens"])
    shrink = run_preflight(on_new, pair.old)
    mts = shrink.get("modules_to_save")
    assert mts.status == "fail"
    assert "268 vocabulary rows" in mts.reason and "only 260" in mts.reason and "shrink" in mts.reason


def test_modules_to_save_growth_without_old_tokenizer_fails(tmp_path, tiny_pairs):
    import factories

    pair = tiny_pairs["mistral"]
    ad = factories.build_lora_adapter(pair.old, tmp_path / "mts", modules_to_save=["embed_tokens"])
    edit_json(ad / "adapter_config.json", base_model_name_or_path="mistralai/Mistral-7B-v0.2")
    mts = run_preflight(ad, pair.new).get("modules_to_save")
    assert mts.status == "fail" and "--old" in mts.hint
    assert run_preflight(ad, pair.new, old_base_dir=pair.old).get("modules_to_save").status == "warn"


def test_tied_embeddings_config_against_storage(tmp_path, tiny_pairs, tiny_adapters):
    base = copy(tiny_pairs["gemma2"].new, tmp_path / "gemma2")
    ok = run_preflight(tiny_adapters["gemma2"], base).get("tied_embeddings")
    assert ok.status == "pass" and ok.details == {
        "tie_word_embeddings": True,
        "lm_head_stored": False,
        "embedding": "model.embed_tokens.weight",
        "patch_touches": [],
    }
    edit_json(base / "config.json", tie_word_embeddings=False)
    bad = run_preflight(tiny_adapters["gemma2"], base).get("tied_embeddings")
    assert bad.status == "fail" and "lm_head.weight" in bad.reason and "tie_word_embeddings" in bad.hint


def test_tied_embeddings_warns_when_patch_touches_a_tied_embedding(tmp_path, tiny_pairs):
    import factories

    ad = factories.build_lora_adapter(
        tiny_pairs["gemma2"].old, tmp_path / "mts", modules_to_save=["embed_tokens"]
    )
    tied = run_preflight(ad, tiny_pairs["gemma2"].new).get("tied_embeddings")
    assert tied.status == "warn" and "unties" in tied.reason


def test_adapter_keys_normalized_in_both_directions(tmp_path, tiny_pairs, tiny_adapters):
    # no peft prefix, `.default` infix, multimodal wrapper: all normalize onto the text-only base
    ad = copy(tiny_adapters["llama"], tmp_path / "a")
    rename_adapter_keys(
        ad,
        lambda k: k.replace("base_model.model.model.", "model.language_model.").replace(
            "lora_A.weight", "lora_A.default.weight"
        ),
    )
    rep = run_preflight(ad, tiny_pairs["llama"].new)
    keys = rep.get("adapter_keys")
    assert keys.status == "warn" and rep.ok and rep.needs_rewrite
    assert keys.details["with_peft_prefix"] == 0 and keys.details["with_adapter_infix"] == 4
    assert keys.details["wrapper_rewrites"] == ["removed `language_model.` wrapper"]
    assert rep.get("target_modules").status == "pass"
    # and the other direction: a text-only patch onto a base that wraps its text model
    wrapped = copy(tiny_pairs["llama"].new, tmp_path / "wrapped")
    from safetensors.torch import load_file, save_file

    st = load_file(wrapped / "model.safetensors")
    save_file(
        {k.replace("model.", "model.language_model.", 1): v for k, v in st.items()},
        wrapped / "model.safetensors",
        metadata={"format": "pt"},
    )
    rep2 = run_preflight(tiny_adapters["llama"], wrapped)
    assert rep2.get("adapter_keys").details["wrapper_rewrites"] == ["added `language_model.` wrapper"]
    assert rep2.get("target_modules").status == "pass"


def test_adapter_keys_fail_on_unknown_tensors_and_mixed_adapters(tmp_path, tiny_pairs, tiny_adapters):
    ad = copy(tiny_adapters["llama"], tmp_path / "a")
    add_adapter_tensor(ad, "base_model.model.model.layers.0.self_attn.q_proj.hada_w1_a", (4, 64))
    keys = run_preflight(ad, tiny_pairs["llama"].new).get("adapter_keys")
    assert keys.status == "fail" and "hada_w1_a" in keys.reason
    ad2 = copy(tiny_adapters["llama"], tmp_path / "b")
    rename_adapter_keys(
        ad2,
        lambda k: k.replace("q_proj.lora_A.weight", "q_proj.lora_A.other.weight").replace(
            "v_proj.lora_A.weight", "v_proj.lora_A.default.weight"
        ),
    )
    keys = run_preflight(ad2, tiny_pairs["llama"].new).get("adapter_keys")
    assert keys.status == "fail" and "default, other" in keys.reason


def test_adapter_config_unknown_keys_dropped_or_refused(tmp_path, tiny_pairs, tiny_adapters):
    ad = copy(tiny_adapters["llama"], tmp_path / "a")
    edit_json(ad / "adapter_config.json", future_flag=None, future_list=[])
    rep = run_preflight(ad, tiny_pairs["llama"].new)
    cfg = rep.get("adapter_config")
    assert cfg.status == "warn" and cfg.details["dropped"] == ["future_flag", "future_list"]
    assert rep.needs_rewrite
    edit_json(ad / "adapter_config.json", lora_scale_mode="sqrt")
    cfg = run_preflight(ad, tiny_pairs["llama"].new).get("adapter_config")
    assert (
        cfg.status == "fail"
        and "`lora_scale_mode`='sqrt'" in cfg.reason
        and "change the adapter's math" in cfg.reason
    )


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"use_dora": True}, "DoRA"),
        ({"init_lora_weights": "pissa_niter_4"}, "residual base"),
        ({"layer_replication": [[0, 2], [1, 2]]}, "layer_replication"),
    ],
)
def test_additive_fails_for_non_additive_patches(tmp_path, tiny_pairs, tiny_adapters, change, needle):
    ad = copy(tiny_adapters["llama"], tmp_path / "a")
    edit_json(ad / "adapter_config.json", **change)
    add = run_preflight(ad, tiny_pairs["llama"].new).get("additive")
    assert add.status == "fail" and needle in add.reason


def test_a_non_lora_peft_type_is_refused_when_the_config_is_read(tmp_path, tiny_pairs, tiny_adapters):
    from portllm_edge.errors import PatchError

    ad = copy(tiny_adapters["llama"], tmp_path / "a")
    edit_json(ad / "adapter_config.json", peft_type="IA3")
    with pytest.raises(PatchError, match="`peft_type` is 'IA3'; portllm-edge ports LoRA adapters only"):
        run_preflight(ad, tiny_pairs["llama"].new)


def test_tokenizer_lists_added_tokens_and_fails_on_another_tokenizer(tmp_path, tiny_pairs, tiny_adapters):
    tok = run_preflight(tiny_adapters["mistral"], tiny_pairs["mistral"].new).get("tokenizer")
    assert tok.status == "warn"
    assert tok.details["added"] == [
        "[INST2]",
        "[/INST2]",
        "[TOOL_CALLS]",
        "[AVAILABLE_TOOLS]",
        "[/AVAILABLE_TOOLS]",
        "[TOOL_RESULTS]",
        "[/TOOL_RESULTS]",
        "[CONTROL_8]",
    ]
    assert tok.details["removed_count"] == 0 and tok.details["remapped_count"] == 0
    other = copy(tiny_pairs["llama"].new, tmp_path / "other-tok")
    data = json.loads((other / "tokenizer.json").read_text())
    data["model"]["vocab"] = {f"x{k}": v for k, v in data["model"]["vocab"].items()}
    (other / "tokenizer.json").write_text(json.dumps(data))
    tok = run_preflight(tiny_adapters["llama"], other).get("tokenizer")
    assert tok.status == "fail" and "different tokenizer" in tok.reason
    # the 4 special tokens survive (added_tokens); the 256 byte symbols were all renamed
    assert (
        tok.details["removed_count"] == 256
        and tok.details["added_count"] == 260
        and tok.details["shared"] == 4
    )


def test_tokenizer_reports_remapped_tokens(tmp_path, tiny_pairs, tiny_adapters):
    other = copy(tiny_pairs["llama"].new, tmp_path / "swapped")
    data = json.loads((other / "tokenizer.json").read_text())
    vocab = data["model"]["vocab"]
    a, b = "a", "b"
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (other / "tokenizer.json").write_text(json.dumps(data))
    tok = run_preflight(tiny_adapters["llama"], other).get("tokenizer")
    assert tok.status == "warn" and tok.details["remapped_count"] == 2
    assert sorted(t for t, _, _ in tok.details["remapped"]) == ["a", "b"]


def test_preflight_reads_no_base_tensor_data(tiny_pairs, tiny_adapters, monkeypatch):
    """Only the base's headers: safe_open is never called, and no byte past a shard's header is read.

    (The patch's own small file is scanned for NaN/Inf by the `finite` check.)"""
    import safetensors

    from portllm_edge import tensorio

    def refuse(*a, **k):
        raise AssertionError("safe_open called: the preflight must not read tensors")

    monkeypatch.setattr(safetensors, "safe_open", refuse)
    reads: dict[str, int] = {}
    real_open = open

    class Counting:
        def __init__(self, fh, name):
            self.fh, self.name, self.pos = fh, name, 0

        def read(self, n=-1):
            data = self.fh.read(n)
            self.pos += len(data)
            reads[self.name] = max(reads.get(self.name, 0), self.pos)
            return data

        def seek(self, pos, whence=0):
            self.pos = self.fh.seek(pos, whence)
            return self.pos

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    def counting_open(path, mode="r", *a, **k):
        fh = real_open(path, mode, *a, **k)
        return Counting(fh, str(path)) if "b" in mode else fh

    monkeypatch.setattr(tensorio, "open", counting_open, raising=False)
    pair = tiny_pairs["mistral"]
    rep = run_preflight(tiny_adapters["mistral"], pair.new, old_base_dir=pair.old)
    assert rep.ok
    shard = str(pair.new / "model.safetensors")
    header = tensorio.read_safetensors_header(pair.new / "model.safetensors")
    assert reads[shard] == 8 + header.header_size  # the header, not one byte of weights
    assert header.file_size > 100 * reads[shard]
