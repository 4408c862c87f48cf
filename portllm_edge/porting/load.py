"""Load a base model at a chosen precision: NF4 (default), int8, bf16, fp16 or fp32.

NF4 uses bitsandbytes 4-bit NormalFloat with double quantization and an explicit
compute dtype (Dettmers et al., "QLoRA", 2023, §3; transformers docs,
"bitsandbytes" quantization page). bitsandbytes leaves embeddings, lm_head and
norms unquantized; they stay at the checkpoint's stored 16-bit dtype where the
device computes in it natively (:func:`unquantized_dtype`), else fp32 -- a
Mistral-7B-shaped base keeps its 0.5 GB of embeddings at 0.5 GB, not 1 GB.
``auto`` asks the planner (:func:`portllm_edge.planning.decide_precision`).

Devices are ``"cpu"``, ``"cuda"`` (= ``cuda:0``) or ``"cuda:N"``. Every CUDA load
goes through ``device_map={"": N}`` so weights are placed on the GPU as they are
read, never staged in host RAM first (which doubles the footprint on unified-memory
boards such as Jetson).

bitsandbytes is imported lazily behind :func:`bitsandbytes_available`, never at
module import. ``trust_remote_code`` is always off unless the caller asks.
"""

from __future__ import annotations

import contextlib
import functools
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from portllm_edge.errors import BaseModelError, ConfigError
from portllm_edge.hardware.compute import device_kind
from portllm_edge.models.refs import ResolvedBase, resolve_base
from portllm_edge.planning.estimate import Precision
from portllm_edge.porting.offload import Offload

LOADABLE: tuple[Precision, ...] = (
    Precision.NF4,
    Precision.INT8,
    Precision.BF16,
    Precision.FP16,
    Precision.FP32,
)
"""Precisions :func:`load_base_model` can load (fp4 is planned for, not loaded)."""
PRECISIONS: tuple[str, ...] = ("auto", *(p.value for p in LOADABLE))
MALLOC_MMAP_THRESHOLD = 128 * 1024
"""Bytes from which glibc serves (and, when freed, returns) an allocation with its own mmap."""
CACHE_SHARD_SIZE = "256MB"
"""Shard size of the quantized copy: ``save_pretrained`` holds one shard's serialized bytes at a time."""


@functools.lru_cache(maxsize=1)
def bitsandbytes_version() -> tuple[int, ...] | None:
    """Installed bitsandbytes version as a tuple, or ``None`` when it is missing or broken."""
    import logging

    # On AVX512-BF16 CPUs bitsandbytes tries an optional hub-hosted kernel package and
    # warns when it is absent; we run offline by design, so that warning is noise.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    try:
        import bitsandbytes  # noqa: F401
    except Exception:
        return None
    from portllm_edge.hardware.compute import bitsandbytes_installed_version

    return bitsandbytes_installed_version()


@functools.lru_cache(maxsize=1)
def return_freed_buffers_to_os() -> bool:
    """Make glibc hand every freed allocation of >= 128 KiB back to the OS at once (Linux/glibc only).

    Why: a quantizing load frees one 16/32-bit copy of each weight right after
    quantizing it. glibc's default *dynamic* mmap threshold rises to the largest freed
    block (up to 32 MiB), so later copies are carved from the heap and the small
    4-bit results interleave with them: the freed copies stay resident. Measured
    (anonymous RSS above the runtime, NF4 load from bf16 shards): TinyLlama-1.1B shape,
    default thresholds 1253 MiB peak / 1153 MiB after the load, 1 MiB fixed 763 / 621
    MiB; Qwen2-0.5B shape plus one forward pass, 1 MiB 564 / 508 MiB, 128 KiB 525 / 451
    MiB (the tensors themselves: 436 MiB). ``mallopt(M_MMAP_THRESHOLD)`` and
    ``mallopt(M_TRIM_THRESHOLD)`` (man 3 mallopt) fix both thresholds for the whole process.

    Returns:
        True when both settings were applied; False on other C libraries or systems.
    """
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 -- glibc only: musl has no such thresholds
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    return bool(
        libc.mallopt(m_mmap_threshold, MALLOC_MMAP_THRESHOLD)
        and libc.mallopt(m_trim_threshold, MALLOC_MMAP_THRESHOLD)
    )


