"""The bitsandbytes CPU repacking trap (bitsandbytes 0.50 on AVX512-BF16 CPUs), on real bitsandbytes."""

from __future__ import annotations

import pytest
import torch

from portllm_edge.porting.load import load_base_model


def _has_avx512bf16() -> bool:
    try:
        from bitsandbytes.functional import has_avx512bf16

        return bool(has_avx512bf16())
    except Exception:
        return False


def _forward(loaded):
    enc = loaded.tokenizer("hello there", return_tensors="pt")
    with torch.no_grad():
        loaded.model(**enc)


def _repacked(model) -> int:
    import bitsandbytes as bnb

    return sum(
        bool(getattr(getattr(m.weight, "quant_state", None), "packing_format_for_cpu", False))
        for m in model.modules()
        if isinstance(m, bnb.nn.Linear4bit)
    )


def test_a_forward_pass_repacks_4bit_weights_so_they_no_longer_dequantize(tiny_pairs):
    """Why the merge never reads 4-bit weights: after one CPU forward, the bytes are not NF4 any more."""
    if not _has_avx512bf16():
        pytest.skip("this CPU has no AVX512-BF16, so bitsandbytes never repacks")
    import bitsandbytes.functional as F

    loaded = load_base_model(str(tiny_pairs["llama"].new), "nf4", device="cpu")
    mod = loaded.model.model.layers[0].self_attn.q_proj
    before = F.dequantize_4bit(mod.weight.data, mod.weight.quant_state).clone()
    _forward(loaded)
    assert _repacked(loaded.model) == 14  # 7 linears x 2 layers
    naive = F.dequantize_4bit(mod.weight.data, mod.weight.quant_state)
    assert naive.shape != before.shape or not torch.equal(naive, before)


def test_cpu_repack_off_keeps_exact_weights(tiny_pairs):
    import bitsandbytes.functional as F

    loaded = load_base_model(str(tiny_pairs["llama"].new), "nf4", device="cpu", cpu_repack=False)
    mod = loaded.model.model.layers[1].mlp.down_proj
    before = F.dequantize_4bit(mod.weight.data, mod.weight.quant_state).clone()
    _forward(loaded)
    assert _repacked(loaded.model) == 0
    assert torch.equal(F.dequantize_4bit(mod.weight.data, mod.weight.quant_state), before)
