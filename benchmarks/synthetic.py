"""Synthetic base models with real shapes and random weights, on disk, written layer by layer.

Why: the memory of import, port, merge and fine-tuning depends on shapes, not on
trained values, and real 7B checkpoints cannot be fetched here. Each shape below
copies a released model's ``config.json`` sizes (hidden, layers, heads, GQA KV heads,
MLP width, vocabulary, tied embeddings, biases). Weights are seeded ``N(0, 0.02)``
in bf16 (norms 1.0), written one decoder layer per ``safe_open``-readable shard, so
writing a 7B base never holds more than one layer in memory. :func:`write_gguf`
writes the same weights as a llama.cpp GGUF (Q8_0 or F16), one tensor at a time.

Used by ``benchmarks/scale.py`` and by the GGUF import tests (tiny shapes).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Shape:
    """A decoder's sizes, as in its ``config.json``."""

    key: str
    label: str
    model_type: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tied: bool
    qkv_bias: bool = False

    def config(self) -> dict[str, Any]:
        cls = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}
        cfg: dict[str, Any] = {
            "architectures": [cls[self.model_type]],
            "model_type": self.model_type,
            "hidden_size": self.hidden,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "head_dim": self.hidden // self.heads,
            "intermediate_size": self.intermediate,
            "vocab_size": self.vocab,
            "tie_word_embeddings": self.tied,
            "max_position_embeddings": 4096,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "hidden_act": "silu",
            "bos_token_id": 1,
            "eos_token_id": 2,
            "pad_token_id": 3,
            "dtype": "bfloat16",
        }
        if self.model_type == "mistral":
            cfg["sliding_window"] = None
        return cfg

    def tensors_of_layer(self, i: int) -> list[tuple[str, tuple[int, ...]]]:
        h, hd = self.hidden, self.hidden // self.heads
        q, kv, inter = self.heads * hd, self.kv_heads * hd, self.intermediate
        p = f"model.layers.{i}."
        out = [
            (p + "input_layernorm.weight", (h,)),
            (p + "post_attention_layernorm.weight", (h,)),
            (p + "self_attn.q_proj.weight", (q, h)),
            (p + "self_attn.k_proj.weight", (kv, h)),
            (p + "self_attn.v_proj.weight", (kv, h)),
            (p + "self_attn.o_proj.weight", (h, q)),
            (p + "mlp.gate_proj.weight", (inter, h)),
            (p + "mlp.up_proj.weight", (inter, h)),
            (p + "mlp.down_proj.weight", (h, inter)),
        ]
        if self.qkv_bias:
            out += [(p + "self_attn.q_proj.bias", (q,)), (p + "self_attn.k_proj.bias", (kv,))]
            out += [(p + "self_attn.v_proj.bias", (kv,))]
        return out

    def params(self) -> int:
        import math

        n = self.vocab * self.hidden * (1 if self.tied else 2) + self.hidden
        return n + sum(math.prod(s) for i in range(self.layers) for _, s in self.tensors_of_layer(i))


SHAPES: dict[str, Shape] = {
    s.key: s
    for s in (
        Shape("0.5b", "Qwen2-0.5B-like", "qwen2", 896, 24, 14, 2, 4864, 151936, True, qkv_bias=True),
        Shape("1.1b", "TinyLlama-1.1B-like", "llama", 2048, 22, 32, 4, 5632, 32000, False),
        Shape("3b", "Llama-3.2-3B-like", "llama", 3072, 28, 24, 8, 8192, 128256, True),
        Shape("7b", "Mistral-7B-like", "mistral", 4096, 32, 32, 8, 14336, 32768, False),
        Shape("tiny", "tiny Llama", "llama", 64, 2, 4, 2, 128, 300, False),
    )
}


def _tensor(name: str, shape: tuple[int, ...], gen: Any) -> Any:
    import torch

    if name.endswith("norm.weight"):
        return torch.ones(shape, dtype=torch.bfloat16)
    return (torch.randn(shape, generator=gen, dtype=torch.float32) * 0.02).to(torch.bfloat16)


def write_base(shape: Shape, out: Path, *, seed: int = 0) -> Path:
    """Write ``shape`` as a Hugging Face folder of bf16 safetensors shards, one layer per shard.

    Returns:
        ``out`` (config.json, generation_config.json, tokenizer, ``model.safetensors.index.json``).
    """
    import torch
    from safetensors.torch import save_file

    sys.path.insert(0, str(REPO / "tests"))
    import factories

    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    groups: list[list[tuple[str, tuple[int, ...]]]] = [
        [("model.embed_tokens.weight", (shape.vocab, shape.hidden))]
    ]
    groups += [shape.tensors_of_layer(i) for i in range(shape.layers)]
    tail = [("model.norm.weight", (shape.hidden,))]
    if not shape.tied:
        tail.append(("lm_head.weight", (shape.vocab, shape.hidden)))
    groups.append(tail)
    weight_map: dict[str, str] = {}
    total = 0
    for k, group in enumerate(groups):
        fname = f"model-{k + 1:05d}-of-{len(groups):05d}.safetensors"
        tensors = {name: _tensor(name, s, gen) for name, s in group}
        save_file(tensors, str(out / fname), metadata={"format": "pt"})
        for name, t in tensors.items():
            weight_map[name] = fname
            total += t.numel() * 2
        del tensors
    (out / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1)
    )
    (out / "config.json").write_text(json.dumps(shape.config(), indent=2))
    (out / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}))
    factories.build_tokenizer(out)
    return out


