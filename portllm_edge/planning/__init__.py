"""Memory planning from ``config.json`` alone: estimates, budget, plan, pick.

Public API (all pure and torch-free; bytes everywhere)::

    estimate_inference_peak(config, precision, context=2048, batch=1, *, double_quant=True,
                            device="cuda") -> MemoryBreakdown
    estimate_lora_finetune_peak(config, precision=None, r=16, target_modules=("q_proj", "v_proj"),
                                seq_len=512, batch=1, gradient_checkpointing=False, *,
                                lora_dropout=0.0, double_quant=True, device="cuda") -> MemoryBreakdown
        # precision None/bf16/fp16/fp32 = LoRA; nf4/fp4/int8 = QLoRA (k-bit prepared)
    memory_budget(hardware_profile=None, headroom_fraction=0.1, *, report=None,
                  device_index=None) -> Budget                  # probe or a hardware profile
    select_devices(min_free_memory="8GiB") -> list[GpuDevice]
    load_device() -> "cpu" | "cuda:N"        # the device plan and load share (budget's GPU)
    decide_precision(model, *, device=None, job="port", budget=None, ...) -> PrecisionDecision
        # THE precision decision: plan, pick, port --precision auto, the app and the demo ask it
    plan_model(model, *, hardware_profile=None, budget=None, context=2048, batch=1, ...) -> Plan
    pick_models(*, family=None, hardware_profile=None, budget=None, context=2048, ...)
        -> list[RankedChoice]
    resolve_model_spec(ref) -> ModelSpec      # profile name / hub id, folder, or store name
    ModelArch.from_config(config_dict)        # sizes and exact parameter counts

``config`` may be a ``config.json`` dict or a :class:`ModelArch`. Each
:class:`MemoryBreakdown` is a tuple of :class:`MemoryTerm` (key, label, bytes,
formula, source); ``total_bytes`` is their sum. The formulas and their sources
are in :mod:`portllm_edge.planning.estimate`.
"""

from __future__ import annotations

from portllm_edge.planning.arch import LinearSpec, ModelArch
from portllm_edge.planning.budget import DEFAULT_HEADROOM, Budget, load_device, memory_budget, select_devices
from portllm_edge.planning.decide import PrecisionDecision, decide_precision
from portllm_edge.planning.estimate import (
    ALL_PRECISIONS,
    MemoryBreakdown,
    MemoryTerm,
    Precision,
    decode_bytes_per_token,
    estimate_inference_peak,
    estimate_lora_finetune_peak,
    kv_cache_bytes,
    lora_param_count,
    quantized_linear_bytes,
)
from portllm_edge.planning.pick import RankedChoice, pick_models, port_peak_bytes
from portllm_edge.planning.plan import ModelSpec, Plan, PlanOption, plan_model, resolve_model_spec

__all__ = [
    "ALL_PRECISIONS",
    "DEFAULT_HEADROOM",
    "Budget",
    "LinearSpec",
    "MemoryBreakdown",
    "MemoryTerm",
    "ModelArch",
    "ModelSpec",
    "Plan",
    "PlanOption",
    "Precision",
    "PrecisionDecision",
    "RankedChoice",
    "decide_precision",
    "decode_bytes_per_token",
    "estimate_inference_peak",
    "estimate_lora_finetune_peak",
    "kv_cache_bytes",
    "load_device",
    "lora_param_count",
    "memory_budget",
    "pick_models",
    "plan_model",
    "port_peak_bytes",
    "quantized_linear_bytes",
    "resolve_model_spec",
    "select_devices",
]
