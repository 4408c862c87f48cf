"""Keep bitsandbytes 4-bit weights readable: switch off the CPU repacking of ``Linear4bit``.

The trap: bitsandbytes 0.50 (CPU backend) repacks a ``Linear4bit`` weight into an
AVX512-BF16-friendly layout on the first inference forward pass
(``bitsandbytes.nn.Linear4bit.forward`` calls ``_convert_weight_packed_for_cpu``
and sets ``quant_state.packing_format_for_cpu``). The packed bytes are no longer
the NF4 layout that ``dequantize_4bit`` and peft's ``merge`` expect, and the
inverse transform is lossy (the per-block absmax goes through bf16). The repacked
kernel's outputs differ from the NF4 math too: on SmolLM2-135M (fp32 norms and
embeddings) a patched model's logits moved by up to 0.61 from an oracle built from
the dequantized NF4 weights, against 0.0 without repacking. So every 4-bit load
(:func:`portllm_edge.porting.load.load_base_model`) calls :func:`disable_cpu_repacking`,
and attaching a patch (:func:`portllm_edge.porting.attach.attach_patch`, the fleet's
``PatchSwapper``) refuses a base that :func:`repacked_modules` finds already repacked.

It must not import bitsandbytes at module import.
"""

from __future__ import annotations

from typing import Any


def disable_cpu_repacking(model: Any) -> int:
    """Stop bitsandbytes from repacking ``model``'s 4-bit weights on CPU forward passes.

    Args:
        model: A loaded ``transformers`` model (any layers; only ``Linear4bit`` ones change).

    Returns:
        The number of ``Linear4bit`` modules changed (0 without bitsandbytes).
    """
    try:
        import bitsandbytes as bnb
    except Exception:
        return 0
    count = 0
    for mod in model.modules():
        if isinstance(mod, bnb.nn.Linear4bit) and getattr(mod, "support_avx512bf16_for_cpu", False):
            mod.support_avx512bf16_for_cpu = False
            count += 1
    return count


def repacked_modules(model: Any) -> list[str]:
    """Names of ``model``'s ``Linear4bit`` modules whose weight is already in bitsandbytes' CPU-packed layout."""
    try:
        import bitsandbytes as bnb
    except Exception:
        return []
    return [
        name
        for name, mod in model.named_modules()
        if isinstance(mod, bnb.nn.Linear4bit)
        and getattr(getattr(mod.weight, "quant_state", None), "packing_format_for_cpu", False)
    ]


__all__ = ["disable_cpu_repacking", "repacked_modules"]
