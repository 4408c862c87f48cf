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
    for m in loaded.model.modules():  # what bitsandbytes does unless load_base_model switches it off
        if hasattr(m, "support_avx512bf16_for_cpu"):
            m.support_avx512bf16_for_cpu = True
    mod = loaded.model.model.layers[0].self_attn.q_proj
    before = F.dequantize_4bit(mod.weight.data, mod.weight.quant_state).clone()
    _forward(loaded)
    assert _repacked(loaded.model) == 14  # 7 linears x 2 layers
    naive = F.dequantize_4bit(mod.weight.data, mod.weight.quant_state)
    assert naive.shape != before.shape or not torch.equal(naive, before)


def test_every_nf4_load_keeps_exact_weights(tiny_pairs):
    import bitsandbytes.functional as F

    loaded = load_base_model(str(tiny_pairs["llama"].new), "nf4", device="cpu")
    mod = loaded.model.model.layers[1].mlp.down_proj
    before = F.dequantize_4bit(mod.weight.data, mod.weight.quant_state).clone()
    _forward(loaded)
    assert _repacked(loaded.model) == 0
    assert torch.equal(F.dequantize_4bit(mod.weight.data, mod.weight.quant_state), before)


def test_single_port_at_nf4_matches_an_oracle_on_the_dequantized_weights(tiny_pairs, tiny_adapters):
    """attach_patch after load_base_model(nf4) == peft on an fp32 model holding NF4-rounded weights.

    The oracle quantizes each fp32 weight itself (bitsandbytes' ``quantize_4bit``, NF4, blocksize 64,
    double quant: the load's settings) and never goes through ``load_base_model``.
    """
    import bitsandbytes.functional as F
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from portllm_edge.porting.attach import attach_patch, probe_logits

    new = tiny_pairs["llama"].new
    loaded = load_base_model(str(new), "nf4", device="cpu", quantized_cache=False)
    assert loaded.unquantized_dtype == "fp32"  # the tiny checkpoint is fp32: no 16-bit residual stream
    ported = attach_patch(loaded.model, loaded.tokenizer, tiny_adapters["llama"])
    got = probe_logits(ported.model, loaded.tokenizer)

    oracle = AutoModelForCausalLM.from_pretrained(new, dtype=torch.float32)
    linears = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    count = 0
    for name, mod in oracle.named_modules():
        if name.rsplit(".", 1)[-1] in linears:
            q, state = F.quantize_4bit(
                mod.weight.data, blocksize=64, quant_type="nf4", compress_statistics=True
            )
            mod.weight.data = F.dequantize_4bit(q, state).reshape(mod.weight.shape).float()
            count += 1
    assert count == 14
    want = probe_logits(
        PeftModel.from_pretrained(oracle, str(tiny_adapters["llama"])).eval(), loaded.tokenizer
    )
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max().item()
    assert _repacked(ported.model) == 0
    assert ported.report.max_abs_logit_change > 1e-3  # the patch changes the output (not a no-op compare)


def test_attach_refuses_a_repacked_base(tiny_pairs, tiny_adapters):
    if not _has_avx512bf16():
        pytest.skip("this CPU has no AVX512-BF16, so bitsandbytes never repacks")
    from portllm_edge.errors import PortingError
    from portllm_edge.porting.attach import attach_patch

    loaded = load_base_model(str(tiny_pairs["llama"].new), "nf4", device="cpu", quantized_cache=False)
    for m in loaded.model.modules():
        if hasattr(m, "support_avx512bf16_for_cpu"):
            m.support_avx512bf16_for_cpu = True
    _forward(loaded)
    with pytest.raises(PortingError, match="repacked by a CPU forward pass"):
        attach_patch(loaded.model, loaded.tokenizer, tiny_adapters["llama"])


def test_freed_buffers_go_back_to_the_os_on_glibc():
    import platform

    from portllm_edge.porting.load import return_freed_buffers_to_os

    expected = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert return_freed_buffers_to_os() is expected
