"""Load a base model at a chosen precision: NF4 (default), int8, bf16 or fp32.

NF4 uses bitsandbytes 4-bit NormalFloat with double quantization and an explicit
compute dtype (Dettmers et al., "QLoRA", 2023, §3; transformers docs,
"bitsandbytes" quantization page). bitsandbytes keeps embeddings, lm_head and
norms in the compute dtype. ``auto`` follows the device: NF4 where bitsandbytes
runs (CUDA, or CPU with bitsandbytes >= 0.46.1), otherwise bf16 on CUDA and fp32
on CPU.

bitsandbytes is imported lazily behind :func:`bitsandbytes_available`, never at
module import. ``trust_remote_code`` is always off unless the caller asks.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from portllm_edge.errors import BaseModelError, ConfigError
from portllm_edge.models.refs import ResolvedBase, resolve_base

Precision = Literal["auto", "nf4", "int8", "bf16", "fp32"]
PRECISIONS: tuple[str, ...] = ("auto", "nf4", "int8", "bf16", "fp32")
MIN_BNB_CPU = (0, 46, 1)


@functools.lru_cache(maxsize=1)
def bitsandbytes_version() -> tuple[int, ...] | None:
    """Installed bitsandbytes version as a tuple, or ``None`` when it is missing or broken."""
    import logging

    # On AVX512-BF16 CPUs bitsandbytes tries an optional hub-hosted kernel package and
    # warns when it is absent; we run offline by design, so that warning is noise.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    try:
        import bitsandbytes
    except Exception:
        return None
    parts = []
    for piece in str(bitsandbytes.__version__).split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def bitsandbytes_available(device: str = "cpu") -> bool:
    """True when bitsandbytes can run 4-bit/8-bit layers on ``device`` ("cpu" or "cuda")."""
    version = bitsandbytes_version()
    if version is None:
        return False
    return device == "cuda" or version >= MIN_BNB_CPU


def default_device() -> str:
    """``"cuda"`` when torch sees a CUDA device, else ``"cpu"``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_precision(precision: str, device: str) -> str:
    """Turn ``auto`` into a concrete precision for ``device``; validate the others.

    Raises:
        ConfigError: unknown precision, or a quantized one where bitsandbytes can't run.
    """
    if precision not in PRECISIONS:
        raise ConfigError(
            f"--precision {precision!r} is not known.", hint=f"choose one of {', '.join(PRECISIONS)}"
        )
    if precision == "auto":
        if bitsandbytes_available(device):
            return "nf4"
        return "bf16" if device == "cuda" else "fp32"
    if precision in ("nf4", "int8") and not bitsandbytes_available(device):
        raise ConfigError(
            f"--precision {precision} needs bitsandbytes >= 0.46.1 on {device}; it is missing or too old.",
            hint="pip install -U bitsandbytes, or choose --precision bf16/fp32",
        )
    return precision


def default_compute_dtype(device: str) -> str:
    """Compute dtype for quantized layers: bf16 on CUDA (fp16 if bf16 is unsupported), fp32 on CPU."""
    if device == "cuda":
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def _torch_dtype(name: str) -> Any:
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


@dataclass
class LoadedBase:
    """A base model in memory.

    Attributes:
        model: the ``transformers`` causal LM (eval mode).
        tokenizer: its tokenizer (pad token set).
        base: where it came from.
        precision: the concrete precision (nf4, int8, bf16, fp32).
        compute_dtype: dtype of activations in quantized layers ("fp32", "bf16", "fp16").
        device: "cpu" or "cuda".
        load_seconds: wall time of loading, seconds.
        quantization: the bitsandbytes settings used, for records.
    """

    model: Any
    tokenizer: Any
    base: ResolvedBase
    precision: str
    compute_dtype: str
    device: str
    load_seconds: float
    quantization: dict[str, Any] = field(default_factory=dict)


