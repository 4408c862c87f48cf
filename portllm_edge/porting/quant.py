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

It also holds :func:`chunked_4bit_quantization`: bitsandbytes' CPU ``quantize_4bit`` makes
fp32 temporaries of the whole weight, so quantizing one large projection briefly holds about
15 bytes per weight; quantizing it in slices of whole blocks gives the same bytes in bounded
memory.

It must not import bitsandbytes at module import.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

QUANTIZE_CHUNK_ELEMENTS = 4 * 1024 * 1024
"""Weights quantized per slice on CPU (a multiple of every bitsandbytes blocksize, 64-4096, and even)."""


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


def quantize_4bit_in_chunks(original: Any, chunk: int = QUANTIZE_CHUNK_ELEMENTS) -> Any:
    """Wrap ``bitsandbytes.functional.quantize_4bit`` so a large CPU tensor is quantized slice by slice.

    Blockwise 4-bit quantization treats every block of ``blocksize`` weights on its own (one
    absmax per block; QLoRA §3), so quantizing whole-block slices and concatenating the packed
    codes and the absmax gives the bytes of one call. Double quantization (``compress_statistics``)
    then runs once over all the absmax values, as bitsandbytes does (its ``quantize_4bit``: offset
    = mean, ``quantize_blockwise`` with blocksize 256). bitsandbytes' CPU kernel makes an fp32
    copy, scaled and clamped copies and int32 codes of its whole input (about 15 bytes per weight
    besides the 16-bit source; 0.9 GB for a Mistral-7B ``down_proj``); per slice that is
    ``15 × chunk`` bytes (60 MiB).

    Args:
        original: bitsandbytes' ``functional.quantize_4bit``.
        chunk: weights per slice, even; a call whose blocksize does not divide it goes to ``original``.

    Returns:
        A function with ``quantize_4bit``'s signature and results; tensors off the CPU, tensors of
        at most ``chunk`` weights, other blocksizes and calls with ``absmax``/``out`` go to
        ``original`` unchanged.
    """
    import torch

    def quantize_4bit(
        A: Any,
        absmax: Any = None,
        out: Any = None,
        blocksize: int | None = None,
        compress_statistics: bool = False,
        quant_type: str = "fp4",
        quant_storage: Any = torch.uint8,
    ) -> tuple[Any, Any]:
        sliceable = chunk % (blocksize or 64) == 0 and chunk % 2 == 0
        if (
            A.device.type != "cpu"
            or A.numel() <= chunk
            or absmax is not None
            or out is not None
            or not sliceable
        ):
            return original(A, absmax, out, blocksize, compress_statistics, quant_type, quant_storage)
        from bitsandbytes.functional import QuantState, quantize_blockwise

        flat = A.reshape(-1)
        packed, scales = [], []
        state = None
        for start in range(0, flat.numel(), chunk):
            part, state = original(
                flat[start : start + chunk], None, None, blocksize, False, quant_type, quant_storage
            )
            packed.append(part)
            scales.append(state.absmax)
        assert state is not None
        codes = torch.cat(packed)
        del packed
        block_absmax = torch.cat(scales)
        del scales
        common = {
            "shape": A.shape,
            "dtype": A.dtype,
            "blocksize": state.blocksize,
            "code": state.code,
            "quant_type": quant_type,
        }
        if not compress_statistics:
            return codes, QuantState(absmax=block_absmax, **common)
        offset = block_absmax.mean()
        qabsmax, state2 = quantize_blockwise(block_absmax - offset, blocksize=256)
        return codes, QuantState(absmax=qabsmax, offset=offset, state2=state2, **common)

    return quantize_4bit


@contextlib.contextmanager
def chunked_4bit_quantization(chunk: int = QUANTIZE_CHUNK_ELEMENTS) -> Iterator[bool]:
    """While active, bitsandbytes quantizes large CPU weights to 4 bit in slices (:func:`quantize_4bit_in_chunks`).

    ``bitsandbytes.nn.Params4bit`` (which transformers' 4-bit load uses) looks the function up
    on ``bitsandbytes.functional`` at each call, so replacing that attribute for the duration
    of a load is enough. Yields False (and changes nothing) without bitsandbytes.
    """
    try:
        import bitsandbytes.functional as bnbf
    except Exception:
        yield False
        return
    original = bnbf.quantize_4bit
    bnbf.quantize_4bit = quantize_4bit_in_chunks(original, chunk)
    try:
        yield True
    finally:
        bnbf.quantize_4bit = original


__all__ = [
    "QUANTIZE_CHUNK_ELEMENTS",
    "chunked_4bit_quantization",
    "disable_cpu_repacking",
    "quantize_4bit_in_chunks",
    "repacked_modules",
]
