"""Read a LoRA patch's layout and a base model's tensor index from safetensors headers.

Why this module exists: adapters come from many trainers and peft versions, and
name their tensors differently. peft saves ``base_model.model.<module>.lora_A.weight``;
older or hand-rolled savers keep the adapter-name infix (``lora_A.default.weight``,
``modules_to_save.default.weight``) or drop the ``base_model.model.`` prefix;
adapters trained on a multimodal checkpoint wrap the text model in
``language_model.`` (``model.language_model.layers.0...``) while the text-only
release does not, and the other way round. This module turns every key into one
normalized *module path* (``model.layers.0.self_attn.q_proj``) and maps it onto the
base model's module paths in both directions, so the preflight, drift, vocabulary
port and merge all agree on which adapter tensor patches which base tensor.

It also holds the LoRA math shared by drift and merge (scaling with
``rank_pattern``/``alpha_pattern``/rsLoRA and ΔW = scale·B·A, from peft
``tuners/lora/layer.py``: ``Linear.get_delta_weight`` and ``Embedding.get_delta_weight``).

It must not load base weights: everything here reads safetensors headers,
``config.json`` and ``adapter_config.json``; only :func:`read_lora_pair` and
:func:`read_adapter_tensor` read (small) adapter tensors. torch is imported
inside the functions that need it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from portllm_edge.errors import BaseModelError, PatchError
from portllm_edge.tensorio import (
    SafetensorsHeader,
    TensorInfo,
    list_weight_files,
    pickled_files,
    read_safetensors_header,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."
WRAPPER = "language_model"

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

_LORA_RE = re.compile(
    r"^(?P<module>.+)\.(?P<part>lora_A|lora_B|lora_embedding_A|lora_embedding_B|lora_magnitude_vector)"
    r"(?:\.(?P<adapter>[A-Za-z0-9_\-]+))?(?:\.(?P<param>weight|bias))?$"
)
_MTS_RE = re.compile(
    r"^(?P<module>.+)\.modules_to_save\.(?P<adapter>[A-Za-z0-9_\-]+)\.(?P<param>weight|bias)$"
)
_FULL_RE = re.compile(r"^(?P<module>.+)\.(?P<param>weight|bias)$")
_OTHER_ADAPTER_PARTS = (
    "trainable_tokens_delta",
    "original_module",
    "hada_",
    "lokr_",
    "ia3_",
    "oft_",
    "boft_",
)


# --------------------------------------------------------------------------- adapter files


def adapter_weights_file(adapter_dir: Path) -> Path:
    """Return ``adapter_dir/adapter_model.safetensors``.

    Raises:
        PatchError: the folder or the file is missing, or only pickled weights
            (``adapter_model.bin``) exist (refused, with how to convert).
    """
    d = Path(adapter_dir)
    if not d.is_dir():
        raise PatchError(
            f"{d}: patch folder not found", hint="pass a patch name from the store or an adapter folder"
        )
    path = d / ADAPTER_WEIGHTS
    if path.is_file():
        return path
    pickled = pickled_files(d)
    if pickled:
        raise PatchError(
            f"{d}: holds only pickled adapter weights ({pickled[0].name}); portllm-edge reads safetensors only",
            hint=f"convert it: `portllm-edge patch convert {d}` (uses torch.load(weights_only=True))",
        )
    raise PatchError(
        f"{d}: no {ADAPTER_WEIGHTS} found", hint="point to a folder written by peft's save_pretrained"
    )


def read_adapter_config(adapter_dir: Path) -> dict[str, Any]:
    """Read ``adapter_config.json`` as a plain dict (no peft validation).

    Raises:
        PatchError: missing, not JSON, not an object, or no integer ``r``.
    """
    path = Path(adapter_dir) / ADAPTER_CONFIG
    if not path.is_file():
        raise PatchError(
            f"{path}: not found", hint="a peft adapter folder needs adapter_config.json next to its weights"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise PatchError(f"{path}: is not valid JSON ({exc})", hint="re-save the adapter with peft") from None
    if not isinstance(data, dict):
        raise PatchError(
            f"{path}: is a JSON {type(data).__name__}, not an object", hint="re-save the adapter with peft"
        )
    r = data.get("r")
    if not isinstance(r, int) or isinstance(r, bool) or r <= 0:
        raise PatchError(
            f"{path}: field `r` is {r!r}, not a positive integer", hint="set `r` to the LoRA rank"
        )
    return data


# --------------------------------------------------------------------------- key normalization


def strip_peft_prefix(key: str) -> tuple[str, bool]:
    """Remove the ``base_model.model.`` prefix peft puts on saved keys; say whether it was there."""
    if key.startswith(PEFT_PREFIX):
        return key[len(PEFT_PREFIX) :], True
    return key, False


def wrapper_variants(module: str) -> list[tuple[str, str | None]]:
    """Candidate base module paths for an adapter module path, with the rewrite each applies.

    The first candidate is the path itself. Then the multimodal ``language_model.``
    wrapper is removed (``model.language_model.X`` -> ``model.X``,
    ``language_model.model.X`` -> ``model.X``, ``language_model.X`` -> ``X``) or added
    (``model.X`` -> ``model.language_model.X`` / ``language_model.model.X``).
    """
    out: list[tuple[str, str | None]] = [(module, None)]
    if module.startswith(f"model.{WRAPPER}."):
        out.append(("model." + module[len(f"model.{WRAPPER}.") :], f"removed `{WRAPPER}.` wrapper"))
    if module.startswith(f"{WRAPPER}.model."):
        out.append(("model." + module[len(f"{WRAPPER}.model.") :], f"removed `{WRAPPER}.` wrapper"))
    elif module.startswith(f"{WRAPPER}."):
        out.append((module[len(f"{WRAPPER}.") :], f"removed `{WRAPPER}.` wrapper"))
    if module.startswith("model.") and not module.startswith(f"model.{WRAPPER}."):
        rest = module[len("model.") :]
        out.append((f"model.{WRAPPER}.{rest}", f"added `{WRAPPER}.` wrapper"))
        out.append((f"{WRAPPER}.model.{rest}", f"added `{WRAPPER}.` wrapper"))
    elif not module.startswith(("model.", f"{WRAPPER}.")):
        out.append((f"{WRAPPER}.{module}", f"added `{WRAPPER}.` wrapper"))
    return out


def resolve_module(
    module: str, base_modules: Iterable[str] | dict[str, Any]
) -> tuple[str | None, str | None]:
    """Map an adapter module path onto a base module path.

    Args:
        module: Normalized adapter module path, e.g. ``model.layers.0.self_attn.q_proj``.
        base_modules: The base's module paths (anything supporting ``in``).

    Returns:
        ``(base_module, rewrite)``: the matching base path (``None`` when nothing
        matches) and a description of the wrapper rewrite applied (``None`` for
        an exact match).
    """
    for candidate, rewrite in wrapper_variants(module):
        if candidate in base_modules:
            return candidate, rewrite
    return None, None


@dataclass(frozen=True)
class LoraModule:
    """One LoRA-patched module of an adapter, read from the header only.

    Attributes:
        module: Normalized module path in the adapter's own naming.
        kind: ``"linear"`` (``lora_A``/``lora_B``) or ``"embedding"`` (``lora_embedding_A/B``).
        a_key / b_key: Original tensor keys in ``adapter_model.safetensors``.
        a_shape: ``[r, in_features]`` (linear) or ``[r, num_embeddings]`` (embedding).
        b_shape: ``[out_features, r]`` (linear) or ``[embedding_dim, r]`` (embedding).
        magnitude_key: DoRA magnitude vector key, when present.
        bias_key: ``lora_B`` bias key (``lora_bias=True``), when present.
    """

    module: str
    kind: Literal["linear", "embedding"]
    a_key: str
    b_key: str
    a_shape: tuple[int, ...]
    b_shape: tuple[int, ...]
    magnitude_key: str | None = None
    bias_key: str | None = None

    @property
    def rank(self) -> int:
        """The rank stored in the tensors (rows of A)."""
        return self.a_shape[0]

    @property
    def delta_shape(self) -> tuple[int, int]:
        """Shape of ΔW in the base weight's layout: ``[out, in]`` (linear), ``[num_embeddings, dim]`` (embedding)."""
        if self.kind == "embedding":
            return (self.a_shape[1], self.b_shape[0])
        return (self.b_shape[0], self.a_shape[1])


