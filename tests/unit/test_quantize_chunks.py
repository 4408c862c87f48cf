"""Slice-by-slice 4-bit quantization on CPU gives bitsandbytes' bytes (real bitsandbytes, no fakes)."""

from __future__ import annotations

import pytest
import torch

from portllm_edge.porting.load import bitsandbytes_available
from portllm_edge.porting.quant import chunked_4bit_quantization, quantize_4bit_in_chunks

pytestmark = pytest.mark.skipif(
    not bitsandbytes_available("cpu"), reason="bitsandbytes can't run on this CPU"
)


def _state_tensors(state) -> dict[str, torch.Tensor]:
    out = {"absmax": state.absmax, "code": state.code}
    if state.nested:
        out.update(offset=state.offset, absmax2=state.state2.absmax, code2=state.state2.code)
    return out


@pytest.mark.parametrize("double_quant", [True, False])
@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
@pytest.mark.parametrize(("shape", "dtype"), [((96, 300), torch.bfloat16), ((4099, 7), torch.float32)])
def test_chunked_quantization_equals_one_call(shape, dtype, quant_type, double_quant):
    """Three and a half slices, a partial last block (n % 64 != 0) and an odd n: the same bytes."""
    import bitsandbytes.functional as F

    weight = torch.randn(*shape, generator=torch.Generator().manual_seed(0)).to(dtype)
    want, want_state = F.quantize_4bit(
        weight, blocksize=64, compress_statistics=double_quant, quant_type=quant_type
    )
    chunked = quantize_4bit_in_chunks(F.quantize_4bit, chunk=8192)
    got, state = chunked(weight, blocksize=64, compress_statistics=double_quant, quant_type=quant_type)
    assert weight.numel() > 3 * 8192
    assert got.dtype == want.dtype and got.shape == want.shape and torch.equal(got, want)
    assert state.shape == want_state.shape and state.dtype == want_state.dtype == dtype
    assert (state.blocksize, state.quant_type, state.nested) == (64, quant_type, double_quant)
    expected = _state_tensors(want_state)
    for key, value in _state_tensors(state).items():
        assert torch.equal(value, expected[key]), key
    assert torch.equal(F.dequantize_4bit(got, state), F.dequantize_4bit(want, want_state))


def test_context_swaps_the_function_for_params4bit_and_restores_it(tiny_pairs):
    import bitsandbytes.functional as F

    from portllm_edge.porting.load import load_base_model

    original = F.quantize_4bit
    base = str(tiny_pairs["llama"].new)
    plain = load_base_model(base, "nf4", device="cpu", quantized_cache=False)
    with chunked_4bit_quantization(chunk=1024) as active:
        assert active and F.quantize_4bit is not original
        sliced = load_base_model(base, "nf4", device="cpu", quantized_cache=False)
    assert F.quantize_4bit is original
    a, b = dict(plain.model.named_parameters()), dict(sliced.model.named_parameters())
    big = [n for n, p in a.items() if getattr(p, "quant_state", None) and p.quant_state.shape.numel() > 1024]
    assert big  # the tiny Llama has 4-bit weights larger than one slice
    for name in a:
        assert torch.equal(a[name].data, b[name].data), name
