"""Read a base model's tensor index from its safetensors headers and ``config.json``.

Why this module exists: the preflight, drift, the vocabulary port and the merge
must agree on which base tensor each adapter tensor patches, without loading
weights. This module lists a base folder's tensors (every shard's header), its
modules and their weight shapes, its input embedding, whether ``lm_head`` is tied
(:func:`portllm_edge.hfconfig.ties_word_embeddings`) and whether its weights are
stored quantized. The adapter side (key grammar, config, scaling) lives in
:mod:`portllm_edge.patches.adapter_format`.

It must not load base weights: everything here reads safetensors headers and
``config.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from portllm_edge.errors import BaseModelError, PatchError
from portllm_edge.hfconfig import ties_word_embeddings
from portllm_edge.patches.adapter_format import WRAPPER
from portllm_edge.tensorio import TensorInfo, list_weight_files, read_safetensors_header

QUANT_SIDE_SUFFIXES = (
    ".absmax",
    ".quant_map",
    ".nested_absmax",
    ".nested_quant_map",
    ".quant_state.bitsandbytes__nf4",
    ".quant_state.bitsandbytes__fp4",
    ".SCB",
    ".weight_format",
)
"""Header key endings that bitsandbytes writes next to a packed 4-bit/8-bit weight."""

# --------------------------------------------------------------------------- base index


@dataclass(frozen=True)
class BaseTensor:
    """One base tensor: header facts plus the shard that holds it."""

    info: TensorInfo
    file: Path


@dataclass
class BaseIndex:
    """A base model folder's tensors, from the safetensors headers alone.

    Attributes:
        model_dir: The folder.
        config: ``config.json`` as a dict.
        tensors: Tensor name -> :class:`BaseTensor` (every shard).
        files: The shards, in order.
    """

    model_dir: Path
    config: dict[str, Any]
    tensors: dict[str, BaseTensor]
    files: list[Path]

    @property
    def modules(self) -> dict[str, tuple[int, ...]]:
        """Module path -> weight shape, for every ``<module>.weight`` tensor (``lm_head`` added when tied)."""
        out = {
            name[: -len(".weight")]: t.info.shape
            for name, t in self.tensors.items()
            if name.endswith(".weight")
        }
        embed = self.embedding_name()
        if "lm_head" not in out and embed is not None and self.tied:
            out["lm_head"] = self.tensors[embed].info.shape
        return out

    @property
    def tied(self) -> bool:
        """Whether transformers ties ``lm_head`` to the embedding (:func:`portllm_edge.hfconfig.ties_word_embeddings`)."""
        return ties_word_embeddings(self.config)

    def embedding_name(self) -> str | None:
        """Name of the input embedding tensor (``model.embed_tokens.weight`` or a wrapped variant)."""
        for cand in (
            "model.embed_tokens.weight",
            f"model.{WRAPPER}.embed_tokens.weight",
            f"{WRAPPER}.model.embed_tokens.weight",
            "embed_tokens.weight",
        ):
            if cand in self.tensors:
                return cand
        hits = [n for n in self.tensors if n.endswith("embed_tokens.weight")]
        return hits[0] if len(hits) == 1 else None

    def quantized_storage(self) -> str | None:
        """Describe quantized weights in the folder (bitsandbytes/GPTQ/AWQ), or ``None`` when plain.

        Detected from ``config.json``'s ``quantization_config`` and from
        bitsandbytes' side tensors (``.absmax``, ``.quant_map``, ``.SCB``, ...) in the headers.
        """
        qc = self.config.get("quantization_config")
        if isinstance(qc, dict) and qc:
            method = qc.get("quant_method") or (
                "bitsandbytes" if qc.get("load_in_4bit") or qc.get("load_in_8bit") else "unknown"
            )
            bits = (
                "4-bit"
                if qc.get("load_in_4bit") or qc.get("bits") == 4
                else "8-bit"
                if qc.get("load_in_8bit")
                else ""
            )
            return f"config.json has quantization_config ({method} {bits})".replace(" )", ")")
        for name in self.tensors:
            if name.endswith(QUANT_SIDE_SUFFIXES):
                return f"tensor `{name}` is a bitsandbytes quantization side tensor"
        return None


def read_json(
    path: Path, error_cls: type[BaseModelError] | type[PatchError] = BaseModelError
) -> dict[str, Any]:
    """Read a JSON object file, raising ``error_cls`` naming the file on any problem."""
    if not path.is_file():
        raise error_cls(
            f"{path}: not found", hint="point to a Hugging Face model folder (config.json + safetensors)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise error_cls(
            f"{path}: is not valid JSON ({exc})", hint="re-download or re-save the model"
        ) from None
    if not isinstance(data, dict):
        raise error_cls(f"{path}: is not a JSON object", hint="re-download or re-save the model")
    return data


_SIZE_KEYS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "vocab_size",
    "head_dim",
)


def _check_config_sizes(config: dict[str, Any], path: Path) -> None:
    """Refuse size fields that are present but not positive integers.

    transformers would otherwise fail later with a multi-line validation error
    (or a ZeroDivisionError for ``num_attention_heads: 0``) that names neither file nor fix.
    """
    for key in _SIZE_KEYS:
        if key not in config or (key in ("head_dim", "num_key_value_heads") and config[key] is None):
            continue
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise BaseModelError(
                f"{path}: `{key}` is {value!r}; it must be a positive integer",
                hint="restore the model's original config.json (re-download or re-save the model)",
            )


def read_base_index(model_dir: Path) -> BaseIndex:
    """Read ``config.json`` and every shard's header of a base model folder (no weights).

    Raises:
        BaseModelError: missing folder/config, invalid headers, pickled-only weights,
            or a tensor that appears in two shards.
    """
    d = Path(model_dir)
    if not d.is_dir():
        raise BaseModelError(
            f"{d}: base model folder not found", hint="pass a local Hugging Face model folder"
        )
    config = read_json(d / "config.json")
    _check_config_sizes(config, d / "config.json")
    files = list_weight_files(d, error_cls=BaseModelError)
    tensors: dict[str, BaseTensor] = {}
    for f in files:
        for name, info in read_safetensors_header(f, error_cls=BaseModelError).items():
            if name in tensors:
                raise BaseModelError(
                    f"{f}: tensor `{name}` also appears in {tensors[name].file.name}",
                    hint="re-download the model; its shards overlap",
                )
            tensors[name] = BaseTensor(info, f)
    return BaseIndex(d, config, tensors, files)


__all__ = ["QUANT_SIDE_SUFFIXES", "BaseIndex", "BaseTensor", "read_base_index", "read_json"]
