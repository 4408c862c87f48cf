"""Exact streaming merge: merged logits equal the unmerged peft port (fp32, ≤ 1e-4 relative), refusals, atomicity."""

from __future__ import annotations

import json
import shutil
from collections import namedtuple
from pathlib import Path

import pytest

from portllm_edge.errors import PortingError
from portllm_edge.porting.merge import f32_to_bf16_bits, stream_merge
from portllm_edge.porting.preflight import prepare_adapter

REL_TOL = 1e-4
"""fp32 tolerance: max |merged − unmerged| / max |unmerged| over the logits."""

Compared = namedtuple("Compared", "merged attached base")


def _ids():
    import torch

    return torch.randint(4, 260, (2, 12), generator=torch.Generator().manual_seed(0))


def compare(adapter: Path, base: Path, merged: Path, work: Path) -> Compared:
    """Logits of the merged model, of the unmerged peft port (PeftModel.from_pretrained, fp32) and of the base."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ids = _ids()
    attach_dir = prepare_adapter(adapter, base, work)
    base_model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    with torch.no_grad():
        base_logits = base_model(ids).logits
        attached = PeftModel.from_pretrained(base_model, attach_dir).eval()(ids).logits
        merged_logits = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()(ids).logits
    return Compared(merged_logits, attached, base_logits)


def rel(a, b) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("family", ["llama", "mistral", "gemma2", "qwen2"])
def test_merged_logits_equal_unmerged_port(family, tiny_pairs, tiny_adapters, tmp_path):
    pair = tiny_pairs[family]
    res = stream_merge(tiny_adapters[family], pair.new, tmp_path / "merged", dtype="fp32")
    assert res.merged_modules == 4 and res.replaced_tensors == [] and not res.untied
    c = compare(tiny_adapters[family], pair.new, tmp_path / "merged", tmp_path / "work")
    assert rel(c.merged, c.attached) <= REL_TOL
    assert rel(c.attached, c.base) > 0.01  # the patch does something
    files = sorted(p.name for p in (tmp_path / "merged").iterdir())
    assert "model.safetensors" in files and "tokenizer.json" in files and "portllm_merge.json" in files
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_merge_defaults_to_the_base_stored_dtype(tiny_pairs, tiny_adapters, tmp_path):
    """An fp32 base merges to fp32 by default (a bf16 default rounded it: 2.9e-3 relative logit error)."""
    from portllm_edge.tensorio import read_safetensors_header

    pair = tiny_pairs["llama"]
    res = stream_merge(tiny_adapters["llama"], pair.new, tmp_path / "merged")
    assert res.dtype == "fp32"
    header = read_safetensors_header(tmp_path / "merged" / "model.safetensors")
    assert {t.dtype for t in header.values()} == {"F32"}
    assert json.loads((tmp_path / "merged" / "config.json").read_text())["dtype"] == "float32"
    c = compare(tiny_adapters["llama"], pair.new, tmp_path / "merged", tmp_path / "work")
    assert rel(c.merged, c.attached) <= REL_TOL


def test_merge_carries_vocabulary_rows_on_growth(tiny_pairs, tmp_path):
    import factories

    pair = tiny_pairs["mistral"]
    ad = factories.build_lora_adapter(pair.old, tmp_path / "mts", modules_to_save=["embed_tokens", "lm_head"])
    res = stream_merge(ad, pair.new, tmp_path / "merged", dtype="fp32")
    assert res.rows_carried == 520 and sorted(res.replaced_tensors) == [
        "lm_head.weight",
        "model.embed_tokens.weight",
    ]
    c = compare(ad, pair.new, tmp_path / "merged", tmp_path / "work")
    assert c.merged.shape[-1] == 268
    assert rel(c.merged, c.attached) <= REL_TOL


def test_merge_unties_a_tied_embedding_the_patch_modifies(tiny_pairs, tmp_path):
    import factories

    pair = tiny_pairs["gemma2"]
    ad = factories.build_lora_adapter(pair.old, tmp_path / "mts", modules_to_save=["embed_tokens"])
    res = stream_merge(ad, pair.new, tmp_path / "merged", dtype="fp32")
    assert res.untied and any("untied" in n for n in res.notes)
    cfg = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert cfg["tie_word_embeddings"] is False
    c = compare(ad, pair.new, tmp_path / "merged", tmp_path / "work")
    assert rel(c.merged, c.attached) <= REL_TOL


def test_merge_keeps_tying_when_the_patch_leaves_embeddings_alone(tiny_pairs, tiny_adapters, tmp_path):
    pair = tiny_pairs["gemma2"]
    res = stream_merge(tiny_adapters["gemma2"], pair.new, tmp_path / "plain", dtype="fp32")
    assert not res.untied
    assert json.loads((tmp_path / "plain" / "config.json").read_text())["tie_word_embeddings"] is True
    from safetensors import safe_open

    with safe_open(str(tmp_path / "plain" / "model.safetensors"), "pt") as f:
        assert "lm_head.weight" not in f.keys()


def test_merge_handles_lora_on_a_tied_embedding(tiny_pairs, tmp_path):
    """LoRA on embed_tokens (peft also saves the old base's embedding: it must be ignored)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    pair = tiny_pairs["gemma2"]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(pair.old, dtype=torch.float32)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "embed_tokens"], init_lora_weights=False)
    get_peft_model(model, cfg).save_pretrained(tmp_path / "emb-lora")
    res = stream_merge(tmp_path / "emb-lora", pair.new, tmp_path / "merged", dtype="fp32")
    assert res.untied and res.merged_modules == 3
    assert any("old base" in n for n in res.notes)
    c = compare(tmp_path / "emb-lora", pair.new, tmp_path / "merged", tmp_path / "work")
    assert rel(c.merged, c.attached) <= REL_TOL


def test_bf16_merge_writes_bf16_and_rounds_like_torch(tiny_pairs, tiny_adapters, tmp_path):
    import numpy as np
    import torch

    x = torch.randn(10000) * 3
    x[:6] = torch.tensor([float("inf"), -float("inf"), float("nan"), 0.0, -0.0, 3.3895314e38])
    ours = f32_to_bf16_bits(x.numpy())
    theirs = x.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    nan = np.isnan(x.numpy())
    assert (ours[~nan] == theirs[~nan]).all() and np.isnan(
        torch.from_numpy(ours.astype(np.int16)).view(torch.bfloat16).float().numpy()[nan]
    ).all()

    pair = tiny_pairs["qwen2"]
    res = stream_merge(tiny_adapters["qwen2"], pair.new, tmp_path / "bf16", dtype="bf16")
    from portllm_edge.tensorio import read_safetensors_header

    header = read_safetensors_header(tmp_path / "bf16" / "model.safetensors")
    assert {t.dtype for t in header.values()} == {"BF16"}
    assert res.bytes_written == header.payload_bytes
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["dtype"] == "bfloat16"
    c = compare(tiny_adapters["qwen2"], pair.new, tmp_path / "bf16", tmp_path / "work")
    assert rel(c.merged, c.attached) <= 2e-2  # bf16 keeps 8 bits of mantissa


def test_sharded_base_is_merged_shard_by_shard(tiny_pairs, tiny_adapters, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    pair = tiny_pairs["llama"]
    sharded = tmp_path / "sharded"
    AutoModelForCausalLM.from_pretrained(pair.new, dtype=torch.float32).save_pretrained(
        sharded, max_shard_size="40KB"
    )
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(pair.new / f, sharded / f)
    shards = sorted(p.name for p in sharded.glob("*.safetensors"))
    assert len(shards) > 2
    stream_merge(tiny_adapters["llama"], sharded, tmp_path / "merged", dtype="fp32")
    assert sorted(p.name for p in (tmp_path / "merged").glob("*.safetensors")) == shards
    index = json.loads((tmp_path / "merged" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(shards)
    c = compare(tiny_adapters["llama"], sharded, tmp_path / "merged", tmp_path / "work")
    assert rel(c.merged, c.attached) <= REL_TOL


def test_refuses_quantized_bases(tiny_pairs, tiny_adapters, tmp_path):
    base = tmp_path / "q"
    shutil.copytree(tiny_pairs["llama"].new, base)
    cfg = json.loads((base / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (base / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(PortingError, match="refusing to merge into quantized weights") as exc:
        stream_merge(tiny_adapters["llama"], base, tmp_path / "out")
    assert "quantize the merged model as a separate step" in exc.value.hint
    assert not (tmp_path / "out").exists()


def test_refuses_bnb_side_tensors_without_config(tiny_pairs, tiny_adapters, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    base = tmp_path / "q"
    shutil.copytree(tiny_pairs["llama"].new, base)
    st = load_file(base / "model.safetensors")
    st["model.layers.0.self_attn.q_proj.weight.absmax"] = torch.ones(4)
    save_file(st, base / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(PortingError, match=r"q_proj.weight.absmax"):
        stream_merge(tiny_adapters["llama"], base, tmp_path / "out")


def test_refuses_dora(tiny_pairs, tiny_adapters, tmp_path):
    ad = tmp_path / "dora"
    shutil.copytree(tiny_adapters["llama"], ad)
    cfg = json.loads((ad / "adapter_config.json").read_text())
    cfg["use_dora"] = True
    (ad / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(PortingError, match="DoRA"):
        stream_merge(ad, tiny_pairs["llama"].new, tmp_path / "out")


def test_checks_free_disk_space_first(tiny_pairs, tiny_adapters, tmp_path, monkeypatch):
    from portllm_edge.porting import merge

    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(merge.shutil, "disk_usage", lambda p: Usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(PortingError, match="not enough free disk space") as exc:
        stream_merge(tiny_adapters["llama"], tiny_pairs["llama"].new, tmp_path / "out", dtype="fp32")
    assert "have 1000 B" in exc.value.message and "--dtype bf16" in exc.value.hint
    assert list(tmp_path.iterdir()) == []


def test_failure_mid_write_leaves_nothing(tiny_pairs, tiny_adapters, tmp_path, monkeypatch):
    from portllm_edge.porting import merge

    def boom(*a, **k):
        raise RuntimeError("disk vanished")

    monkeypatch.setattr(merge, "_encode", boom)
    with pytest.raises(RuntimeError):
        stream_merge(tiny_adapters["llama"], tiny_pairs["llama"].new, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_refused(tiny_pairs, tiny_adapters, tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(PortingError, match="already exists"):
        stream_merge(tiny_adapters["llama"], tiny_pairs["llama"].new, tmp_path / "out")


def test_cli_merge_refuses_an_incompatible_patch(tiny_pairs, tiny_adapters, tmp_path, capsys):
    from portllm_edge.cli import main

    code = main(
        [
            "merge",
            str(tiny_adapters["llama"]),
            "--base",
            str(tiny_pairs["qwen2"].new),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "`architecture`" in err and "Fix:" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
    code = main(
        [
            "merge",
            str(tiny_adapters["llama"]),
            "--base",
            str(tiny_pairs["llama"].new),
            "--out",
            str(tmp_path / "out"),
            "--dtype",
            "fp32",
        ]
    )
    assert code == 0 and "merged 4 LoRA modules" in capsys.readouterr().out


def test_merge_stream_yields_the_rows_stream_merge_writes(tiny_pairs, tiny_adapters, tmp_path):
    import numpy as np
    from safetensors.numpy import load_file

    from portllm_edge.porting.merge import MergeStream

    pair = tiny_pairs["llama"]
    stream_merge(tiny_adapters["llama"], pair.new, tmp_path / "merged", dtype="fp32")
    written = load_file(str(tmp_path / "merged" / "model.safetensors"))
    with MergeStream(tiny_adapters["llama"], pair.new) as ms:
        tensors = {t.name: t for t in ms.tensors}
        assert set(tensors) == set(written)
        assert tensors["model.layers.0.self_attn.q_proj.weight"].patched
        assert not tensors["model.layers.0.self_attn.k_proj.weight"].patched
        for name in written:
            rows = np.concatenate([b for _, _, b in ms.blocks(name)])
            assert rows.shape == tensors[name].shape
            np.testing.assert_array_equal(rows, written[name])