@dataclass(frozen=True)
class SavedTensor:
    """A full tensor the adapter stores for a ``modules_to_save`` module (e.g. ``embed_tokens``)."""

    name: str
    """Normalized tensor name, e.g. ``model.embed_tokens.weight``."""
    key: str
    """Original key in the adapter file."""
    shape: tuple[int, ...]
    dtype: str


@dataclass
class AdapterLayout:
    """Everything the adapter file's header says, normalized.

    Attributes:
        path: The ``adapter_model.safetensors`` file.
        lora: Normalized module path -> :class:`LoraModule`.
        saved: Normalized tensor name -> :class:`SavedTensor` (``modules_to_save``).
        unknown: Keys that are neither LoRA factors nor full tensors we understand.
        incomplete: Module paths with an A but no B, or the other way round.
        dora: Module paths carrying a DoRA magnitude vector.
        prefixed: Number of keys that carried ``base_model.model.``.
        infixed: Number of keys that carried an adapter-name infix (``.default``).
        adapter_names: Adapter-name infixes seen (``{"default"}``).
        base_copies: Keys holding a copy of the *old* base's weight (``<module>.base_layer.weight``,
            written by peft's ``save_embedding_layers``); porting drops them so the new base's
            weights are used (W_new + ΔW).
    """

    path: Path
    lora: dict[str, LoraModule] = field(default_factory=dict)
    saved: dict[str, SavedTensor] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)
    dora: list[str] = field(default_factory=list)
    prefixed: int = 0
    infixed: int = 0
    adapter_names: set[str] = field(default_factory=set)
    base_copies: list[str] = field(default_factory=list)


