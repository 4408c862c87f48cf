"""The quantized copy of a base in the model store: saved before any forward pass, reused, same logits."""

from __future__ import annotations

import pytest
import torch

from portllm_edge.models.store import quantized_cache_entries
from portllm_edge.porting.load import load_base_model

IDS = torch.tensor([[1, 40, 41, 42, 200, 7, 99, 12]])


def _logits(loaded) -> torch.Tensor:
    with torch.no_grad():
        return loaded.model(IDS).logits


@pytest.mark.parametrize("precision", ["nf4", "int8"])
def test_second_load_comes_from_the_cache_with_equal_logits(tiny_pairs, precision):
    base = str(tiny_pairs["llama"].new)
    fresh = load_base_model(base, precision, device="cpu")
    assert fresh.quantization["cache"]["hit"] is False
    (entry,) = quantized_cache_entries()
    assert entry.name.startswith("w1-") and (entry / "config.json").is_file()
    want = _logits(fresh)  # the forward runs after the save: the cached bytes are the unrepacked NF4 layout
    cached = load_base_model(base, precision, device="cpu")
    assert cached.quantization["cache"] == {"dir": str(entry), "hit": True}
    assert torch.equal(_logits(cached), want)
    assert quantized_cache_entries() == [entry]


def test_cache_is_keyed_by_weights_and_settings(tiny_pairs):
    pair = tiny_pairs["llama"]
    load_base_model(str(pair.new), "nf4", device="cpu")
    load_base_model(str(pair.new), "nf4", device="cpu", compute_dtype="bf16")
    load_base_model(str(pair.old), "nf4", device="cpu")
    assert len(quantized_cache_entries()) == 3
    off = load_base_model(str(pair.old), "nf4", device="cpu", quantized_cache=False)
    assert "cache" not in off.quantization and len(quantized_cache_entries()) == 3


