"""Hugging Face tensor names and layouts -> llama.cpp (GGUF) tensor names and layouts.

Why this module exists: both GGUF writers (the LoRA adapter GGUF and the merged
model GGUF) must name and lay out tensors exactly as llama.cpp's own converters
do, or llama.cpp refuses the file ("LoRA tensor ... does not exist in base
model") or, worse, computes with rows in the wrong order. The names come from
gguf-py's :class:`gguf.TensorNameMap` (the table ``convert_hf_to_gguf.py`` uses);
the one layout change is llama.cpp's rotary layout for ``llama``-architecture
query/key projections (``LlamaModel.permute`` in ``convert_hf_to_gguf.py``, undone
by transformers' GGUF loader when it imports a GGUF).

It must not read weights or import torch; it maps names and permutes numpy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from portllm_edge.errors import PortingError
from portllm_edge.hfconfig import text_config

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np


@dataclass(frozen=True)
class GgufArch:
    """How one Hugging Face ``model_type`` is written for llama.cpp.

    Attributes:
        name: llama.cpp's ``general.architecture`` (``"llama"``, ``"qwen2"``, ...).
        permute_qk: Whether q_proj/k_proj rows are permuted to llama.cpp's rotary layout.
    """

    name: str
    permute_qk: bool


GGUF_ARCHS: dict[str, GgufArch] = {
    "llama": GgufArch("llama", True),
    "mistral": GgufArch("llama", True),
    "qwen2": GgufArch("qwen2", False),
    "qwen3": GgufArch("qwen3", False),
    "gemma2": GgufArch("gemma2", False),
}
"""``config.json`` ``model_type`` -> llama.cpp architecture, as ``convert_hf_to_gguf.py`` writes it."""


def gguf_arch(config: dict[str, Any], where: str) -> GgufArch:
    """The llama.cpp architecture of a base model's ``config.json``.

    Raises:
        PortingError: the ``model_type`` is not in :data:`GGUF_ARCHS` (names ``where``).
    """
    model_type = str(text_config(config).get("model_type") or config.get("model_type") or "")
    arch = GGUF_ARCHS.get(model_type)
    if arch is None:
        raise PortingError(
            f"{where}: `model_type: {model_type or '?'}` has no GGUF mapping here "
            f"(supported: {', '.join(sorted(GGUF_ARCHS))})",
            hint="export with --format peft and convert with llama.cpp's convert_lora_to_gguf.py",
        )
    return arch


class GgufNames:
    """Maps Hugging Face tensor names of one base model to llama.cpp tensor names and layouts.

    Args:
        config: The base's ``config.json``.
        where: File or folder named in errors.
    """

    def __init__(self, config: dict[str, Any], where: str) -> None:
        import gguf

        self.arch = gguf_arch(config, where)
        text = text_config(config)
        self.n_head = int(text["num_attention_heads"])
        self.n_head_kv = int(text.get("num_key_value_heads") or self.n_head)
        by_name = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}
        self._map = gguf.get_tensor_name_map(by_name[self.arch.name], int(text["num_hidden_layers"]))

    def tensor_name(self, hf_name: str) -> str | None:
        """``model.layers.0.self_attn.q_proj.weight`` -> ``blk.0.attn_q.weight`` (``None`` when unmapped).

        A ``language_model.`` wrapper is removed first, as ``convert_lora_to_gguf.py`` does.
        """
        for prefix, repl in (("model.language_model.", "model."), ("language_model.", "")):
            if hf_name.startswith(prefix):
                hf_name = repl + hf_name[len(prefix) :]
                break
        return self._map.get_name(hf_name, try_suffixes=(".weight", ".bias"))

    def qk_heads(self, gguf_name: str) -> int | None:
        """Head count to permute rows by for ``gguf_name`` (q: heads, k: KV heads), or ``None``."""
        if not self.arch.permute_qk:
            return None
        if ".attn_q." in gguf_name:
            return self.n_head
        if ".attn_k." in gguf_name:
            return self.n_head_kv
        return None

    def to_gguf_rows(self, gguf_name: str, rows: np.ndarray) -> np.ndarray:
        """Reorder the output rows (axis 0) of a weight or LoRA ``B`` into llama.cpp's layout.

        Source: ``LlamaModel.permute`` in llama.cpp's ``convert_hf_to_gguf.py``:
        ``w.reshape(heads, 2, rows // heads // 2, ...).swapaxes(1, 2).reshape(w.shape)``.
        """
        heads = self.qk_heads(gguf_name)
        if heads is None:
            return rows
        shape = rows.shape
        return rows.reshape(heads, 2, shape[0] // heads // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


__all__ = ["GGUF_ARCHS", "GgufArch", "GgufNames", "gguf_arch"]