def parse_adapter_header(header: SafetensorsHeader | dict[str, TensorInfo], path: Path) -> AdapterLayout:
    """Classify every key of an adapter header (see the module docstring for the naming variants)."""
    layout = AdapterLayout(path=path)
    parts: dict[str, dict[str, TensorInfo]] = {}
    for key, info in header.items():
        rel, had_prefix = strip_peft_prefix(key)
        layout.prefixed += int(had_prefix)
        m = _LORA_RE.match(rel)
        if m:
            adapter, param = m.group("adapter"), m.group("param")
            if adapter in ("weight", "bias") and param is None:  # `lora_A.weight` parsed as adapter name
                adapter, param = None, m.group("adapter")
            if adapter is not None:
                layout.infixed += 1
                layout.adapter_names.add(adapter)
            slot = m.group("part") + ("" if param in (None, "weight") else f".{param}")
            parts.setdefault(m.group("module"), {})[slot] = info
            continue
        m = _MTS_RE.match(rel)
        if m:
            layout.infixed += 1
            layout.adapter_names.add(m.group("adapter"))
            name = f"{m.group('module')}.{m.group('param')}"
            layout.saved[name] = SavedTensor(name, key, info.shape, info.dtype)
            continue
        if any(p in rel for p in _OTHER_ADAPTER_PARTS):
            layout.unknown.append(key)
            continue
        m = _FULL_RE.match(rel)
        if m and m.group("module").endswith(".base_layer"):
            layout.base_copies.append(key)
            continue
        if m:
            layout.saved[rel] = SavedTensor(rel, key, info.shape, info.dtype)
            continue
        layout.unknown.append(key)

    for module, slots in sorted(parts.items()):
        if "lora_magnitude_vector" in slots:
            layout.dora.append(module)
        if "lora_A" in slots and "lora_B" in slots:
            kind: Literal["linear", "embedding"] = "linear"
            a, b = slots["lora_A"], slots["lora_B"]
        elif "lora_embedding_A" in slots and "lora_embedding_B" in slots:
            kind = "embedding"
            a, b = slots["lora_embedding_A"], slots["lora_embedding_B"]
        else:
            layout.incomplete.append(module)
            continue
        layout.lora[module] = LoraModule(
            module=module,
            kind=kind,
            a_key=a.name,
            b_key=b.name,
            a_shape=a.shape,
            b_shape=b.shape,
            magnitude_key=slots["lora_magnitude_vector"].name if "lora_magnitude_vector" in slots else None,
            bias_key=slots["lora_B.bias"].name if "lora_B.bias" in slots else None,
        )
    return layout


