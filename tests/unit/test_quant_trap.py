"""The bitsandbytes CPU repacking trap (bitsandbytes 0.50 on AVX512-BF16 CPUs), on real bitsandbytes."""

from __future__ import annotations

import pytest
import torch

from portllm_edge.errors import PortingError
from portllm_edge.porting import quant
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


def test_repacking_would_corrupt_a_merge_and_is_refused(tiny_pairs):
    if not _has_avx512bf16():
        pytest.skip("this CPU has no AVX512-BF16, so bitsandbytes never repacks")
    import bitsandbytes.functional as F

    loaded = load_base_model(str(tiny_pairs["llama"].new), "nf4", device="cpu")
    mod = loaded.model.model.layers[0].self_attn.q_proj
    before = F.dequantize_4bit(mod.weight.data, mod.weight.quant_state).clone()
    _forward(loaded)
    assert len(quant.repacked_modules(loaded.model)) == 14  # 7 linears x 2 layers
    naive = F.dequantize_4bit(mod.weight.data, mod.weight.quant_state)
    assert naive.shape != before.shape or not torch.equal(naive, before)  # the trap
    with pytest.raises(PortingError, match="repacked"):
        quant.dequantize_4bit_weight(mod, name="layers.0.q_proj")
    # bitsandbytes' inverse is lossy (absmax went through bf16): not exact, so never merge after it.
    quant.restore_4bit_layout(loaded.model)
    restored = F.dequantize_4bit(mod.weight.data, mod.weight.quant_state)
    assert restored.shape == before.shape
    assert 0 < float((restored - before).abs().max()) < 1e-2


def test_cpu_repack_off_keeps_exact_weights(tiny_pairs):
    import bitsandbytes.functional as F

    loaded = load_base_model(str(tiny_pairs["llama"].new), "nf4", device="cpu", cpu_repack=False)
    mod = loaded.model.model.layers[1].mlp.down_proj
    before = F.dequantize_4bit(mod.weight.data, mod.weight.quant_state).clone()
    _forward(loaded)
    assert quant.repacked_modules(loaded.model) == []
    assert torch.equal(quant.dequantize_4bit_weight(mod), before)


def test_merge_into_quantized_model_is_refused(tiny_pairs):
    loaded = load_base_model(str(tiny_pairs["qwen2"].new), "nf4", device="cpu")
    assert quant.is_quantized(loaded.model)
    with pytest.raises(PortingError) as err:
        quant.refuse_merge_into_quantized(loaded.model)
    assert "--merge-to" in (err.value.hint or "")
    fp32 = load_base_model(str(tiny_pairs["qwen2"].new), "fp32", device="cpu")
    quant.refuse_merge_into_quantized(fp32.model)  # no error for dense weights
