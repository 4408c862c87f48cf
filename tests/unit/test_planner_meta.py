"""An unknown ``model_type`` is sized from a meta-device build of its config, not as Llama."""

from __future__ import annotations

import pytest
import torch

from portllm_edge.planning import ModelArch, estimate_inference_peak

PHI3 = {
    "model_type": "phi3",
    "hidden_size": 256,
    "num_hidden_layers": 3,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "intermediate_size": 512,
    "vocab_size": 1000,
    "tie_word_embeddings": False,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
}
GPT2 = {"model_type": "gpt2", "n_embd": 128, "n_layer": 2, "n_head": 4, "vocab_size": 500, "n_positions": 256}


def _meta_count(cfg: dict) -> int:
    from transformers import AutoConfig, AutoModelForCausalLM

    c = dict(cfg)
    built = AutoConfig.for_model(c.pop("model_type"), **c)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(built)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("cfg", [PHI3, GPT2], ids=["phi3-fused-qkv", "gpt2-conv1d"])
def test_unknown_model_type_counts_equal_a_meta_device_build(cfg):
    arch = ModelArch.from_config(cfg, "test")
    assert arch.total_params == _meta_count(cfg)
    assert any("meta-device build" in n for n in arch.notes)
    names = {s.name for s in arch.linears()}
    assert names != {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    est = estimate_inference_peak(arch, "nf4", 128, 1, device="cpu")
    assert est.term("weights") == pytest.approx(arch.linear_params / 2, rel=0.01)  # 4-bit: two weights a byte


def test_phi3_fused_projections_are_read_from_the_build():
    arch = ModelArch.from_config(PHI3, "test")
    by = {s.name: s for s in arch.linears()}
    assert (by["qkv_proj"].in_features, by["qkv_proj"].out_features) == (256, 256 + 2 * 128)
    assert (by["gate_up_proj"].in_features, by["gate_up_proj"].out_features) == (256, 2 * 512)
    assert arch.linear_params == 3 * sum(s.numel for s in arch.linears())


def test_llama_keeps_the_arithmetic_path():
    arch = ModelArch.from_config({**PHI3, "model_type": "llama"}, "test")
    assert arch.layer_linears is None and arch.meta_total_params is None
    assert arch.total_params == _meta_count({**PHI3, "model_type": "llama"})
