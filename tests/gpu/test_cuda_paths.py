"""The CUDA paths: load at nf4/int8/bf16 through device_map, port, bench, and the planner vs the allocator.

Memory figures here are read, printed and compared with a wide ratio band, never timed:
the planner's estimate against ``torch.cuda.max_memory_reserved()`` of the same load.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import synthetic

IDS = torch.tensor([[1, 40, 41, 42, 200, 7, 99, 12]])


@pytest.fixture(scope="module")
def bf16_base(tmp_path_factory) -> Path:
    shape = synthetic.tiny(hidden=256, layers=4, heads=8, kv_heads=4, intermediate=512, vocab=1024)
    return synthetic.write_base(shape, tmp_path_factory.mktemp("gpu") / "base")


@pytest.mark.parametrize("precision", ["nf4", "int8", "bf16"])
def test_load_goes_straight_to_the_gpu(bf16_base, precision):
    from portllm_edge.porting.load import load_base_model

    torch.cuda.reset_peak_memory_stats()
    loaded = load_base_model(str(bf16_base), precision, device="cuda:0")
    assert loaded.device == "cuda" and loaded.device_index == 0
    assert {p.device.type for p in loaded.model.parameters()} == {"cuda"}
    assert (
        loaded.model.get_input_embeddings().weight.dtype == torch.bfloat16
    )  # stored dtype, native on Ampere+
    with torch.no_grad():
        logits = loaded.model(IDS.cuda()).logits
    assert torch.isfinite(logits).all()


def test_quantized_cache_on_cuda_gives_equal_logits(bf16_base):
    from portllm_edge.porting.load import load_base_model

    fresh = load_base_model(str(bf16_base), "nf4", device="cuda:0")
    with torch.no_grad():
        want = fresh.model(IDS.cuda()).logits
    cached = load_base_model(str(bf16_base), "nf4", device="cuda:0")
    assert cached.quantization["cache"]["hit"] is True
    with torch.no_grad():
        assert torch.equal(cached.model(IDS.cuda()).logits, want)


def test_port_attaches_on_cuda(tiny_pairs, tiny_adapters):
    from peft import PeftModel

    from portllm_edge.porting.load import load_base_model

    loaded = load_base_model(str(tiny_pairs["llama"].new), "nf4", device="cuda")
    model = PeftModel.from_pretrained(loaded.model, str(tiny_adapters["llama"]))
    with torch.no_grad():
        out = model(IDS.cuda()).logits
    assert out.device.type == "cuda" and torch.isfinite(out).all()


def test_bench_measures_cuda_reserved_memory(tiny_pairs, tiny_adapters, shared_data):
    from portllm_edge.workflow import bench

    res = bench(
        str(tiny_adapters["llama"]),
        str(tiny_pairs["llama"].new),
        task="sst2",
        train_data=shared_data / "sst2" / "train.tsv",
        eval_data=shared_data / "sst2" / "dev.tsv",
        seq_len=32,
        batch_size=2,
        steps=1,
        device="cuda",
    )
    assert res.configs[0].name == "lora_bf16"
    assert all(c.metric.startswith("cuda") for c in res.configs)
    assert all(c.peak_median_bytes > 0 for c in res.configs)


def test_planner_estimate_against_max_memory_reserved(bf16_base):
    """The planner's nf4 weights + activations vs the allocator's reserved peak of the same load and forward."""
    from portllm_edge.planning import ModelArch, estimate_inference_peak
    from portllm_edge.porting.load import load_base_model

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_reserved()
    loaded = load_base_model(str(bf16_base), "nf4", device="cuda:0", quantized_cache=False)
    with torch.no_grad():
        loaded.model(IDS.cuda())
    measured = torch.cuda.max_memory_reserved() - before
    arch = ModelArch.from_config(loaded.base.config())
    est = estimate_inference_peak(arch, "nf4", IDS.shape[1], 1, device="cuda").without("runtime")
    print(f"planner nf4 (model only) {est} B vs max_memory_reserved {measured} B: {est / measured:.2f}")
    assert 0.2 < est / measured < 5  # a wide band: the caching allocator rounds blocks up to 2 MiB
