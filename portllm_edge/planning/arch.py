"""The shapes memory depends on, read from a ``config.json`` dict by arithmetic alone.

Why this module exists: the planner must size a 7B model in milliseconds without
weights, without RAM and without importing torch (``plan`` starts in about a
second). Like accelerate's ``estimate-memory`` (which builds the model on the
meta device), we count every parameter tensor — but by arithmetic over the
decoder's known structure, which tests check against a real meta-device build
(``torch.device("meta")``) of each supported family, exactly.

Supported by arithmetic: Llama-style decoders (``llama``, ``mistral``, ``qwen2``,
``gemma``, ``gemma2``). Any other ``model_type`` is sized from a meta-device build of
its config, as ``accelerate estimate-memory`` does (:func:`meta_sizes`: transformers
builds the model on ``torch.device("meta")``, which allocates nothing; we read the
first decoder layer's ``nn.Linear`` shapes and the exact parameter count). Only that
path imports torch and transformers, inside the function.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from portllm_edge.errors import PlanningError
from portllm_edge.hfconfig import ties_word_embeddings

LLAMA_LIKE = ("llama", "mistral", "qwen2", "gemma", "gemma2")


@dataclass(frozen=True)
class LinearSpec:
    """One ``nn.Linear`` inside every decoder layer.

    Attributes:
        name: Module name (``q_proj`` ... ``down_proj``), as peft's ``target_modules`` uses it.
        in_features: Input width.
        out_features: Output width (rows of the weight).
        bias: Whether the layer has a bias vector.
    """

    name: str
    in_features: int
    out_features: int
    bias: bool

    @property
    def numel(self) -> int:
        """Weight elements: ``in_features × out_features``."""
        return self.in_features * self.out_features


@dataclass(frozen=True)
class ModelArch:
    """A decoder-only model's sizes (from ``config.json``).

    Attributes:
        source: Where the config came from (file or profile name), for messages.
        model_type: ``config.json``'s ``model_type``.
        hidden_size: ``H``.
        num_layers: ``L``.
        num_heads: Query heads.
        num_kv_heads: Key/value heads (GQA; equal to ``num_heads`` for MHA).
        head_dim: Per-head width (``head_dim`` or ``H / num_heads``).
        intermediate_size: MLP width ``I``.
        vocab_size: ``V``.
        tie_word_embeddings: lm_head shares the embedding matrix (counted once).
        norms_per_layer: RMSNorm weights per layer (2; Gemma 2 has 4).
        qkv_bias: Biases on q/k/v projections (Qwen2; Llama's ``attention_bias``).
        o_bias: Bias on ``o_proj``.
        mlp_bias: Biases on the MLP projections.
        layer_windows: Per layer, the sliding window that caps its KV cache, or ``None`` for full attention.
        final_logit_softcapping: Gemma 2's soft-cap (adds transient logits copies), or ``None``.
        torch_dtype: The checkpoint's dtype name, or ``None``.
        notes: Assumptions made while reading the config.
    """

    source: str
    model_type: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    norms_per_layer: int
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool
    layer_windows: tuple[int | None, ...]
    final_logit_softcapping: float | None
    torch_dtype: str | None
    notes: tuple[str, ...] = ()
    layer_linears: tuple[LinearSpec, ...] | None = None
    """Per-layer linears read from a meta-device build (unknown model types); ``None`` = Llama's seven."""
    meta_total_params: int | None = None
    """Exact parameter count of the meta-device build (tied embeddings once), when one was made."""

    @classmethod
    def from_config(cls, config: Mapping[str, Any], source: str = "config.json") -> ModelArch:
        """Read the sizes from a ``config.json`` dict.

        Args:
            config: The parsed ``config.json`` (or a profile's architecture table).
            source: File or profile name used in error messages.

        Raises:
            PlanningError: A required key is missing or not a positive integer.
        """
        cfg = dict(config)
        if "text_config" in cfg and "hidden_size" not in cfg:
            cfg = {**cfg, **dict(cfg["text_config"])}
        notes: list[str] = []
        model_type = str(cfg.get("model_type") or "llama")
        meta: MetaSizes | None = None
        if model_type not in LLAMA_LIKE:
            meta = meta_sizes(cfg, source)
            if meta is None:
                notes.append(
                    f"model_type {model_type!r} sized as a Llama-style decoder (transformers can't build it)"
                )
            else:
                cfg = {**meta.config, **cfg}
                notes.append(f"model_type {model_type!r} sized from a meta-device build of its config")

        def need(key: str, default: Any = None) -> int:
            value = cfg.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise PlanningError(
                    f"{source}: `{key}` must be a positive integer, got {value!r}.",
                    hint="Point at a decoder model's config.json (Llama, Mistral, Qwen2, Gemma 2, SmolLM2).",
                )
            return value

        hidden = need("hidden_size")
        layers = need("num_hidden_layers")
        heads = need("num_attention_heads")
        kv = need("num_key_value_heads", cfg.get("num_key_value_heads") or heads)
        head_dim_raw = cfg.get("head_dim")
        head_dim = need("head_dim") if head_dim_raw is not None else hidden // heads
        inter = need("intermediate_size")
        vocab = need("vocab_size")
        tied = ties_word_embeddings({**cfg, "model_type": model_type})
        attention_bias = bool(cfg.get("attention_bias", False))
        qkv_bias = True if model_type == "qwen2" else attention_bias
        o_bias = False if model_type == "qwen2" else attention_bias
        mlp_bias = bool(cfg.get("mlp_bias", False))
        norms = 4 if model_type == "gemma2" else 2
        windows = _layer_windows(cfg, model_type, layers)
        dtype = cfg.get("torch_dtype") or cfg.get("dtype")
        return cls(
            source=source,
            model_type=model_type,
            hidden_size=hidden,
            num_layers=layers,
            num_heads=heads,
            num_kv_heads=kv,
            head_dim=head_dim,
            intermediate_size=inter,
            vocab_size=vocab,
            tie_word_embeddings=tied,
            norms_per_layer=norms,
            qkv_bias=qkv_bias,
            o_bias=o_bias,
            mlp_bias=mlp_bias,
            layer_windows=windows,
            final_logit_softcapping=cfg.get("final_logit_softcapping"),
            torch_dtype=str(dtype) if dtype else None,
            notes=tuple(notes),
            layer_linears=meta.linears if meta is not None else None,
            meta_total_params=meta.total_params if meta is not None else None,
        )

    # --- shapes -----------------------------------------------------------------------------------
    @property
    def q_width(self) -> int:
        """``num_heads × head_dim`` (query/attention-output width; not always ``H``, e.g. Gemma 2)."""
        return self.num_heads * self.head_dim

    @property
    def kv_width(self) -> int:
        """``num_kv_heads × head_dim``."""
        return self.num_kv_heads * self.head_dim

    def linears(self) -> tuple[LinearSpec, ...]:
        """The projections of one decoder layer: Llama's seven (q, k, v, o, gate, up, down), or those a
        meta-device build found (unknown model types)."""
        if self.layer_linears is not None:
            return self.layer_linears
        h, i = self.hidden_size, self.intermediate_size
        return (
            LinearSpec("q_proj", h, self.q_width, self.qkv_bias),
            LinearSpec("k_proj", h, self.kv_width, self.qkv_bias),
            LinearSpec("v_proj", h, self.kv_width, self.qkv_bias),
            LinearSpec("o_proj", self.q_width, h, self.o_bias),
            LinearSpec("gate_proj", h, i, self.mlp_bias),
            LinearSpec("up_proj", h, i, self.mlp_bias),
            LinearSpec("down_proj", i, h, self.mlp_bias),
        )

    # --- parameter counts (tied embeddings once) ----------------------------------------------------
    @property
    def linear_params(self) -> int:
        """Decoder projection weights, all layers: ``L × Σ in×out`` (the part bitsandbytes quantizes)."""
        return self.num_layers * sum(s.numel for s in self.linears())

    @property
    def bias_params(self) -> int:
        """Projection biases, all layers (kept in the compute dtype by bitsandbytes)."""
        return self.num_layers * sum(s.out_features for s in self.linears() if s.bias)

    @property
    def norm_params(self) -> int:
        """RMSNorm weights: ``L × norms_per_layer × H + H`` (final norm)."""
        return (self.num_layers * self.norms_per_layer + 1) * self.hidden_size

    @property
    def embedding_params(self) -> int:
        """``V × H`` for ``embed_tokens``."""
        return self.vocab_size * self.hidden_size

    @property
    def lm_head_params(self) -> int:
        """``V × H`` for an untied lm_head; 0 when tied (shared storage, counted once)."""
        return 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size

    @property
    def total_params(self) -> int:
        """All parameters, tied embeddings counted once (equals ``sum(p.numel())`` on the meta device)."""
        if self.meta_total_params is not None:
            return self.meta_total_params
        return (
            self.linear_params
            + self.bias_params
            + self.norm_params
            + self.embedding_params
            + self.lm_head_params
        )

    @property
    def unquantized_params(self) -> int:
        """What bitsandbytes leaves in 16-bit: embeddings, lm_head, norms, biases."""
        return self.total_params - self.linear_params

    def max_linear(self) -> LinearSpec:
        """The largest projection (sizes the dequantization transient)."""
        return max(self.linears(), key=lambda s: s.numel)


@dataclass(frozen=True)
class MetaSizes:
    """What a meta-device build of a config gives the planner.

    Attributes:
        linears: The first decoder layer's ``nn.Linear`` modules (name = last path part).
        total_params: ``sum(p.numel())`` over unique parameters (tied weights once).
        config: The built config's size keys (``hidden_size``, ``num_hidden_layers``, heads, ``vocab_size``,
            ``intermediate_size``, ``tie_word_embeddings``), filling keys the raw config spells differently.
    """

    linears: tuple[LinearSpec, ...]
    total_params: int
    config: dict[str, Any]


def meta_sizes(config: Mapping[str, Any], source: str = "config.json") -> MetaSizes | None:
    """Build ``config``'s causal LM on the meta device and read its linears and parameter count.

    Source: accelerate ``estimate-memory`` (``init_empty_weights`` + ``AutoModel.from_config``).
    Returns ``None`` when transformers has no such model type or cannot build it (never raises).
    """
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        cfg = dict(config)
        model_type = str(cfg.pop("model_type"))
        built = AutoConfig.for_model(model_type, **{k: v for k, v in cfg.items() if not k.startswith("_")})
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(built)
    except Exception:
        return None
    layers = [m for n, m in model.named_modules() if n.endswith("layers.0") or n.endswith(".h.0")]
    if not layers:
        return None
    linears = []
    for name, mod in layers[0].named_modules():
        if isinstance(mod, torch.nn.Linear):
            linears.append(
                LinearSpec(name.rsplit(".", 1)[-1], mod.in_features, mod.out_features, mod.bias is not None)
            )
        elif type(mod).__name__ == "Conv1D":  # GPT-2's transposed linear: weight [in, out]
            w = mod.weight
            linears.append(LinearSpec(name.rsplit(".", 1)[-1], int(w.shape[0]), int(w.shape[1]), True))
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    keys = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "vocab_size")
    sizes = {k: getattr(built, k) for k in keys if isinstance(getattr(built, k, None), int)}
    inter = getattr(built, "intermediate_size", None)
    if not isinstance(inter, int) and linears:
        inter = max(max(s.in_features, s.out_features) for s in linears)
    sizes["intermediate_size"] = inter
    sizes["tie_word_embeddings"] = bool(getattr(built, "tie_word_embeddings", False))
    return MetaSizes(tuple(linears), int(total), sizes)


def _layer_windows(cfg: Mapping[str, Any], model_type: str, layers: int) -> tuple[int | None, ...]:
    """Per-layer KV window as transformers' DynamicCache builds it (cache_utils.get_layer_types_and_kwargs).

    ``layer_types`` wins when present; Gemma 2 alternates sliding (even layers) and
    full attention; Qwen2 uses its window only with ``use_sliding_window``; other
    models with ``sliding_window`` set slide on every layer (Mistral v0.1).
    """
    window = cfg.get("sliding_window")
    window = window if isinstance(window, int) and window > 0 else None
    types = cfg.get("layer_types")
    if isinstance(types, list) and len(types) == layers:
        return tuple(window if t == "sliding_attention" else None for t in types)
    if window is None:
        return (None,) * layers
    if model_type == "gemma2":
        return tuple(window if (i + 1) % 2 else None for i in range(layers))
    if model_type == "qwen2" and not cfg.get("use_sliding_window", False):
        return (None,) * layers
    return (window,) * layers