def device_index(device: str) -> int:
    """The N of ``cuda:N`` (0 for plain ``cuda``).

    Raises:
        ConfigError: ``device`` is not ``cpu``, ``cuda`` or ``cuda:N``.
    """
    kind, _, index = device.partition(":")
    if kind not in ("cpu", "cuda") or (index and not index.isdigit()) or (kind == "cpu" and index):
        raise ConfigError(f"device {device!r} is not known.", hint="use cpu, cuda or cuda:N")
    return int(index or 0)


def bitsandbytes_available(device: str = "cpu") -> bool:
    """True when bitsandbytes can run 4-bit/8-bit layers on ``device`` ("cpu", "cuda" or "cuda:N")."""
    from portllm_edge.hardware.compute import bitsandbytes_runs_on

    return bitsandbytes_version() is not None and bitsandbytes_runs_on(device)


def default_device() -> str:
    """The device a load uses when none is given: the planner's (:func:`portllm_edge.planning.load_device`).

    ``"cuda:N"`` for the visible GPU the budget plans for (the one with the most free memory)
    when torch sees CUDA, else ``"cpu"``.
    """
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    from portllm_edge.planning.budget import load_device

    device = load_device()
    return device if device_kind(device) == "cuda" else "cuda:0"


def resolve_precision(precision: str, device: str, base: ResolvedBase | None = None) -> str:
    """Turn ``auto`` into a concrete precision for ``device``; validate the others.

    ``auto`` is the planner's answer for porting onto ``base`` on ``device``
    (:func:`portllm_edge.planning.decide_precision`, the one precision decision); without
    a base, the precision it prefers when memory is not the limit.

    Raises:
        ConfigError: unknown precision, or a quantized one where bitsandbytes can't run.
    """
    if isinstance(precision, Precision):
        precision = precision.value
    if precision not in PRECISIONS:
        raise ConfigError(
            f"--precision {precision!r} is not known.", hint=f"choose one of {', '.join(PRECISIONS)}"
        )
    if precision == "auto":
        from portllm_edge.planning.decide import decide_precision

        return decide_precision(base.path if base is not None else None, device=device).precision.value
    if precision in ("nf4", "int8") and not bitsandbytes_available(device):
        raise ConfigError(
            f"--precision {precision} needs bitsandbytes >= 0.46.1 on {device}; it is missing or too old.",
            hint="pip install -U bitsandbytes, or choose --precision bf16/fp32",
        )
    return precision


def default_compute_dtype(device: str) -> str:
    """Compute dtype for quantized layers: bf16 on CUDA (fp16 if bf16 is unsupported), fp32 on CPU."""
    if device_kind(device) == "cuda":
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def native_dtypes(device: str) -> tuple[str, ...]:
    """Dtypes ``device`` computes in natively: CUDA fp32/fp16 (+ bf16 from compute capability 8.0);
    CPU fp32 (+ bf16 with AVX512-BF16/AMX, :func:`portllm_edge.hardware.compute.cpu_bf16_native`)."""
    if device_kind(device) == "cuda":
        import torch

        return ("fp32", "fp16", "bf16") if torch.cuda.is_bf16_supported() else ("fp32", "fp16")
    from portllm_edge.hardware.compute import cpu_bf16_native

    return ("fp32", "bf16") if cpu_bf16_native() else ("fp32",)


def stored_dtype(base: ResolvedBase) -> str | None:
    """The checkpoint's dtype from ``config.json`` (``dtype``/``torch_dtype``) as fp32/bf16/fp16, or ``None``."""
    try:
        cfg = base.config()
    except BaseModelError:
        return None
    name = str(cfg.get("dtype") or cfg.get("torch_dtype") or "")
    return {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}.get(name)