def read_adapter_layout(adapter_dir: Path) -> AdapterLayout:
    """Read and classify ``adapter_model.safetensors``'s header (no tensor data).

    Raises:
        PatchError: the weights file is missing, pickled or has an invalid header.
    """
    path = adapter_weights_file(adapter_dir)
    return parse_adapter_header(read_safetensors_header(path, error_cls=PatchError), path)


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
        """``tie_word_embeddings`` from the config (transformers' default, True, when absent)."""
        text = self.config.get("text_config") if isinstance(self.config.get("text_config"), dict) else None
        if "tie_word_embeddings" in self.config:
            return bool(self.config["tie_word_embeddings"])
        if text is not None and "tie_word_embeddings" in text:
            return bool(text["tie_word_embeddings"])
        return True

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


# --------------------------------------------------------------------------- LoRA math


def pattern_value(pattern: dict[str, Any], module: str, default: Any) -> Any:
    """Look up ``module`` in a peft ``rank_pattern``/``alpha_pattern`` (peft ``get_pattern_key``).

    A pattern key matches when it equals the module path or the regex
    ``(.*\\.)?(key)$`` matches it, first key wins.
    """
    for key in pattern or {}:
        if key == module or re.match(rf"(.*\.)?({key})$", module):
            return pattern[key]
    return default


def lora_rank_alpha(config: dict[str, Any], module: str) -> tuple[int, float]:
    """The configured ``(r, lora_alpha)`` of ``module``, honoring ``rank_pattern``/``alpha_pattern``."""
    r = int(pattern_value(config.get("rank_pattern") or {}, module, config.get("r")))
    alpha = float(pattern_value(config.get("alpha_pattern") or {}, module, config.get("lora_alpha", 8)))
    return r, alpha


def lora_scaling(config: dict[str, Any], module: str) -> float:
    """LoRA scaling of ``module``: ``alpha / r``, or ``alpha / sqrt(r)`` with ``use_rslora``.

    Source: peft ``LoraLayer.update_layer`` (Hu et al. 2021 §4.1; Kalajdzievski 2023, rsLoRA).
    """
    r, alpha = lora_rank_alpha(config, module)
    return alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r


def read_adapter_tensor(path: Path, key: str) -> torch.Tensor:
    """Read one tensor from an adapter file (fp32 copy)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as fh:
        return fh.get_tensor(key).float()


def lora_delta(
    lm: LoraModule, adapter_path: Path, scale: float, *, fan_in_fan_out: bool = False
) -> torch.Tensor:
    """ΔW for one module in the base weight's layout, fp32.

    Linear: ``scale · B @ A`` → ``[out, in]`` (transposed when ``fan_in_fan_out``).
    Embedding: ``scale · (B @ A)ᵀ`` → ``[num_embeddings, dim]``.
    Source: peft ``tuners/lora/layer.py`` ``Linear.get_delta_weight`` / ``Embedding.get_delta_weight``.
    """
    from safetensors import safe_open

    with safe_open(str(adapter_path), framework="pt", device="cpu") as fh:
        a = fh.get_tensor(lm.a_key).float()
        b = fh.get_tensor(lm.b_key).float()
    delta = b @ a
    if lm.kind == "embedding" or fan_in_fan_out:
        delta = delta.T.contiguous()
    return delta.mul_(scale)


__all__ = [
    "ADAPTER_CONFIG",
    "ADAPTER_WEIGHTS",
    "AdapterLayout",
    "BaseIndex",
    "BaseTensor",
    "LoraModule",
    "SavedTensor",
    "adapter_weights_file",
    "lora_delta",
    "lora_rank_alpha",
    "lora_scaling",
    "parse_adapter_header",
    "pattern_value",
    "read_adapter_config",
    "read_adapter_layout",
    "read_adapter_tensor",
    "read_base_index",
    "read_json",
    "resolve_module",
    "strip_peft_prefix",
    "wrapper_variants",
]
