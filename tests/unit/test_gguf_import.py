"""The streaming GGUF import: per tensor, written at bf16 (or the file's own float type) into capped shards.

Oracle: transformers' own GGUF loader (``from_pretrained(gguf_file=..., dtype=float32)``),
which dequantizes the whole file to fp32 in memory. The streamed tensors must equal
its tensors rounded once to the output dtype, bit for bit.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import synthetic

from portllm_edge.models.gguf import import_gguf, output_dtype


def _streamed(folder: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), "pt") as fh:
            for k in fh.keys():
                out[k] = fh.get_tensor(k)
    return out


def _oracle(gguf: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tied = model.config.tie_word_embeddings
    return {k: v for k, v in model.state_dict().items() if not (tied and k == "lm_head.weight")}


def _round_to_bf16(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).float())


@pytest.mark.parametrize(
    ("shape", "qtype", "dtype"),
    [
        (synthetic.tiny(), "Q8_0", torch.bfloat16),
        (synthetic.tiny(model_type="qwen2", tied=True, qkv_bias=True), "Q8_0", torch.bfloat16),
        (synthetic.tiny(), "F16", torch.float16),
    ],
    ids=["llama-q8_0", "qwen2-q8_0-tied-bias", "llama-f16"],
)
def test_streamed_import_equals_transformers_rounded_once(tmp_path, shape, qtype, dtype):
    base = synthetic.write_base(shape, tmp_path / "base")
    gguf = synthetic.write_gguf(shape, base, tmp_path / f"m.{qtype}.gguf", qtype=qtype)
    folder = import_gguf(gguf, name="m", shard_bytes=40_000)
    got, want = _streamed(folder), _oracle(gguf)
    assert set(got) == set(want)
    for k in want:
        assert got[k].dtype == dtype, k
        assert torch.equal(got[k], want[k].to(dtype)), k
    shards = sorted(p.name for p in folder.glob("*.safetensors"))
    assert len(shards) > 1  # 40 kB cap: the 300x64 embedding alone is ~38 kB at 2 bytes
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(want)
    assert set(index["weight_map"].values()) == set(shards)
    config = json.loads((folder / "config.json").read_text())
    assert config["dtype"] == str(dtype).removeprefix("torch.")
    assert config["architectures"] == [
        {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}[shape.model_type]
    ]
    meta = json.loads((folder / "portllm_model.json").read_text())
    assert meta["dtype"] == config["dtype"]


def test_streamed_import_loads_and_gives_the_oracles_logits(tmp_path):
    from transformers import AutoModelForCausalLM

    shape = synthetic.tiny()
    base = synthetic.write_base(shape, tmp_path / "base")
    gguf = synthetic.write_gguf(shape, base, tmp_path / "m.Q8_0.gguf")
    folder = import_gguf(gguf, name="m")
    ids = torch.tensor([[1, 40, 41, 42, 200, 7]])
    ours = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    oracle = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    _round_to_bf16(oracle)
    with torch.no_grad():
        assert torch.equal(ours(ids).logits, oracle(ids).logits)


def test_import_dtype_can_be_forced_to_fp32(tmp_path):
    shape = synthetic.tiny()
    base = synthetic.write_base(shape, tmp_path / "base")
    gguf = synthetic.write_gguf(shape, base, tmp_path / "m.Q8_0.gguf")
    folder = import_gguf(gguf, name="m", dtype="fp32")
    got, want = _streamed(folder), _oracle(gguf)
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_output_dtype_rule():
    assert output_dtype(["F32", "F32"]) == "float32"
    assert output_dtype(["F16"]) == "float16"
    assert output_dtype(["BF16"]) == "bfloat16"
    assert output_dtype(["Q4_1", "Q8_0"]) == "bfloat16"
    assert output_dtype(["F16", "F32"]) == "bfloat16"


@pytest.mark.slow
def test_smollm2_streamed_import_matches_the_fp32_import_rounded_to_bf16(smollm2_gguf, smollm2_model):
    """``smollm2_model`` is ``import_gguf(smollm2_gguf)``, made once per session (tests/conftest.py)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = smollm2_model
    assert json.loads((folder / "portllm_model.json").read_text())["dtype"] == "bfloat16"  # Q4_1 -> bf16
    got = _streamed(folder)
    oracle = AutoModelForCausalLM.from_pretrained(
        smollm2_gguf.parent, gguf_file=smollm2_gguf.name, dtype=torch.float32
    )
    want = {k: v for k, v in oracle.state_dict().items() if k != "lm_head.weight"}
    assert set(got) == set(want)
    assert all(torch.equal(got[k], want[k].to(torch.bfloat16)) for k in want)
    tok = AutoTokenizer.from_pretrained(folder)
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    ours = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    with torch.no_grad():
        _round_to_bf16(oracle)
        assert torch.equal(ours(ids).logits, oracle(ids).logits)