def unquantized_dtype(base: ResolvedBase, device: str, compute_dtype: str) -> str:
    """Dtype of a quantized load's unquantized tensors (embeddings, lm_head, norms, biases).

    The stored dtype when ``device`` computes in it natively (no copy, no upcast: bitsandbytes
    casts each layer's input to ``compute_dtype`` and its output back), else ``compute_dtype``.
    """
    stored = stored_dtype(base)
    return stored if stored is not None and stored in native_dtypes(device) else compute_dtype


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
        compute_dtype: dtype of activations in quantized layers ("fp32", "bf16", "fp16"); for
            16/32-bit loads the load dtype.
        device: "cpu" or "cuda".
        load_seconds: wall time of loading, seconds.
        quantization: the bitsandbytes settings used, for records.
        unquantized_dtype: dtype of the tensors left unquantized (embeddings, lm_head, norms).
        device_index: the N of ``cuda:N`` (``None`` on CPU).
    """

    model: Any
    tokenizer: Any
    base: ResolvedBase
    precision: str
    compute_dtype: str
    device: str
    load_seconds: float
    quantization: dict[str, Any] = field(default_factory=dict)
    unquantized_dtype: str = "fp32"
    device_index: int | None = None


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


def _from_pretrained(path: Any, kwargs: dict[str, Any], concrete: str) -> Any:
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as exc:
        _check_shards(Path(path))  # a damaged shard: named with its tensor (tensorio's checks)
        raise BaseModelError(
            f"{path}: cannot load weights at {concrete} ({type(exc).__name__}: {str(exc)[:200]}).",
            hint="check the folder with `portllm-edge check`, or try another --precision",
        ) from exc


@contextlib.contextmanager
def _read_checkpoint_without_mmap() -> Iterator[None]:
    """While a converting load runs, transformers reads safetensors shards with ``pread``, not ``mmap``.

    A converting load is a quantizing one, or one whose dtype differs from the stored dtype
    (an fp32 checkpoint loaded at bf16); a load at the stored dtype keeps the map, and its
    tensors are the file's pages.

    transformers (5.x, ``PreTrainedModel._load_pretrained_model``) maps every shard for the
    whole load; each source tensor read once for quantizing or casting then stays resident in
    the process's mapping until the load ends -- the whole checkpoint at once (2.1 GB at
    1.1B, 14.5 GB at 7B). With safetensors' ``pread`` backend (the one transformers itself
    uses on Windows) each tensor is read into memory freed once it is quantized or cast, and the file's
    pages stay reclaimable page cache, not the process's. A transformers without a
    module-level ``safe_open`` is left as it is.
    """
    import transformers.modeling_utils as modeling

    original = getattr(modeling, "safe_open", None)
    if original is None:
        yield
        return

    def pread_open(*args: Any, **kwargs: Any) -> Any:
        kwargs["backend"] = "pread"
        return original(*args, **kwargs)

    setattr(modeling, "safe_open", pread_open)  # noqa: B010 -- a module attribute of another type
    try:
        yield
    finally:
        setattr(modeling, "safe_open", original)  # noqa: B010


def quantization_settings(precision: str, compute_dtype: str) -> dict[str, Any]:
    """The bitsandbytes settings of a load at ``precision`` (empty for 16/32-bit), as recorded and cache-keyed.

    NF4: quant type, double quant, compute dtype, blocksize 64; int8: quant type, compute dtype.
    """
    if precision == "nf4":
        return {"quant_type": "nf4", "double_quant": True, "compute_dtype": compute_dtype, "blocksize": 64}
    if precision == "int8":
        return {"quant_type": "int8", "compute_dtype": compute_dtype}
    return {}


def quantized_copy_dir(
    base: ResolvedBase, precision: str, device: str, compute_dtype: str | None = None
) -> Path | None:
    """The model-store folder :func:`load_base_model` reads (or writes) ``base``'s quantized copy in.

    Keyed by the base's fingerprint and every setting that changes the quantized bytes: the
    :func:`quantization_settings`, the precision, the dtype of the unquantized tensors
    (:func:`unquantized_dtype`) and the installed bitsandbytes version
    (:func:`portllm_edge.models.store.quantized_cache_dir`). The load and the planner ask
    this same function.

    Args:
        base: The resolved base.
        precision: A concrete precision (nf4, int8, bf16, fp16, fp32).
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        compute_dtype: fp32, bf16 or fp16; default :func:`default_compute_dtype`.

    Returns:
        The folder (it may not exist), or ``None`` for 16/32-bit precisions (no quantized copy).
    """
    if precision not in ("nf4", "int8"):
        return None
    from portllm_edge.hardware.compute import bitsandbytes_installed_version
    from portllm_edge.models.store import quantized_cache_dir

    cdtype = compute_dtype or default_compute_dtype(device)
    settings = {
        **quantization_settings(precision, cdtype),
        "precision": precision,
        "unquantized_dtype": unquantized_dtype(base, device, cdtype),
        "bitsandbytes": bitsandbytes_installed_version(),
    }
    return quantized_cache_dir(base.fingerprint(), settings)


def has_quantized_copy(
    base: ResolvedBase, precision: str, device: str, compute_dtype: str | None = None
) -> bool:
    """True when the model store holds ``base``'s quantized copy for these settings (:func:`quantized_copy_dir`).

    A load at ``precision`` then reads that copy instead of quantizing the checkpoint, and its
    peak has no quantizing transient (:func:`portllm_edge.planning.estimate_inference_peak`,
    ``quantized_copy``).
    """
    folder = quantized_copy_dir(base, precision, device, compute_dtype)
    return folder is not None and _copy_damage(folder) is None


def _check_shards(folder: Path) -> None:
    """Validate the header of every ``*.safetensors`` file in ``folder`` (:func:`portllm_edge.tensorio.read_safetensors_header`).

    Raises:
        BaseModelError: a file that is truncated or corrupt, named with the tensor and the fault.
    """
    from portllm_edge.tensorio import read_safetensors_header

    for shard in sorted(folder.glob("*.safetensors")):
        read_safetensors_header(shard, error_cls=BaseModelError)


def _copy_damage(folder: Path) -> str | None:
    """Why the quantized copy in ``folder`` can't be read (no config.json, a damaged shard), or None when it can."""
    if not (folder / "config.json").is_file():
        return f"{folder / 'config.json'} is missing"
    if not any(folder.glob("*.safetensors")):
        return f"{folder} holds no .safetensors file"
    try:
        _check_shards(folder)
    except BaseModelError as exc:
        return exc.message
    return None


