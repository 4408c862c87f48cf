"""Safe handling of bitsandbytes 4-bit weights: the CPU repacking trap, dequantization, merge refusal.

The trap: bitsandbytes 0.50 (CPU backend) repacks a ``Linear4bit`` weight into an
AVX512-BF16-friendly layout on the first inference forward pass
(``bitsandbytes.nn.Linear4bit.forward`` calls ``_convert_weight_packed_for_cpu``
and sets ``quant_state.packing_format_for_cpu``). The packed bytes are no longer
the NF4 layout that ``dequantize_4bit`` and peft's ``merge`` expect, so a merge
after any forward pass silently produces garbage weights. bitsandbytes' inverse
transform is *not* exact either: repacking stores the per-block absmax in bf16, so
a restored weight differs from the original by up to ~1 % of its scale (measured
on a tiny Llama: 3e-4 absolute on weights of std 2e-2) -- as large as a real
version update's drift. So we (1) never merge into 4-bit weights at all
(quantizing after a merge is a separate explicit step; ``port --merge-to`` streams
W_new + ΔW from the safetensors files), (2) switch repacking off for models whose
weights will be read back (``load_base_model(..., cpu_repack=False)`` calls
:func:`disable_cpu_repacking`), and (3) refuse to dequantize a weight that was
already repacked (:func:`dequantize_4bit_weight`), instead of returning wrong
numbers. :func:`restore_4bit_layout` exists for saving, and says it is approximate.
"""

from __future__ import annotations

from typing import Any

from portllm_edge.errors import PortingError


def _linear4bit_modules(model: Any) -> list[tuple[str, Any]]:
    try:
        import bitsandbytes as bnb
    except Exception:
        return []
    return [(n, m) for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)]


def is_quantized(model: Any) -> bool:
    """True when ``model`` holds bitsandbytes 4-bit or 8-bit layers."""
    try:
        import bitsandbytes as bnb
    except Exception:
        return False
    return any(isinstance(m, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)) for m in model.modules())


def repacked_modules(model: Any) -> list[str]:
    """Names of ``Linear4bit`` modules whose weight is in bitsandbytes' CPU-packed layout."""
    return [
        name
        for name, mod in _linear4bit_modules(model)
        if getattr(getattr(mod.weight, "quant_state", None), "packing_format_for_cpu", False)
    ]


def restore_4bit_layout(model: Any) -> int:
    """Undo bitsandbytes' CPU repacking on every ``Linear4bit`` of ``model``, in place.

    Approximate: the absmax constants went through bf16 during repacking (see the
    module docstring). Use it before saving a 4-bit model, never before measuring or merging.

    Returns:
        The number of modules restored (0 when nothing was repacked).

    Raises:
        PortingError: modules are repacked but this bitsandbytes has no inverse transform.
    """
    restored = 0
    for name, mod in _linear4bit_modules(model):
        state = getattr(mod.weight, "quant_state", None)
        if not getattr(state, "packing_format_for_cpu", False):
            continue
        try:
            from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse
        except ImportError as exc:  # pragma: no cover - depends on the bitsandbytes version
            raise PortingError(
                f"{name}: 4-bit weight is in bitsandbytes' CPU-packed layout and cannot be restored.",
                hint="reload the base model and merge before any forward pass, or use `port --merge-to`",
            ) from exc
        mod.weight.data, mod.weight.quant_state = _convert_weight_packed_for_cpu_inverse(
            mod.weight.data,
            state,  # type: ignore[arg-type]
        )
        if hasattr(mod, "quant_state"):
            mod.quant_state = mod.weight.quant_state
        restored += 1
    return restored


def disable_cpu_repacking(model: Any) -> int:
    """Stop bitsandbytes from repacking 4-bit weights on CPU forward passes; returns modules changed."""
    count = 0
    for _, mod in _linear4bit_modules(model):
        if getattr(mod, "support_avx512bf16_for_cpu", False):
            mod.support_avx512bf16_for_cpu = False
            count += 1
    return count


def dequantize_4bit_weight(module: Any, *, name: str = "Linear4bit") -> Any:
    """Return the dense weight of a ``Linear4bit`` module, shape ``[out_features, in_features]``.

    dtype: the quant state's dtype (the compute dtype used at load time).

    Raises:
        PortingError: the weight was repacked by a CPU forward pass, so its exact
            values are gone (see the module docstring).
    """
    import bitsandbytes.functional as F

    state = module.weight.quant_state
    if getattr(state, "packing_format_for_cpu", False):
        raise PortingError(
            f"{name}: the 4-bit weight was repacked by bitsandbytes on a CPU forward pass; "
            "its exact values can no longer be read.",
            hint="load the base with cpu_repack=False (portllm-edge does this for merges and drift), "
            "or read the weights from the safetensors files",
        )
    return F.dequantize_4bit(module.weight.data, state)


def refuse_merge_into_quantized(model: Any, *, what: str = "the loaded base") -> None:
    """Raise when asked to merge a patch into quantized weights.

    Raises:
        PortingError: always when ``model`` is quantized; merging into NF4/int8 rounds ΔW
            away and (on CPU) can read repacked bytes.
    """
    if is_quantized(model):
        raise PortingError(
            f"refusing to merge the patch into {what}: its weights are bitsandbytes-quantized.",
            hint="use `port --merge-to DIR` (streams W_new + ΔW in bf16/fp32 from the safetensors files); "
            "quantize the merged folder afterwards as a separate step",
        )