def _permute(w: Any, n_head: int) -> Any:
    """llama.cpp's q/k row permutation (convert_hf_to_gguf.py ``LlamaModel.permute``)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


_GGUF_NAMES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}


def gguf_name(hf: str) -> str:
    """GGUF tensor name of a Hugging Face Llama-style tensor name."""
    fixed = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
    if hf in fixed:
        return fixed[hf]
    if hf == "lm_head.weight":
        return "output.weight"
    parts = hf.split(".")
    layer, module, suffix = parts[2], ".".join(parts[3:-1]), parts[-1]
    return f"blk.{layer}.{_GGUF_NAMES[module]}.{suffix}"


def write_gguf(shape: Shape, base: Path, out: Path, *, qtype: str = "Q8_0") -> Path:
    """Write the base folder's weights as one GGUF file (``qtype`` Q8_0 or F16 for matrices, F32 for vectors).

    Streams: tensor infos first, then one tensor at a time read with ``safe_open``.
    """
    import gguf
    import numpy as np
    from safetensors import safe_open

    arch = "qwen2" if shape.model_type == "qwen2" else "llama"
    index = json.loads((base / "model.safetensors.index.json").read_text())["weight_map"]
    names = list(index)
    w = gguf.GGUFWriter(str(out), arch)
    w.add_name(f"{shape.model_type}-{shape.key}-synthetic")
    w.add_block_count(shape.layers)
    w.add_context_length(4096)
    w.add_embedding_length(shape.hidden)
    w.add_feed_forward_length(shape.intermediate)
    w.add_head_count(shape.heads)
    w.add_head_count_kv(shape.kv_heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(shape.vocab)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if qtype == "Q8_0" else gguf.LlamaFileType.MOSTLY_F16)
    tok = json.loads((base / "tokenizer.json").read_text())
    vocab = sorted(tok["model"]["vocab"].items(), key=lambda kv: kv[1])
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list([t for t, _ in vocab])
    w.add_token_types(
        [
            gguf.TokenType.CONTROL if t.startswith("<") and t.endswith(">") else gguf.TokenType.NORMAL
            for t, _ in vocab
        ]
    )
    w.add_token_scores([0.0] * len(vocab))
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(3)
    qt = gguf.GGMLQuantizationType.Q8_0 if qtype == "Q8_0" else gguf.GGMLQuantizationType.F16

    def encoded(name: str, arr: Any) -> tuple[Any, Any]:
        if arr.ndim == 1:
            return arr.astype(np.float32), gguf.GGMLQuantizationType.F32
        if name.endswith("attn_q.weight") and arch == "llama":
            arr = _permute(arr, shape.heads)
        elif name.endswith("attn_k.weight") and arch == "llama":
            arr = _permute(arr, shape.kv_heads)
        if qt == gguf.GGMLQuantizationType.F16:
            return arr.astype(np.float16), qt
        return gguf.quants.quantize(arr.astype(np.float32), qt), qt

    def read(hf: str) -> Any:
        import torch

        with safe_open(str(base / index[hf]), "pt") as fh:
            return fh.get_tensor(hf).to(torch.float32).numpy()

    for hf in names:  # infos: shapes and byte sizes without the data
        import math

        full = tuple(int(x) for x in _shape_of(base, index, hf))
        n = math.prod(full)
        if len(full) == 1:
            nbytes, dt, raw = 4 * n, np.float32, None
        elif qt == gguf.GGMLQuantizationType.F16:
            nbytes, dt, raw = 2 * n, np.float16, None
        else:
            nbytes, dt, raw = n // 32 * 34, np.uint8, qt
            full = (*full[:-1], full[-1] // 32 * 34)  # a quantized tensor's info takes its byte shape
        w.add_tensor_info(gguf_name(hf), full, np.dtype(dt), nbytes, raw_dtype=raw)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for hf in names:
        data, _ = encoded(gguf_name(hf), read(hf))
        w.write_tensor_data(data)
    w.close()
    return out


def _shape_of(base: Path, index: dict[str, str], hf: str) -> list[int]:
    from portllm_edge.tensorio import read_safetensors_header

    return list(read_safetensors_header(base / index[hf])[hf].shape)


def tiny(**overrides: Any) -> Shape:
    """The tiny test shape, with overrides."""
    return replace(SHAPES["tiny"], **overrides)