def _save_quantized(model: Any, cache_dir: Path, base: ResolvedBase) -> None:
    """Save a freshly quantized model into the store's cache (atomically); a full disk or an
    unwritable store folder only warns (the load goes on without a copy)."""
    import shutil

    from portllm_edge.fsutil import atomic_dir

    need = sum(f.stat().st_size for f in base.weight_files) // 3  # 4-bit + constants + 16-bit embeddings
    try:
        cache_dir.parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(cache_dir.parent).free
    except OSError as exc:
        warnings.warn(f"could not keep a quantized copy of {base.model_id}: {exc}", stacklevel=3)
        return
    if free < 2 * need:
        warnings.warn(
            f"{cache_dir.parent}: too little free disk to keep a quantized copy of {base.model_id}",
            stacklevel=3,
        )
        return
    try:
        with atomic_dir(cache_dir, overwrite=True) as tmp:
            # safetensors serializes a whole shard's bytes in memory: small shards bound that transient
            model.save_pretrained(tmp, max_shard_size=CACHE_SHARD_SIZE)
    except (OSError, ValueError, RuntimeError, NotImplementedError) as exc:
        warnings.warn(f"could not keep a quantized copy of {base.model_id}: {exc}", stacklevel=3)


def load_base_model(
    ref: str | ResolvedBase,
    precision: str = "nf4",
    *,
    device: str | None = None,
    compute_dtype: str | None = None,
    trust_remote_code: bool = False,
    online: bool = False,
    quantized_cache: bool = True,
    offload: Offload | None = None,
) -> LoadedBase:
    """Load a base model for porting or evaluation.

    Args:
        ref: a base reference (see :func:`portllm_edge.models.resolve_base`) or a resolved base.
        precision: auto, nf4, int8, bf16, fp16 or fp32.
        device: "cpu", "cuda" or "cuda:N"; default: CUDA when available.
        compute_dtype: fp32, bf16 or fp16 for quantized layers; default per device.
        trust_remote_code: run model code shipped with the checkpoint (off by default).
        online: allow a hub download for a hub id.
        quantized_cache: for nf4/int8, load the base's quantized copy from the model store when
            one exists for these settings, else quantize and save one (before any forward pass)
            for the next load (:func:`portllm_edge.models.store.quantized_cache_dir`).
        offload: ``device_map="auto"`` with a ``max_memory`` budget (accelerate): layers that do not
            fit go to CPU RAM or disk (:mod:`portllm_edge.porting.offload`); floating precisions only.

    One load path for a single port, a fleet port, evaluation and training. Every NF4 load
    switches off bitsandbytes' CPU repacking of 4-bit weights
    (:func:`portllm_edge.porting.quant.disable_cpu_repacking`), so outputs are the NF4 math's
    (SmolLM2-135M with fp32 norms/embeddings: max |logit - oracle| 0.0 without repacking,
    0.61 with it; the repacked kernel keeps each block's absmax in bf16). Every load first
    calls :func:`return_freed_buffers_to_os` (else the quantizing load's freed copies stay
    resident).

    Returns:
        A :class:`LoadedBase` in eval mode; ``quantization["cache"]`` says whether the copy was used.

    Raises:
        BaseModelError: the reference can't be resolved or the weights can't be loaded.
        ConfigError: the precision can't run here.
    """
    import torch

    bitsandbytes_version()  # quiets bitsandbytes' optional-kernel warning before it is imported
    return_freed_buffers_to_os()

    base = ref if isinstance(ref, ResolvedBase) else resolve_base(ref, online=online)
    device = device or default_device()
    index = device_index(device)
    kind = device_kind(device)
    concrete = resolve_precision(precision, device, base)
    cdtype = compute_dtype or default_compute_dtype(device)
    qcfg = quantization_config(concrete, cdtype)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code, "use_safetensors": True}
    kwargs["device_map"] = {"": index} if kind == "cuda" else {"": "cpu"}
    keep = unquantized_dtype(base, device, cdtype) if qcfg is not None else concrete
    kwargs["dtype"] = _torch_dtype(keep)
    if qcfg is not None:
        kwargs["quantization_config"] = qcfg
    if offload is not None:
        from portllm_edge.porting.offload import check_offload_precision, load_kwargs

        check_offload_precision(concrete)
        kwargs.update(load_kwargs(offload))
    quant = quantization_settings(concrete, cdtype)
    tokenizer = load_tokenizer(base, trust_remote_code=trust_remote_code)
    start = time.perf_counter()
    cache_dir = quantized_copy_dir(base, concrete, device, cdtype) if quantized_cache else None
    damage = _copy_damage(cache_dir) if cache_dir is not None and cache_dir.is_dir() else None
    if damage is not None:
        warnings.warn(
            f"the quantized copy of {base.model_id} in the model store can't be read ({damage}); "
            "quantizing the checkpoint again and replacing it",
            stacklevel=2,
        )
    from_cache = cache_dir is not None and cache_dir.is_dir() and damage is None
    converting = qcfg is not None or keep != stored_dtype(base)
    reading = _read_checkpoint_without_mmap() if converting else contextlib.nullcontext()
    with reading:
        if from_cache:
            assert cache_dir is not None
            model = _from_pretrained(
                cache_dir, {k: v for k, v in kwargs.items() if k != "quantization_config"}, concrete
            )
        else:
            from portllm_edge.porting.quant import chunked_4bit_quantization

            slicing = chunked_4bit_quantization() if concrete == "nf4" else contextlib.nullcontext()
            with slicing:  # bounded temporaries while each weight is quantized
                model = _from_pretrained(base.path, kwargs, concrete)
            if cache_dir is not None:  # a copy that was read is not saved again
                _save_quantized(model, cache_dir, base)  # before any forward: no CPU repacking yet
    model.eval()
    if offload is not None:
        from portllm_edge.porting.offload import remove_with

        remove_with(model, offload, kwargs)
    if concrete == "nf4":
        from portllm_edge.porting.quant import disable_cpu_repacking

        disable_cpu_repacking(model)
    seconds = time.perf_counter() - start
    if cache_dir is not None:
        quant["cache"] = {"dir": str(cache_dir), "hit": from_cache}
    del torch
    return LoadedBase(
        model,
        tokenizer,
        base,
        concrete,
        cdtype if qcfg is not None else concrete,
        kind,
        seconds,
        quant,
        keep,
        None if kind == "cpu" else index,
    )
