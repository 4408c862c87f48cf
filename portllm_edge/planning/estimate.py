"""Peak-memory estimates for inference and (Q)LoRA fine-tuning, from ``config.json`` alone.

Why this module exists: before loading anything, a user must know whether a
base model fits at a given precision. Each public function is pure: it takes
sizes (:class:`~portllm_edge.planning.arch.ModelArch` or a config dict) and
returns a :class:`MemoryBreakdown` whose terms carry their formula and source.
Only the CLI/TUI format them. It must not import torch, transformers or
bitsandbytes, and it never allocates the model.

Notation used in the formulas: ``L`` layers, ``H`` hidden size, ``I`` MLP
width, ``V`` vocabulary, ``nh``/``kv`` query/KV heads, ``hd`` head dim,
``b`` batch, ``s`` sequence length (context), ``T = b·s`` tokens, ``c`` bytes of
the compute dtype (2 for bf16/fp16 and for the 4/8-bit compute dtype, 4 for fp32),
``a`` bytes of a training activation, ``r`` LoRA rank.

Sources:
    * bitsandbytes docs (4-bit ``Params4bit``/``QuantState``, LLM.int8 ``Int8Params``):
      NF4/FP4 pack 2 weights per byte; blocksize 64; one fp32 absmax per block, or with
      double quantization an 8-bit absmax per block plus fp32 second-level absmax per
      256 blocks and a 256-entry fp32 code table. int8 keeps one fp32 scale (``SCB``) per row.
    * QLoRA paper (Dettmers et al., 2023, §2-3): NF4, double quantization
      (0.5 → 0.127 bits/parameter of constants), paged optimizers; LoRA states.
    * transformers ``get_keys_to_not_convert`` / bitsandbytes integration: embeddings,
      lm_head and norms stay unquantized (compute dtype).
    * peft ``prepare_model_for_kbit_training``: casts every non-quantized fp16/bf16
      parameter to fp32 and enables gradient checkpointing.
    * peft ``get_peft_model(autocast_adapter_dtype=True)``: LoRA weights live in fp32.
    * accelerate ``estimate-memory``: sizes from the meta device; training ≈ weights +
      gradients + 2 Adam states (we apply it to the trainable LoRA part only).
    * Korthikanti et al., 2022 ("Reducing Activation Recomputation"): per-layer saved
      activations; adapted here to SwiGLU MLPs, GQA and frozen (non-saving) projections.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, Literal

from portllm_edge.errors import PlanningError
from portllm_edge.hardware.sizes import format_size
from portllm_edge.planning.arch import ModelArch

MiB = 1024**2

DeviceKind = Literal["cuda", "unified", "cpu"]


class Precision(str, Enum):
    """Weight precision of the base model."""

    NF4 = "nf4"
    FP4 = "fp4"
    INT8 = "int8"
    BF16 = "bf16"
    FP16 = "fp16"
    FP32 = "fp32"

    @property
    def is_quantized(self) -> bool:
        """True for bitsandbytes formats (nf4, fp4, int8)."""
        return self in (Precision.NF4, Precision.FP4, Precision.INT8)

    @property
    def weight_bits(self) -> int:
        """Bits per quantized/stored weight."""
        return {"nf4": 4, "fp4": 4, "int8": 8, "bf16": 16, "fp16": 16, "fp32": 32}[self.value]

    @property
    def compute_bytes(self) -> int:
        """``c``: bytes of the dtype activations, KV cache and unquantized weights use (bf16 compute for 4/8-bit)."""
        return 4 if self is Precision.FP32 else 2

    @property
    def quality_rank(self) -> int:
        """Higher is better quality: 16/32-bit 3, int8 2, nf4 1, fp4 0 (NF4 beats FP4: QLoRA §3)."""
        return {"bf16": 3, "fp16": 3, "fp32": 3, "int8": 2, "nf4": 1, "fp4": 0}[self.value]


ALL_PRECISIONS: tuple[Precision, ...] = tuple(Precision)
NF4_BLOCKSIZE = 64
"""bitsandbytes 4-bit blocksize (one absmax per 64 weights; QLoRA §3)."""
DQ_BLOCKSIZE = 256
"""Second-level blocksize of double quantization (QLoRA §3: 256 first-level constants per block)."""

CUDA_CONTEXT_BYTES = 512 * MiB
"""CUDA context, cuBLAS workspace and loaded kernels (torch + bitsandbytes), as seen by NVML.
Not visible to ``torch.cuda.max_memory_allocated`` but taken from the card; 300-500 MiB on
Ampere/Ada with lazy module loading. Uncalibrated on GPU in this build (no GPU was available)."""
CPU_RUNTIME_BYTES = 224 * MiB
"""Resident memory of a Python interpreter with torch imported (measured: 221 MiB, torch 2.13, Linux x86-64)."""
LIBRARIES_INFERENCE_BYTES = 120 * MiB
"""Host memory of importing transformers and a model class on top of torch (measured: +118 MiB)."""
ALLOCATOR_OVERHEAD = {"cpu": 0.0, "cuda": 0.10, "unified": 0.10}
"""Extra memory held by the allocator while training, as a fraction of the activation term.
CPU: none since every load fixes glibc's thresholds (freed activation blocks go back to the
OS, :func:`portllm_edge.porting.load.return_freed_buffers_to_os`): without the term, LoRA bf16
and QLoRA estimates are 1.00-1.08 of the peaks measured by ``benchmarks/scale.py`` at 0.5B and
1.1B shapes (it was 0.25, fit at 135M before that change). CUDA: the caching allocator's
fragmentation, a conventional 10 % (uncalibrated here: no GPU was available)."""
QUANTIZE_TEMP_BYTES_PER_WEIGHT = {"cpu": 15}
"""Temporaries of bitsandbytes' CPU ``quantize_4bit`` per weight of one call (fp32 copy, scaled and
clamped copies, int32 codes, uint8 codes): measured 14.2 bytes/weight on a 4096 × 14336 bf16
weight. CPU loads quantize in slices of :data:`portllm_edge.porting.quant.QUANTIZE_CHUNK_ELEMENTS`
weights (:func:`portllm_edge.porting.quant.chunked_4bit_quantization`). Other devices quantize
with their own kernels (uncalibrated here) and get no quantizing term."""
CPU_QUANTIZED_COMPUTE_BYTES = 4
"""Bytes of the compute dtype of 4/8-bit layers on CPU: fp32
(:func:`portllm_edge.porting.load.default_compute_dtype`); on CUDA it is the 16-bit ``c``."""
LIBRARIES_TRAINING_BYTES = 176 * MiB
"""Host memory of transformers + peft (+ bitsandbytes) on top of torch (measured: +174 MiB)."""


@dataclass(frozen=True)
class MemoryTerm:
    """One additive term of a memory estimate.

    Attributes:
        key: Stable identifier (``weights``, ``quant_constants``, ``unquantized``, ``kv_cache``,
            ``activations``, ``runtime``, ``libraries``, ``lora_params``, ``lora_grads``, ``optimizer``).
        label: Human label for tables.
        bytes: Size in bytes.
        formula: The formula, in this module's notation.
        source: Where the formula comes from.
    """

    key: str
    label: str
    bytes: int
    formula: str
    source: str

    def human(self) -> str:
        return format_size(self.bytes)


@dataclass(frozen=True)
class MemoryBreakdown:
    """A peak-memory estimate as a sum of terms.

    Attributes:
        mode: ``inference``, ``lora`` (16/32-bit base) or ``qlora`` (4/8-bit base, k-bit prepared).
        precision: Base weight precision.
        device: ``cuda``, ``unified`` or ``cpu`` (decides the runtime terms).
        context: Sequence length ``s`` in tokens.
        batch: Batch size ``b``.
        params: Total base parameters (tied embeddings once).
        terms: The additive terms.
        notes: Assumptions worth showing.
    """

    mode: str
    precision: Precision
    device: str
    context: int
    batch: int
    params: int
    terms: tuple[MemoryTerm, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def total_bytes(self) -> int:
        """Estimated peak: the sum of all terms."""
        return sum(t.bytes for t in self.terms)

    def total_human(self) -> str:
        return format_size(self.total_bytes)

    def term(self, key: str) -> int:
        """Bytes of the term ``key`` (0 when the estimate has no such term)."""
        return sum(t.bytes for t in self.terms if t.key == key)

    def without(self, *keys: str) -> int:
        """Total minus the named terms (e.g. ``without("runtime")`` for a model-only figure)."""
        return self.total_bytes - sum(self.term(k) for k in keys)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["precision"] = self.precision.value
        data["total_bytes"] = self.total_bytes
        return data


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def as_arch(config: ModelArch | Mapping[str, Any], source: str = "config.json") -> ModelArch:
    """Accept a :class:`ModelArch` or a ``config.json`` dict."""
    return config if isinstance(config, ModelArch) else ModelArch.from_config(config, source)


def as_precision(value: Precision | str) -> Precision:
    """Parse ``"nf4"``/``"bf16"``... (case-insensitive). Raises PlanningError on an unknown name."""
    if isinstance(value, Precision):
        return value
    try:
        return Precision(str(value).strip().lower())
    except ValueError:
        raise PlanningError(
            f"unknown precision {value!r}.",
            hint=f"use one of: {', '.join(p.value for p in Precision)}.",
        ) from None


def _positive(name: str, value: int) -> None:
    if not isinstance(value, int) or value <= 0:
        raise PlanningError(f"`{name}` must be a positive integer, got {value!r}.", hint=f"pass {name} >= 1.")


def quantized_linear_bytes(
    numel: int, out_features: int, precision: Precision, *, double_quant: bool = True
) -> tuple[int, int]:
    """Bytes of one quantized linear weight: ``(packed weights, quantization constants)``.

    Formulas (per weight matrix of ``n`` elements):
        * nf4/fp4 weights: ``ceil(n/2)`` (two 4-bit codes per byte).
        * nf4/fp4 constants, no double quant: ``4·ceil(n/64)`` (fp32 absmax per 64-block) + 64 (16-entry code).
        * with double quant: ``ceil(n/64)`` (8-bit absmax) + ``4·ceil(n/64/256)`` (fp32 second-level
          absmax) + 1024 (256-entry fp32 code) + 4 (offset) + 64 — about 0.127 bits/weight (QLoRA §3).
        * int8 weights: ``n``; constants: ``4·out_features`` (fp32 row scale ``SCB``, LLM.int8).
        * 16/32-bit: ``n·bytes``, no constants.

    Source: bitsandbytes ``functional.quantize_4bit`` / ``QuantState``; QLoRA (Dettmers et al., 2023) §3.
    """
    if precision in (Precision.NF4, Precision.FP4):
        blocks = math.ceil(numel / NF4_BLOCKSIZE)
        if double_quant:
            consts = blocks + 4 * math.ceil(blocks / DQ_BLOCKSIZE) + 256 * 4 + 4 + 16 * 4
        else:
            consts = 4 * blocks + 16 * 4
        return math.ceil(numel / 2), consts
    if precision is Precision.INT8:
        return numel, 4 * out_features
    return numel * (precision.weight_bits // 8), 0


def kv_cache_bytes(arch: ModelArch, context: int, batch: int, bytes_per_value: int) -> int:
    """KV cache: ``Σ_layers 2 · kv · hd · min(s, window_l) · b · bytes``.

    Sliding-window layers (Gemma 2's even layers, Mistral v0.1) keep at most
    ``window`` tokens (transformers ``DynamicSlidingWindowLayer``). Source:
    transformers ``cache_utils``; the standard ``2·L·kv·hd·s·b·bytes``.
    """
    per_token = 2 * arch.kv_width * batch * bytes_per_value
    return sum(per_token * (context if w is None else min(context, w)) for w in arch.layer_windows)


def _runtime_terms(device: str, *, training: bool) -> list[MemoryTerm]:
    if device == "cpu":
        libs = LIBRARIES_TRAINING_BYTES if training else LIBRARIES_INFERENCE_BYTES
        return [
            MemoryTerm(
                "runtime",
                "Python + torch",
                CPU_RUNTIME_BYTES,
                "constant (measured RSS of `import torch`)",
                "measured, torch 2.13 Linux",
            ),
            MemoryTerm(
                "libraries",
                "transformers" + (" + peft" if training else ""),
                libs,
                "constant (measured RSS increase of the imports)",
                "measured, transformers 5 / peft 0.21",
            ),
        ]
    return [
        MemoryTerm(
            "runtime",
            "CUDA context + kernels",
            CUDA_CONTEXT_BYTES,
            "constant: CUDA context, cuBLAS workspace, bitsandbytes kernels",
            "NVML-visible overhead of a CUDA process (not in torch.cuda.max_memory_allocated)",
        )
    ]


def _weight_terms(
    arch: ModelArch, precision: Precision, *, double_quant: bool, unquantized_bytes: int | None = None
) -> list[MemoryTerm]:
    """Weights, constants and the unquantized remainder of the base model at ``precision``."""
    c = precision.compute_bytes
    weights = 0
    consts = 0
    for spec in arch.linears():
        w, q = quantized_linear_bytes(spec.numel, spec.out_features, precision, double_quant=double_quant)
        weights += w * arch.num_layers
        consts += q * arch.num_layers
    ub = c if unquantized_bytes is None else unquantized_bytes
    unq = arch.unquantized_params * ub
    if precision.is_quantized:
        wlabel = f"decoder linears @ {precision.value}"
        wformula = {
            "nf4": "Σ ceil(n/2) over L×7 projections",
            "fp4": "Σ ceil(n/2) over L×7 projections",
            "int8": "Σ n over L×7 projections",
        }[precision.value]
        cformula = (
            (
                "Σ [ceil(n/64) + 4·ceil(n/64/256) + 1092] (double quant)"
                if double_quant
                else "Σ [4·ceil(n/64) + 64]"
            )
            if precision is not Precision.INT8
            else "Σ 4·out_features (fp32 SCB)"
        )
    else:
        wlabel = f"decoder linears @ {precision.value}"
        wformula = f"L·Σ in×out × {precision.weight_bits // 8}"
        cformula = "0"
    embed_note = "tied, counted once" if arch.tie_word_embeddings else "embed_tokens + lm_head"
    terms = [
        MemoryTerm("weights", wlabel, weights, wformula, "bitsandbytes Params4bit/Int8Params storage"),
        MemoryTerm(
            "quant_constants", "quantization constants", consts, cformula, "bitsandbytes QuantState; QLoRA §3"
        ),
        MemoryTerm(
            "unquantized",
            f"embeddings, lm_head, norms, biases @ {ub * 8}-bit",
            unq,
            f"(V·H·{1 if arch.tie_word_embeddings else 2} + norms + biases) × {ub}  ({embed_note})",
            "transformers bnb integration keeps nn.Embedding, lm_head and norms unquantized",
        ),
    ]
    return terms


# --------------------------------------------------------------------------------------------------
# Inference
# --------------------------------------------------------------------------------------------------


def inference_activation_bytes(
    arch: ModelArch,
    precision: Precision,
    context: int,
    batch: int,
    device: DeviceKind = "cuda",
    logits_positions: int = 1,
) -> int:
    """Transient workspace of a prefill forward pass over ``T = b·s`` tokens, no autograd.

    Peak of three phases (only one layer's temporaries live at a time under ``no_grad``):
        * attention: ``T·c·(2H + q + 2kv + 2q)`` — residual, normed input, q/k/v, SDPA output and its
          reshaped copy (SDPA's fused kernels never materialize the ``s×s`` scores);
        * MLP: ``T·c·(2H + 3I)`` — residual, normed input, act(gate), up, their product;
        * logits: ``T·H·c + b·k·V·c + b·V·4`` — the logits of the ``k = logits_positions`` kept
          positions per sequence (1 in generation and in scoring's last position; ``s`` for a plain
          forward, which keeps them all) and the fp32 copy of the last one ``generate`` makes.
    Plus, for 4/8-bit, the dequantized copy of the largest projection (``max n ×`` the compute
    dtype's bytes: ``c``, or 4 on CPU where the compute dtype is fp32): bitsandbytes dequantizes
    the weight for multi-token matmuls.

    Source: transformers Llama/Mistral/Qwen2/Gemma2 modeling code; bitsandbytes ``matmul_4bit``.
    """
    c = precision.compute_bytes
    t = batch * context
    h, i = arch.hidden_size, arch.intermediate_size
    attn = t * c * (2 * h + arch.q_width + 2 * arch.kv_width + 2 * arch.q_width)
    mlp = t * c * (2 * h + 3 * i)
    _positive("logits_positions", logits_positions)
    logits = (
        t * h * c + batch * min(logits_positions, context) * arch.vocab_size * c + batch * arch.vocab_size * 4
    )
    dequant_bytes = CPU_QUANTIZED_COMPUTE_BYTES if device == "cpu" else c
    dequant = arch.max_linear().numel * dequant_bytes if precision.is_quantized else 0
    return max(attn, mlp, logits) + dequant


def estimate_inference_peak(
    config: ModelArch | Mapping[str, Any],
    precision: Precision | str,
    context: int = 2048,
    batch: int = 1,
    *,
    double_quant: bool = True,
    device: DeviceKind = "cuda",
    quantized_copy: bool = False,
    logits_positions: int = 1,
) -> MemoryBreakdown:
    """Estimate the peak memory of running a base model for generation/evaluation.

    Total = weights + quantization constants + unquantized embeddings/lm_head/norms/biases
    + KV cache + activation workspace + runtime (+ library imports on CPU) (+ on CPU at 4 bit,
    the quantizing load's transient, unless the load reads an already quantized copy).

    Args:
        config: A ``config.json`` dict or :class:`ModelArch`.
        precision: nf4, fp4, int8, bf16, fp16 or fp32.
        context: Tokens per sequence ``s`` (prompt + generated).
        batch: Sequences ``b``.
        double_quant: bitsandbytes ``bnb_4bit_use_double_quant`` (4-bit only).
        device: ``cuda``/``unified`` (adds the CUDA context) or ``cpu`` (adds the Python/torch
            and library resident memory).
        quantized_copy: the load reads the model store's quantized copy of the base
            (:func:`portllm_edge.porting.load.has_quantized_copy`), so nothing is quantized and
            the ``quantizing_load`` term is left out.
        logits_positions: positions per sequence whose logits the pass keeps: 1 (generation, the
            default) up to ``context`` (a plain forward), see :func:`inference_activation_bytes`.

    Returns:
        A :class:`MemoryBreakdown` (bytes).

    Raises:
        PlanningError: Bad precision, context or batch, or an unreadable config.
    """
    arch = as_arch(config)
    prec = as_precision(precision)
    _positive("context", context)
    _positive("batch", batch)
    c = prec.compute_bytes
    terms = _weight_terms(arch, prec, double_quant=double_quant)
    terms.append(
        MemoryTerm(
            "kv_cache",
            f"KV cache ({context} tok × {batch})",
            kv_cache_bytes(arch, context, batch, c),
            f"Σ_l 2·kv·hd·min(s, window_l)·b·{c}",
            "transformers DynamicCache",
        )
    )
    terms.append(
        MemoryTerm(
            "activations",
            "activation workspace",
            inference_activation_bytes(arch, prec, context, batch, device, logits_positions),
            "max(attn, MLP, logits phase) + dequantized largest projection (4/8-bit)",
            "transformers modeling code; bitsandbytes matmul_4bit",
        )
    )
    per_weight = QUANTIZE_TEMP_BYTES_PER_WEIGHT.get(device)
    if prec in (Precision.NF4, Precision.FP4) and per_weight is not None and not quantized_copy:
        from portllm_edge.porting.quant import QUANTIZE_CHUNK_ELEMENTS

        n = arch.max_linear().numel
        loading = 3 * n + per_weight * min(n, QUANTIZE_CHUNK_ELEMENTS)
        workspace = terms[-1].bytes + terms[-2].bytes  # the evaluation's activations + KV cache
        terms.append(
            MemoryTerm(
                "quantizing_load",
                "quantizing load beyond the evaluation's workspace",
                max(0, loading - workspace),
                f"max(0, 3 × max n + {per_weight} × min(max n, slice) − activations − KV cache)",
                "largest projection in flight: 16-bit source + packed codes twice; bitsandbytes "
                "quantize_4bit temporaries per slice; the load ends before the evaluation starts",
            )
        )
    terms.extend(_runtime_terms(device, training=False))
    notes = []
    if prec.is_quantized and prec is not Precision.INT8:
        notes.append(f"4-bit: blocksize {NF4_BLOCKSIZE}, double quant {'on' if double_quant else 'off'}")
    if prec.is_quantized and quantized_copy:
        notes.append("loads the model store's quantized copy of the base (nothing to quantize)")
    return _breakdown("inference", arch, prec, device, context, batch, terms, notes)


def decode_bytes_per_token(arch: ModelArch, precision: Precision | str, context: int = 2048) -> int:
    """Bytes one decoding step reads from memory, batch 1, at ``context`` tokens of KV cache.

    ``Σ linear weights + constants at the precision + lm_head (V·H·c; tied or not, the logits
    matmul reads the whole matrix) + norms·c + KV cache (Σ_l 2·kv·hd·min(s, window_l)·c)``.
    The embedding lookup reads one row (ignored). Single-stream decoding is memory-bound, so
    ``bandwidth ÷ this`` is an upper bound on tokens/s (Kim et al., "SqueezeLLM", 2023, §3).
    """
    prec = as_precision(precision)
    c = prec.compute_bytes
    weights = 0
    for spec in arch.linears():
        w, q = quantized_linear_bytes(spec.numel, spec.out_features, prec)
        weights += (w + q) * arch.num_layers
    head = arch.vocab_size * arch.hidden_size * c
    return weights + head + arch.norm_params * c + kv_cache_bytes(arch, context, 1, c)


# --------------------------------------------------------------------------------------------------
# LoRA / QLoRA fine-tuning
# --------------------------------------------------------------------------------------------------

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LORA_PARAM_BYTES = 4
"""LoRA weights are fp32 (peft ``autocast_adapter_dtype=True``)."""


def lora_param_count(arch: ModelArch, r: int, target_modules: Iterable[str]) -> int:
    """Trainable LoRA parameters: ``L · Σ_targets r·(in + out)`` (A is r×in, B is out×r). Source: LoRA (Hu et al., 2021)."""
    targets = set(target_modules)
    specs = [s for s in arch.linears() if s.name in targets]
    unknown = targets - {s.name for s in arch.linears()}
    if unknown:
        raise PlanningError(
            f"unknown LoRA target module(s) {sorted(unknown)} for {arch.source}.",
            hint=f"use names from: {', '.join(DEFAULT_TARGETS)}.",
        )
    return arch.num_layers * sum(r * (s.in_features + s.out_features) for s in specs)


def training_activation_bytes_per_layer(
    arch: ModelArch,
    tokens: int,
    act_bytes: int,
    r: int,
    target_modules: Iterable[str],
    *,
    lora_dropout: float = 0.0,
    repeat_kv: bool = False,
) -> int:
    """Bytes autograd saves for backward in one decoder layer (base frozen, LoRA trainable).

    Terms over ``T`` tokens, activation bytes ``a`` (bf16 2; fp32 after k-bit prep 4):
        * norms: ``norms_per_layer · 4·T·H`` — RMSNorm upcasts to fp32 and ``pow`` saves it;
        * attention (SDPA saves q, k, v, output): ``a·T·(2q + 2kv)`` (``2q + 2q`` when KV heads are
          repeated, i.e. with a padding mask) + fp32 logsumexp ``4·T·nh``;
        * SwiGLU MLP: ``3·a·T·I`` — silu saves gate, mul saves act and up;
        * LoRA inputs: each LoRA branch casts its input to fp32 (``4·T·in``; shared by q/k/v or
          gate/up when no cast is needed), dropout adds its output and a 1-byte mask, and lora_B
          saves ``4·T·r``.
    Frozen projections save nothing (autograd keeps an input only to compute a weight gradient).

    Source: Korthikanti et al., 2022 (activation accounting), transformers Llama modeling code,
    peft ``lora.Linear.forward``.
    """
    h, i = arch.hidden_size, arch.intermediate_size
    t = tokens
    targets = set(target_modules)
    norms = arch.norms_per_layer * 4 * t * h
    kv_saved = arch.q_width if repeat_kv else arch.kv_width
    attn = act_bytes * t * (2 * arch.q_width + 2 * kv_saved) + 4 * t * arch.num_heads
    mlp = 3 * act_bytes * t * i
    lora = 0
    groups: dict[str, list[str]] = {
        "attn_in": ["q_proj", "k_proj", "v_proj"],
        "o": ["o_proj"],
        "mlp_in": ["gate_proj", "up_proj"],
        "down": ["down_proj"],
    }
    widths = {"attn_in": h, "o": arch.q_width, "mlp_in": h, "down": i}
    for group, names in groups.items():
        hit = [n for n in names if n in targets]
        if not hit:
            continue
        width = widths[group]
        copies = 1 if (act_bytes == LORA_PARAM_BYTES and lora_dropout == 0.0) else len(hit)
        per_copy = t * width * (LORA_PARAM_BYTES + (1 if lora_dropout > 0 else 0))
        lora += copies * per_copy + len(hit) * t * r * LORA_PARAM_BYTES
    return norms + attn + mlp + lora


def loss_activation_bytes(arch: ModelArch, tokens: int, act_bytes: int) -> int:
    """Logits and cross-entropy around the loss: ``(12 + a)·T·V`` (+ ``2a·T·V`` with logit soft-capping).

    The model returns logits in the activation dtype (``a·T·V``, kept by the output); the
    loss upcasts to fp32, ``log_softmax`` saves its fp32 output (``4·T·V``), and backward
    holds the incoming and outgoing fp32 gradients (``8·T·V``). Source: transformers
    ``ForCausalLMLoss``; torch ``cross_entropy`` autograd.
    """
    extra = 2 * act_bytes if arch.final_logit_softcapping else 0
    return (12 + act_bytes + extra) * tokens * arch.vocab_size


def estimate_lora_finetune_peak(
    config: ModelArch | Mapping[str, Any],
    precision: Precision | str | None = None,
    r: int = 16,
    target_modules: Iterable[str] = ("q_proj", "v_proj"),
    seq_len: int = 512,
    batch: int = 1,
    gradient_checkpointing: bool = False,
    *,
    lora_dropout: float = 0.0,
    double_quant: bool = True,
    device: DeviceKind = "cuda",
) -> MemoryBreakdown:
    """Estimate the peak memory of one LoRA (16/32-bit base) or QLoRA (4/8-bit base) training step.

    LoRA (precision bf16/fp16/fp32; ``None`` means bf16):
        frozen base at the precision + LoRA params (fp32) + their gradients (fp32) + AdamW
        ``exp_avg``/``exp_avg_sq`` (2 × fp32) + activations + runtime.
    QLoRA (precision nf4/fp4/int8), as ``prepare_model_for_kbit_training`` leaves the model:
        quantized linears + constants + embeddings/lm_head/norms/biases **upcast to fp32**
        + LoRA params/grads/AdamW + activations in fp32 (norm outputs are fp32 once the norm
        weights are) + the dequantized largest projection used by backward.

    Activations:
        * without checkpointing: ``L × per-layer saved`` (:func:`training_activation_bytes_per_layer`)
          + loss (:func:`loss_activation_bytes`) + backward workspace;
        * with gradient checkpointing: ``L·a·T·H`` (each layer's input) + one layer's saved
          activations during recompute + loss + backward workspace.
        Backward workspace: ``T·(2·a·I + 4·H)`` (gradient of the MLP intermediate and fp32
        residual gradient). The KV cache is not built (``use_cache=False`` in training).

    Args:
        config: ``config.json`` dict or :class:`ModelArch`.
        precision: Base precision; ``None`` = bf16. nf4/fp4/int8 mean QLoRA-style k-bit training.
        r: LoRA rank.
        target_modules: peft ``target_modules`` (projection names).
        seq_len: Tokens per sequence ``s``.
        batch: Micro-batch ``b``.
        gradient_checkpointing: Recompute activations in backward.
        lora_dropout: peft ``lora_dropout`` (> 0 saves a dropout output and mask per target).
        double_quant: 4-bit double quantization (QLoRA default: on).
        device: ``cuda``/``unified`` or ``cpu`` (runtime terms).

    Returns:
        A :class:`MemoryBreakdown` with mode ``lora`` or ``qlora``.

    Raises:
        PlanningError: Bad precision, rank, targets, length or batch.
    """
    arch = as_arch(config)
    prec = Precision.BF16 if precision is None else as_precision(precision)
    _positive("r", r)
    _positive("seq_len", seq_len)
    _positive("batch", batch)
    targets = tuple(target_modules)
    kbit = prec.is_quantized
    if kbit:
        terms = _weight_terms(arch, prec, double_quant=double_quant, unquantized_bytes=4)
        act = 4
    else:
        terms = _weight_terms(arch, prec, double_quant=double_quant)
        act = prec.compute_bytes
    terms += _lora_state_terms(r, lora_param_count(arch, r, targets))
    repeat_kv = batch > 1
    act_term = _training_activation_term(
        arch, seq_len, batch, act, r, targets, lora_dropout, gradient_checkpointing, kbit=kbit
    )
    terms.append(act_term)
    acts = act_term.bytes
    overhead = ALLOCATOR_OVERHEAD.get(device, 0.10)
    terms.append(
        MemoryTerm(
            "allocator",
            f"allocator overhead ({overhead:.0%} of activations)",
            int(acts * overhead),
            f"{overhead} × activations",
            "measured on CPU (SmolLM2-135M LoRA); CUDA caching-allocator fragmentation",
        )
    )
    terms.extend(_runtime_terms(device, training=True))
    notes = []
    if kbit:
        notes.append(
            "k-bit prep: embeddings, lm_head, norms and biases upcast to fp32 (peft prepare_model_for_kbit_training)"
        )
    if repeat_kv:
        notes.append("batch > 1: assumes a padding mask, so SDPA gets repeated KV heads")
    return _breakdown("qlora" if kbit else "lora", arch, prec, device, seq_len, batch, terms, notes)


def _breakdown(
    mode: str,
    arch: ModelArch,
    precision: Precision,
    device: str,
    context: int,
    batch: int,
    terms: list[MemoryTerm],
    notes: list[str],
) -> MemoryBreakdown:
    """The :class:`MemoryBreakdown` of an estimate: ``params`` and the leading notes come from ``arch``."""
    return MemoryBreakdown(
        mode=mode,
        precision=precision,
        device=device,
        context=context,
        batch=batch,
        params=arch.total_params,
        terms=tuple(terms),
        notes=(*arch.notes, *notes),
    )


def _lora_state_terms(r: int, n_lora: int) -> list[MemoryTerm]:
    """LoRA params, their gradients and AdamW's two states, all fp32 (``n_lora`` parameters)."""
    return [
        MemoryTerm(
            "lora_params",
            f"LoRA params r={r} ({n_lora:,}) fp32",
            n_lora * 4,
            "L·Σ r·(in+out) × 4",
            "LoRA (Hu et al., 2021); peft autocast_adapter_dtype",
        ),
        MemoryTerm(
            "lora_grads",
            "LoRA gradients fp32",
            n_lora * 4,
            "n_lora × 4",
            "accelerate estimate-memory (grads = params)",
        ),
        MemoryTerm(
            "optimizer",
            "AdamW states (2 × fp32)",
            n_lora * 8,
            "n_lora × 8",
            "torch.optim.AdamW exp_avg, exp_avg_sq",
        ),
    ]


def _training_activation_term(
    arch: ModelArch,
    seq_len: int,
    batch: int,
    act: int,
    r: int,
    targets: tuple[str, ...],
    lora_dropout: float,
    gradient_checkpointing: bool,
    *,
    kbit: bool,
) -> MemoryTerm:
    """The ``activations`` term of :func:`estimate_lora_finetune_peak` (see its docstring), ``act`` bytes/element."""
    t = seq_len * batch
    per_layer = training_activation_bytes_per_layer(
        arch, t, act, r, targets, lora_dropout=lora_dropout, repeat_kv=batch > 1
    )
    loss = loss_activation_bytes(arch, t, act)
    backward_ws = t * (2 * act * arch.intermediate_size + 4 * arch.hidden_size)
    if gradient_checkpointing:
        acts = arch.num_layers * act * t * arch.hidden_size + per_layer + loss + backward_ws
        aformula = "L·a·T·H + one layer's saved + (12+a)·T·V + T·(2aI + 4H)"
    else:
        acts = arch.num_layers * per_layer + loss + backward_ws
        aformula = "L × per-layer saved + (12+a)·T·V + T·(2aI + 4H)"
    if kbit:
        acts += arch.max_linear().numel * 2  # dequantized weight in backward (bf16 compute dtype)
        aformula += " + max n × 2 (dequantized weight)"
    return MemoryTerm(
        "activations",
        f"activations ({seq_len} tok × {batch}, {'checkpointed' if gradient_checkpointing else 'all saved'}, a={act})",
        acts,
        aformula,
        "Korthikanti et al. 2022; transformers modeling + ForCausalLMLoss; peft LoRA forward",
    )