def test_cpu_nf4_keeps_unquantized_tensors_at_the_stored_dtype_where_native(tmp_path, monkeypatch):
    """A bf16 checkpoint's embeddings stay bf16 on a CPU that computes in bf16, fp32 elsewhere."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import synthetic

    from portllm_edge.hardware import compute

    base = str(synthetic.write_base(synthetic.tiny(), tmp_path / "bf16-base"))
    monkeypatch.setattr(compute, "cpu_bf16_native", lambda *a: True)
    kept = load_base_model(base, "nf4", device="cpu", quantized_cache=False)
    assert kept.unquantized_dtype == "bf16"
    assert kept.model.get_input_embeddings().weight.dtype == torch.bfloat16
    assert kept.model.lm_head.weight.dtype == torch.bfloat16
    assert kept.model.model.norm.weight.dtype == torch.bfloat16
    monkeypatch.setattr(compute, "cpu_bf16_native", lambda *a: False)
    upcast = load_base_model(base, "nf4", device="cpu", quantized_cache=False)
    assert upcast.unquantized_dtype == "fp32"
    assert upcast.model.get_input_embeddings().weight.dtype == torch.float32
    with torch.no_grad():  # same NF4 weights; only the unquantized tensors' rounding differs
        a, b = kept.model(IDS).logits.float(), upcast.model(IDS).logits
    assert torch.allclose(a, b, atol=0.05 * b.abs().max().item())


def test_planner_asks_the_loads_question_and_drops_the_quantizing_term(tiny_pairs):
    """has_quantized_copy answers for the folder the load then reads; the estimate loses its quantizing term."""
    from portllm_edge.models.refs import resolve_base
    from portllm_edge.planning import ModelArch, estimate_inference_peak
    from portllm_edge.porting.load import has_quantized_copy, quantized_copy_dir

    base = resolve_base(str(tiny_pairs["llama"].new))
    assert quantized_copy_dir(base, "bf16", "cpu") is None
    assert not has_quantized_copy(base, "nf4", "cpu")
    loaded = load_base_model(base, "nf4", device="cpu")
    assert loaded.quantization["cache"]["dir"] == str(quantized_copy_dir(base, "nf4", "cpu"))
    assert has_quantized_copy(base, "nf4", "cpu")
    assert not has_quantized_copy(base, "nf4", "cpu", compute_dtype="bf16")  # other settings, other copy
    assert not has_quantized_copy(base, "int8", "cpu")
    arch = ModelArch.from_config(base.config())
    first = estimate_inference_peak(arch, "nf4", 1, 1, device="cpu")  # one token: little workspace
    repeat = estimate_inference_peak(arch, "nf4", 1, 1, device="cpu", quantized_copy=True)
    quantizing = first.term("quantizing_load")
    n = arch.max_linear().numel  # 128 x 64: one slice; 16-bit source + packed twice + 15 B/weight
    assert quantizing == 3 * n + 15 * n - first.term("activations") - first.term("kv_cache") > 0
    assert repeat.term("quantizing_load") == 0
    assert repeat.total_bytes == first.total_bytes - quantizing
    assert any("quantized copy" in n for n in repeat.notes)


def test_port_record_estimate_follows_the_loads_cache_hit(tiny_pairs):
    from portllm_edge.planning import estimate_inference_peak, port_peak_bytes, resolve_model_spec
    from portllm_edge.workflow.savings import estimated_port_peak

    folder = tiny_pairs["llama"].new
    spec = resolve_model_spec(folder)
    arch = spec.arch
    fresh = estimated_port_peak(folder, "nf4", "cpu")
    hit = estimated_port_peak(folder, "nf4", "cpu", quantized_copy=True)
    for copy, got in ((False, fresh), (True, hit)):
        want = estimate_inference_peak(arch, "nf4", device="cpu", quantized_copy=copy)
        assert got == port_peak_bytes(spec, want)
        assert (
            "loads the model store's quantized copy of the base (nothing to quantize)" in want.notes
        ) is copy


def test_a_cache_hit_neither_rewrites_nor_warns(tiny_pairs, recwarn):
    """The copy a load read is not saved again (transformers can't re-save a pre-quantized model)."""
    base = str(tiny_pairs["llama"].new)
    load_base_model(base, "nf4", device="cpu")
    (entry,) = quantized_cache_entries()
    stamps = {p.name: p.stat().st_mtime_ns for p in entry.iterdir()}
    recwarn.clear()
    hit = load_base_model(base, "nf4", device="cpu")
    assert hit.quantization["cache"]["hit"] is True
    assert [str(w.message) for w in recwarn if "quantized copy" in str(w.message)] == []
    assert {p.name: p.stat().st_mtime_ns for p in entry.iterdir()} == stamps


def test_a_truncated_cached_copy_is_quantized_again_and_replaced(tiny_pairs):
    """A damaged copy (truncated shard) is not used: the planner says no copy, the load re-quantizes and saves."""
    from portllm_edge.models.refs import resolve_base
    from portllm_edge.porting.load import has_quantized_copy

    base = resolve_base(str(tiny_pairs["llama"].new))
    want = _logits(load_base_model(base, "nf4", device="cpu"))
    (entry,) = quantized_cache_entries()
    shard = entry / "model.safetensors"
    size = shard.stat().st_size
    with shard.open("r+b") as fh:
        fh.truncate(size // 2)
    assert not has_quantized_copy(base, "nf4", "cpu")
    with pytest.warns(UserWarning, match=r"model\.safetensors"):
        again = load_base_model(base, "nf4", device="cpu")
    assert again.quantization["cache"]["hit"] is False
    assert torch.equal(_logits(again), want)
    assert shard.stat().st_size == size and has_quantized_copy(base, "nf4", "cpu")


def test_a_truncated_checkpoint_is_a_base_model_error_naming_the_file(tiny_pairs, tmp_path):
    """A base whose shard lost its tail (header intact) fails at fp32 with the file named, no SafetensorError."""
    import shutil
    import struct

    from portllm_edge.errors import BaseModelError

    folder = shutil.copytree(tiny_pairs["llama"].new, tmp_path / "truncated")
    shard = folder / "model.safetensors"
    raw = shard.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    shard.write_bytes(raw[: 8 + n + 100])
    with pytest.raises(BaseModelError, match=r"model\.safetensors"):
        load_base_model(str(folder), "fp32", device="cpu")


def test_an_unwritable_quantized_folder_warns_and_the_load_goes_on(tiny_pairs, portllm_home):
    """models/.quantized is a file (not a folder): the copy can't be kept, which only warns."""
    (portllm_home / "models").mkdir()
    (portllm_home / "models" / ".quantized").write_text("not a folder")
    with pytest.warns(UserWarning, match=r"could not keep a quantized copy of llama-new"):
        loaded = load_base_model(str(tiny_pairs["llama"].new), "nf4", device="cpu")
    assert loaded.quantization["cache"]["hit"] is False and loaded.precision == "nf4"