def quantization_config(precision: str, compute_dtype: str) -> Any:
    """The ``BitsAndBytesConfig`` for ``precision`` (``None`` for bf16/fp32).

    NF4: ``load_in_4bit``, ``bnb_4bit_quant_type="nf4"``, ``bnb_4bit_use_double_quant=True``,
    ``bnb_4bit_compute_dtype=compute_dtype``. int8: ``load_in_8bit``.
    """
    if precision not in ("nf4", "int8"):
        return None
    from transformers import BitsAndBytesConfig

    if precision == "nf4":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=_torch_dtype(compute_dtype),
        )
    return BitsAndBytesConfig(load_in_8bit=True)


def load_tokenizer(base: ResolvedBase, *, trust_remote_code: bool = False) -> Any:
    """Load the base's tokenizer and make sure it has a pad token (eos when missing).

    Raises:
        BaseModelError: the tokenizer files are missing or unreadable.
    """
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(base.path, trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise BaseModelError(
            f"{base.path}: cannot load the tokenizer ({type(exc).__name__}: {str(exc)[:160]}).",
            hint="the base folder needs tokenizer.json or tokenizer.model with tokenizer_config.json",
        ) from exc
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_base_model(
    ref: str | ResolvedBase,
    precision: str = "nf4",
    *,
    device: str | None = None,
    compute_dtype: str | None = None,
    trust_remote_code: bool = False,
    online: bool = False,
    cpu_repack: bool = True,
) -> LoadedBase:
    """Load a base model for porting or evaluation.

    Args:
        ref: a base reference (see :func:`portllm_edge.models.resolve_base`) or a resolved base.
        precision: auto, nf4, int8, bf16 or fp32.
        device: "cpu" or "cuda"; default: CUDA when available.
        compute_dtype: fp32, bf16 or fp16 for quantized layers; default per device.
        trust_remote_code: run model code shipped with the checkpoint (off by default).
        online: allow a hub download for a hub id.
        cpu_repack: let bitsandbytes repack 4-bit weights for faster CPU inference on the
            first forward pass. Pass ``False`` when the weights will be read back
            (dequantized, merged or compared); see :mod:`portllm_edge.porting.quant`.

    Returns:
        A :class:`LoadedBase` in eval mode.

    Raises:
        BaseModelError: the reference can't be resolved or the weights can't be loaded.
        ConfigError: the precision can't run here.
    """
    import torch

    bitsandbytes_version()  # quiets bitsandbytes' optional-kernel warning before it is imported
    from transformers import AutoModelForCausalLM

    base = ref if isinstance(ref, ResolvedBase) else resolve_base(ref, online=online)
    device = device or default_device()
    concrete = resolve_precision(precision, device)
    cdtype = compute_dtype or default_compute_dtype(device)
    qcfg = quantization_config(concrete, cdtype)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code, "use_safetensors": True}
    if qcfg is not None:
        kwargs["quantization_config"] = qcfg
        kwargs["device_map"] = {"": 0} if device == "cuda" else {"": "cpu"}
        kwargs["dtype"] = _torch_dtype(cdtype)
    else:
        kwargs["dtype"] = _torch_dtype(concrete)
    tokenizer = load_tokenizer(base, trust_remote_code=trust_remote_code)
    start = time.perf_counter()
    try:
        model = AutoModelForCausalLM.from_pretrained(base.path, **kwargs)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise BaseModelError(
            f"{base.path}: cannot load weights at {concrete} ({type(exc).__name__}: {str(exc)[:200]}).",
            hint="check the folder with `portllm-edge check`, or try another --precision",
        ) from exc
    if qcfg is None and device == "cuda":
        model.to("cuda")  # type: ignore[arg-type]
    model.eval()
    if concrete == "nf4" and not cpu_repack:
        from portllm_edge.porting.quant import disable_cpu_repacking

        disable_cpu_repacking(model)
    seconds = time.perf_counter() - start
    quant: dict[str, Any] = {}
    if concrete == "nf4":
        quant = {"quant_type": "nf4", "double_quant": True, "compute_dtype": cdtype, "blocksize": 64}
    elif concrete == "int8":
        quant = {"quant_type": "int8", "compute_dtype": cdtype}
    del torch
    return LoadedBase(
        model, tokenizer, base, concrete, cdtype if qcfg is not None else concrete, device, seconds, quant
    )
