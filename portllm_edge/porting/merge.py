"""Exact streaming merge: write W_new + ΔW to disk, one row block at a time.

Why this module exists: PortLLM's port is W_new + ΔW with ΔW = scale·B·A
(Khan et al., ICLR 2025, §3; scale = lora_alpha/r, or lora_alpha/sqrt(r) with
rsLoRA). peft's ``merge_and_unload`` does that in memory, so it needs the whole
model in RAM, and on a 4-bit model it re-quantizes (the patch's small update is
mostly rounded away) or, after a CPU forward pass, reads bitsandbytes' repacked
layout as NF4 and writes garbage (see :mod:`portllm_edge.porting.quant`). Here the
merge reads the base's safetensors shards with plain ``pread`` calls at the
offsets of the validated headers (:mod:`portllm_edge.tensorio`), a block of rows at
a time (:data:`CHUNK_BYTES`), adds the rows of ΔW for that block
(``scale · B[rows] @ A``; transposed for a ``Conv1D`` module, decided by the module
type as peft does), casts to the output dtype (by default the base's own stored
dtype, :func:`stored_dtype`) and appends the bytes to an output shard whose header
was written first. What happens to each saved tensor of the patch (kept, carried
by token string, dropped, refused) is :mod:`portllm_edge.porting.tensor_plan`'s
decision, the same one the preflight reports and the port rewrite applies. Peak memory is a few row blocks plus the
LoRA factors of one module, not a tensor and never the model; torch is not even
imported (numpy does the arithmetic; bf16 is rounded to nearest-even like torch).
mmap is avoided on purpose: touched mmap pages count toward the process's RSS.

What it must not do: merge into quantized weights (bitsandbytes 4-bit/8-bit,
GPTQ/AWQ, fp8): it refuses them, because quantizing after a merge is a separate,
explicit step; or leave a half-written folder (it writes into a temporary sibling
and renames, :func:`portllm_edge.fsutil.atomic_dir`).

Tied embeddings: when the base ties ``lm_head`` to ``embed_tokens`` and the patch
modifies either (``modules_to_save`` or a LoRA on them), peft's unmerged model
applies the patch to that module only (the tied partner keeps the base rows), so
the merge writes both tensors and sets ``tie_word_embeddings: false``, and says so
in :attr:`MergeResult.notes`. With ``ensure_weight_tying: true`` in the adapter
config peft ties the patched module to its partner, and the merge keeps the tie.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from portllm_edge.errors import ConfigError, PortingError
from portllm_edge.fsutil import atomic_dir, empty_path_reason, unwritable_reason
from portllm_edge.patches.adapter_format import (
    AdapterConfig,
    AdapterLayout,
    LoraModule,
    fan_in_fan_out,
    read_adapter_layout,
)
from portllm_edge.porting.adapter_io import BaseIndex, read_base_index
from portllm_edge.porting.tensor_plan import TensorDecision, TensorPlan, read_tensor_plan
from portllm_edge.tensorio import INDEX_NAME, PICKLE_SUFFIXES, read_safetensors_header

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

MergeDtype = Literal["auto", "bf16", "fp16", "fp32"]
CHUNK_BYTES = 8 * 1024 * 1024
"""Target size (bytes, in fp32) of one row block read, patched and written at a time."""
DISK_MARGIN_BYTES = 64 * 1024 * 1024
"""Free space required on top of the merged model's size."""
WEIGHT_SUFFIXES = (".safetensors", *PICKLE_SUFFIXES, ".gguf", ".msgpack", ".h5", ".ot")
SKIP_FILES = {INDEX_NAME, "pytorch_model.bin.index.json", "config.json"}
_FLOAT_IN = {"F32", "F16", "BF16", "F64"}
_QUANT_FLOATS = {"F8_E5M2", "F8_E4M3", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2"}
_OUT_DTYPE = {"bf16": ("BF16", 2), "fp16": ("F16", 2), "fp32": ("F32", 4)}
_STORED_AS = {"BF16": "bf16", "F16": "fp16", "F32": "fp32", "F64": "fp32"}
_TORCH_NAME = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def stored_dtype(index: BaseIndex) -> str:
    """The merge dtype matching the base's own storage: the float dtype holding most bytes (F64 -> fp32).

    Merging in the base's dtype loses nothing the base did not already round
    (a bf16 merge of an fp32 base rounds every weight to 8 mantissa bits).
    """
    by_dtype: dict[str, int] = {}
    for t in index.tensors.values():
        if t.info.dtype in _STORED_AS:
            by_dtype[t.info.dtype] = by_dtype.get(t.info.dtype, 0) + t.info.nbytes
    if not by_dtype:
        return "bf16"
    return _STORED_AS[max(by_dtype, key=lambda d: by_dtype[d])]


@dataclass(frozen=True)
class MergeResult:
    """What a streaming merge wrote.

    Attributes:
        out_dir: The merged model folder (loadable with ``AutoModelForCausalLM.from_pretrained``).
        dtype: ``"bf16"`` or ``"fp32"``.
        merged_modules: LoRA modules folded into base weights.
        replaced_tensors: Base tensors replaced by the patch's saved (``modules_to_save``) tensors.
        rows_carried: Vocabulary rows carried over from the patch (0 when the vocabulary is unchanged).
        untied: True when tied embeddings had to be untied (see the module docstring).
        tensors_written: Number of tensors in the output shards.
        bytes_written: Total bytes of the output shards.
        notes: Human-readable remarks (untying, dtype changes).
    """

    out_dir: Path
    dtype: str
    merged_modules: int
    replaced_tensors: list[str]
    rows_carried: int
    untied: bool
    tensors_written: int
    bytes_written: int
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        d = dict(self.__dict__)
        d["out_dir"] = str(self.out_dir)
        return d


def human_bytes(n: float) -> str:
    """``1536`` → ``"1.5 KiB"`` (binary units)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


# --------------------------------------------------------------------------- raw tensor IO (no mmap)


class RowReader:
    """Reads row blocks of tensors from one safetensors file with ``os.pread`` (no mmap, no torch)."""

    def __init__(self, path: Path, error_cls: type = PortingError) -> None:
        self.header = read_safetensors_header(path, error_cls=error_cls)
        self.fd = os.open(path, os.O_RDONLY)

    def close(self) -> None:
        os.close(self.fd)

    def raw(self, name: str, start_row: int, stop_row: int) -> bytes:
        info = self.header[name]
        rows = info.shape[0] if info.shape else 1
        row_bytes = info.nbytes // max(rows, 1)
        begin = self.header.payload_offset + info.data_offsets[0] + start_row * row_bytes
        n = (stop_row - start_row) * row_bytes
        data = os.pread(self.fd, n, begin)
        if len(data) != n:
            raise PortingError(
                f"{self.header.path}: tensor `{name}` is truncated (read {len(data)} of {n} bytes)",
                hint="re-download the file",
            )
        return data

    def rows_f32(self, name: str, start_row: int, stop_row: int) -> np.ndarray:
        """Rows ``[start, stop)`` of a float tensor as a ``float32`` array of shape ``[rows, *shape[1:]]``."""
        import numpy as np

        info = self.header[name]
        raw = self.raw(name, start_row, stop_row)
        if info.dtype == "F32":
            arr = np.frombuffer(raw, dtype="<f4").copy()
        elif info.dtype == "BF16":
            arr = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        elif info.dtype == "F16":
            arr = np.frombuffer(raw, dtype="<f2").astype(np.float32)
        elif info.dtype == "F64":
            arr = np.frombuffer(raw, dtype="<f8").astype(np.float32)
        else:
            raise PortingError(
                f"{self.header.path}: tensor `{name}` has dtype {info.dtype}, not a float",
                hint="only float weights can be patched",
            )
        tail = info.shape[1:] if info.shape else ()
        return arr.reshape((stop_row - start_row, *tail)) if info.shape else arr.reshape(())

    def full_f32(self, name: str) -> np.ndarray:
        info = self.header[name]
        return self.rows_f32(name, 0, info.shape[0] if info.shape else 1)


def f32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """Round ``float32`` values to bfloat16 (nearest, ties to even, NaN kept quiet) and return the ``uint16`` bits.

    Same rounding as ``torch.Tensor.to(torch.bfloat16)`` (c10 ``round_to_nearest_even``).
    """
    import numpy as np

    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = ((u + (((u >> 16) & 1) + np.uint32(0x7FFF))) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        rounded[nan] = ((u[nan] >> 16) | 0x0040).astype(np.uint16)
    return rounded


def _encode(x: np.ndarray, out_dtype: str) -> bytes:
    import numpy as np

    if out_dtype == "F32":
        return np.ascontiguousarray(x, dtype="<f4").tobytes()
    if out_dtype == "F16":
        return np.ascontiguousarray(x, dtype="<f2").tobytes()
    return f32_to_bf16_bits(x).astype("<u2", copy=False).tobytes()


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class _Patch:
    """How one base tensor is patched: a LoRA ΔW, a saved replacement, or both kinds of row carry."""

    lora: LoraModule | None = None
    scale: float = 0.0
    fifo: bool = False  # the module is a Conv1D: weight stored [in, out]
    a_carry: TensorDecision | None = None  # lora_embedding_A columns re-indexed by token
    b_carry: TensorDecision | None = None  # lm_head lora_B rows re-indexed by token
    saved_key: str | None = None  # replace with this adapter tensor
    carry: tuple[tuple[int, int], ...] | None = None  # (old_row, new_row): the saved tensor's rows to copy


@dataclass
class _Entry:
    """One output tensor: where its rows come from and how they are patched."""

    name: str
    src: str  # base tensor read for the rows (the embedding for an untied lm_head)
    shape: tuple[int, ...]
    in_dtype: str
    out_dtype: str
    patch: _Patch = field(default_factory=_Patch)

    @property
    def nbytes(self) -> int:
        from portllm_edge.tensorio import DTYPE_BITS

        return math.prod(self.shape) * DTYPE_BITS[self.out_dtype] // 8


def _refuse_quantized(index: BaseIndex) -> None:
    why = index.quantized_storage()
    if why is None:
        for name, bt in index.tensors.items():
            if bt.info.dtype in _QUANT_FLOATS:
                why = f"tensor `{name}` is stored as {bt.info.dtype}"
                break
    if why is not None:
        raise PortingError(
            f"{index.model_dir}: refusing to merge into quantized weights ({why}); a merge never writes into "
            "4-bit/8-bit weights silently",
            hint="merge into the bf16/fp32 release of the base, then quantize the merged model as a separate step "
            "(load it with --precision nf4)",
        )


def _refuse_non_additive(config: AdapterConfig, layout: AdapterLayout, adapter_dir: Path) -> None:
    problems = [
        (bool(config.use_dora or layout.dora), "DoRA (`use_dora: true`) is not an additive ΔW"),
        *((True, why) for why, _ in config.non_additive_reasons()),
        (
            config.lora_bias or any(lm.bias_key for lm in layout.lora.values()),
            "`lora_bias` adds a bias the streaming merge does not write",
        ),
        (
            bool(layout.unknown),
            f"unrecognized adapter tensor `{layout.unknown[0] if layout.unknown else ''}`",
        ),
        (
            bool(layout.incomplete),
            f"module `{layout.incomplete[0] if layout.incomplete else ''}` lacks a LoRA factor",
        ),
    ]
    for bad, why in problems:
        if bad:
            raise PortingError(
                f"{adapter_dir}: cannot merge exactly: {why}",
                hint="run `portllm-edge check` for details; attach the patch unmerged instead",
            )


def _patches_by_tensor(
    plan: TensorPlan, config: AdapterConfig, layout: AdapterLayout, index: BaseIndex
) -> dict[str, _Patch]:
    """Base tensor name -> its :class:`_Patch`, from the tensor plan (refusals raise).

    Raises:
        PortingError: the plan refuses a tensor (no counterpart, shape, shrinking vocabulary, no tokenizer).
    """
    if plan.refusals:
        first = plan.refusals[0]
        raise PortingError(f"{layout.path}: {first.reason}", hint=first.hint or "run `portllm-edge check`")
    model_type = index.config.get("model_type")
    out: dict[str, _Patch] = {}
    for module, lm in layout.lora.items():
        target = plan.targets[module]
        a_d, b_d = plan.get(lm.a_key), plan.get(lm.b_key)
        out[f"{target}.weight"] = _Patch(
            lora=lm,
            scale=config.scaling(module),
            fifo=lm.kind == "linear" and fan_in_fan_out(model_type, target),
            a_carry=a_d if a_d.action == "carry" else None,
            b_carry=b_d if b_d.action == "carry" else None,
        )
    for st in layout.saved.values():
        d = plan.get(st.key)
        assert d.target is not None  # not refused
        out[d.target] = _Patch(saved_key=st.key, carry=d.pairs if d.action == "carry" else None)
    return out


def _tie(
    by_tensor: dict[str, _Patch], config: AdapterConfig, index: BaseIndex
) -> tuple[bool, _Patch | None, list[str]]:
    """Whether the merge unties embed/lm_head, the lm_head patch, and notes (see the module docstring)."""
    embed = index.embedding_name()
    head = next((n for n in index.tensors if n.endswith("lm_head.weight")), "lm_head.weight")
    tied = index.tied and embed is not None
    head_patch = by_tensor.pop(head, None) if tied and head not in index.tensors else by_tensor.get(head)
    if not tied or (embed not in by_tensor and head_patch is None):
        return False, head_patch, []
    if config.ensure_weight_tying:
        if head_patch is not None and embed is not None and embed not in by_tensor:
            by_tensor[embed] = head_patch
        return False, head_patch, ["tied embeddings kept tied (the adapter sets ensure_weight_tying)"]
    return (
        True,
        head_patch,
        [
            "untied embed_tokens and lm_head: the patch modifies one of them and peft applies it to that module "
            "only; config.json now says tie_word_embeddings: false"
        ],
    )


def _plan(
    plan: TensorPlan, config: AdapterConfig, layout: AdapterLayout, index: BaseIndex, out_dtype: str
) -> tuple[dict[Path, list[_Entry]], dict[str, Any]]:
    """Decide every output tensor (per input shard) before any data is read."""
    by_tensor = _patches_by_tensor(plan, config, layout, index)
    untie, head_patch, notes = _tie(by_tensor, config, index)
    if layout.base_copies:
        notes.insert(
            0,
            f"ignored {len(layout.base_copies)} copies of the old base's weights in the patch "
            "(save_embedding_layers); the new base's weights are used",
        )
    embed = index.embedding_name()
    head = next((n for n in index.tensors if n.endswith("lm_head.weight")), "lm_head.weight")
    entries: dict[Path, list[_Entry]] = {f: [] for f in index.files}
    for n in sorted(index.tensors, key=lambda n: index.tensors[n].info.data_offsets):
        info, f = index.tensors[n].info, index.tensors[n].file
        od = _OUT_DTYPE[out_dtype][0] if info.dtype in _FLOAT_IN else info.dtype
        if not (untie and n == head):  # an untied lm_head is rewritten from the embedding
            entries[f].append(_Entry(n, n, info.shape, info.dtype, od, by_tensor.get(n, _Patch())))
        if untie and n == embed:
            entries[f].append(_Entry(head, n, info.shape, info.dtype, od, head_patch or _Patch()))
    patches = [e.patch for es in entries.values() for e in es]
    return entries, {
        "untie": untie,
        "notes": notes,
        "rows_carried": sum(len(d.pairs) for d in plan.carries),
        "merged": sum(1 for p in patches if p.lora is not None),
        "replaced": [e.name for es in entries.values() for e in es if e.patch.saved_key is not None],
    }


# --------------------------------------------------------------------------- write


def _header_bytes(entries: list[_Entry]) -> bytes:
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for e in entries:
        header[e.name] = {
            "dtype": e.out_dtype,
            "shape": list(e.shape),
            "data_offsets": [offset, offset + e.nbytes],
        }
        offset += e.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw


def _row_blocks(shape: tuple[int, ...]) -> list[tuple[int, int]]:
    rows = shape[0] if shape else 1
    row_elems = math.prod(shape[1:]) if len(shape) > 1 else 1
    step = max(1, CHUNK_BYTES // max(4 * row_elems, 1))
    return [(i, min(i + step, rows)) for i in range(0, rows, step)] or [(0, 0)]


def _carry_block(
    adapter: RowReader, key: str, pairs: list[tuple[int, int]], start: int, stop: int, out: np.ndarray
) -> None:
    """Overwrite rows of ``out`` (rows ``start..stop`` of the new matrix) with the patch's rows, reading runs of old rows."""
    sel = [(o, n) for o, n in pairs if start <= n < stop]
    i = 0
    while i < len(sel):
        j = i
        while j + 1 < len(sel) and sel[j + 1][0] == sel[j][0] + 1 and sel[j + 1][1] == sel[j][1] + 1:
            j += 1
        o0, n0 = sel[i]
        count = j - i + 1
        out[n0 - start : n0 - start + count] = adapter.rows_f32(key, o0, o0 + count)
        i = j + 1


def _carried_factor(x: np.ndarray, d: TensorDecision | None) -> np.ndarray:
    """A LoRA factor with its token axis re-indexed as the plan decided (zeros for tokens the patch lacks)."""
    import numpy as np

    if d is None:
        return x
    shape = list(x.shape)
    shape[d.axis] = d.new_size
    out = np.zeros(shape, dtype=np.float32)
    src = [p[0] for p in d.pairs]
    dst = [p[1] for p in d.pairs]
    if d.axis == 0:
        out[dst] = x[src]
    else:
        out[:, dst] = x[:, src]
    return out


def _merged_blocks(e: _Entry, base: RowReader, adapter: RowReader) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(start_row, stop_row, rows)`` of a float output tensor, patched, as ``float32``."""
    import numpy as np

    p = e.patch
    a = b = None
    if p.lora is not None:
        a = _carried_factor(adapter.full_f32(p.lora.a_key), p.a_carry)
        b = _carried_factor(adapter.full_f32(p.lora.b_key), p.b_carry)
    for start, stop in _row_blocks(e.shape):
        if p.saved_key is not None and p.carry is None:
            block = adapter.rows_f32(p.saved_key, start, stop)
        else:
            block = base.rows_f32(e.src, start, stop)
            if p.carry is not None and p.saved_key is not None:
                _carry_block(adapter, p.saved_key, list(p.carry), start, stop, block)
        if a is not None and b is not None and p.lora is not None:
            if p.lora.kind == "linear" and not p.fifo:
                delta = b[start:stop] @ a  # [rows, r] @ [r, in]
            else:  # embedding, or Conv1D layout [in, out]: rows of (B @ A)ᵀ = A[:, rows]ᵀ @ Bᵀ
                delta = a[:, start:stop].T @ b.T
            block = block + np.float32(p.scale) * delta.astype(np.float32, copy=False)
            if not np.isfinite(block).all():
                raise PortingError(
                    f"merging into `{e.name}` produced NaN/Inf (rows {start}-{stop})",
                    hint="the patch's lora_A/lora_B hold huge or non-finite values; check the patch",
                )
        yield start, stop, block


def _write_shard(path: Path, entries: list[_Entry], base: RowReader, adapter: RowReader) -> int:
    written = 0
    with open(path, "wb") as out:
        hb = _header_bytes(entries)
        out.write(hb)
        for e in entries:
            if e.in_dtype not in _FLOAT_IN:
                raw = base.raw(e.src, 0, e.shape[0] if e.shape else 1)
                out.write(raw)
                written += len(raw)
                continue
            for _start, _stop, block in _merged_blocks(e, base, adapter):
                data = _encode(block, e.out_dtype)
                out.write(data)
                written += len(data)
        out.flush()
        os.fsync(out.fileno())
    expected = len(hb) + sum(e.nbytes for e in entries)
    if os.path.getsize(path) != expected:  # pragma: no cover - guards the planner
        raise PortingError(
            f"{path}: wrote {os.path.getsize(path)} bytes, planned {expected}", hint="report this bug"
        )
    return written


def _free_bytes(folder: Path) -> int:
    probe = folder
    while not probe.exists():
        probe = probe.parent
    return shutil.disk_usage(probe).free


def _prepare(
    adapter_dir: Path, base_dir: Path, old_vocab_dir: Path | None, dtype: str
) -> tuple[AdapterLayout, BaseIndex, str, dict[Path, list[_Entry]], dict[str, Any]]:
    """Read the inputs, refuse what cannot merge exactly, and plan every output tensor (``dtype`` resolved)."""
    config = AdapterConfig.read(adapter_dir, refuse_unknown=False)
    layout = read_adapter_layout(adapter_dir)
    index = read_base_index(base_dir)
    _refuse_quantized(index)
    if dtype == "auto":
        dtype = stored_dtype(index)
    _refuse_non_additive(config, layout, adapter_dir)
    plan = read_tensor_plan(adapter_dir, config, layout, index, old_vocab_dir)
    entries, info = _plan(plan, config, layout, index, dtype)
    return layout, index, dtype, entries, info


def _aux_files(base_dir: Path) -> list[Path]:
    """The base folder's non-weight files (tokenizer, generation config, chat template), copied as they are."""
    return [
        p
        for p in sorted(base_dir.iterdir())
        if p.is_file()
        and not p.name.startswith(".")
        and p.name not in SKIP_FILES
        and not p.name.endswith(WEIGHT_SUFFIXES)
    ]


def _check_disk(out_dir: Path, weights_bytes: int, aux_bytes: int, dtype: str) -> None:
    """Raise before writing when the output disk lacks the merged model's size plus :data:`DISK_MARGIN_BYTES`."""
    need = weights_bytes + aux_bytes + DISK_MARGIN_BYTES
    free = _free_bytes(out_dir.parent)
    if free < need:
        raise PortingError(
            f"{out_dir.parent}: not enough free disk space for the merged model: need {human_bytes(need)} "
            f"({dtype} weights {human_bytes(weights_bytes)} + margin), have {human_bytes(free)}",
            hint="free some space, choose --out on another disk, or merge with --dtype bf16 (half the size of fp32)",
        )


def _merged_config(config: dict[str, Any], dtype: str, *, untie: bool) -> dict[str, Any]:
    """The base's ``config.json`` with the merged dtype (and ``tie_word_embeddings: false`` when untied)."""
    cfg = dict(config)
    cfg["dtype"] = _TORCH_NAME[dtype]
    if "torch_dtype" in cfg:
        cfg["torch_dtype"] = _TORCH_NAME[dtype]
    if untie:
        cfg["tie_word_embeddings"] = False
        if isinstance(cfg.get("text_config"), dict):
            cfg["text_config"] = {**cfg["text_config"], "tie_word_embeddings": False}
    return cfg


def check_merge_target(
    adapter_dir: str | os.PathLike[str],
    base_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    dtype: str,
    overwrite: bool,
) -> None:
    """The cheap checks of :func:`stream_merge`'s options, so a caller can run them before other work.

    Raises:
        ConfigError: ``dtype`` is not ``auto``/``bf16``/``fp16``/``fp32``.
        PortingError: ``out_dir`` is the base or patch folder, exists without ``overwrite``, or can't
            be written (:func:`~portllm_edge.fsutil.unwritable_reason`).
    """
    if dtype != "auto" and dtype not in _OUT_DTYPE:
        raise ConfigError(
            f"merge dtype `{dtype}` is not supported (a merge never writes 4-bit/8-bit weights)",
            hint="use --dtype auto (the base's own dtype), bf16, fp16 or fp32",
        )
    empty = empty_path_reason(out_dir)
    if empty is not None:
        raise PortingError(f"merge output {str(out_dir)!r}: {empty}", hint="pass an output folder")
    out = Path(out_dir)
    if out.resolve() in (Path(base_dir).resolve(), Path(adapter_dir).resolve()):
        raise PortingError(
            f"{out_dir}: the merge output cannot be the base or patch folder", hint="choose a new folder"
        )
    if out.exists() and not overwrite:
        raise PortingError(
            f"{out_dir}: already exists",
            hint="choose a new folder, or replace it with --overwrite",
        )
    reason = unwritable_reason(out)
    if reason is not None:
        raise PortingError(f"{out_dir}: {reason}", hint="pass an output folder you can write to")


def stream_merge(
    adapter_dir: Path,
    base_dir: Path,
    out_dir: Path,
    *,
    dtype: MergeDtype | str = "auto",
    overwrite: bool = False,
    old_vocab_dir: Path | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> MergeResult:
    """Merge a LoRA patch into a base model on disk, streaming: W_new + scale·B·A, block by block.

    The caller is expected to have run :func:`portllm_edge.porting.preflight.run_preflight`
    (``port`` does); this function still refuses anything it cannot merge exactly.
    Output shards mirror the input shards (same file names; an index is rewritten
    when the base has one); non-weight files (config, tokenizer, generation config,
    chat template) are copied, ``config.json`` gets the new dtype (and
    ``tie_word_embeddings: false`` when untying). A ``portllm_merge.json`` records
    the provenance.

    Args:
        adapter_dir: The patch (peft LoRA folder).
        base_dir: The (new) base model folder, unquantized safetensors.
        out_dir: Destination folder; written atomically.
        dtype: ``"auto"`` (the base's own stored dtype, :func:`stored_dtype`), ``"bf16"``,
            ``"fp16"`` or ``"fp32"`` for floating tensors (others are copied).
        overwrite: Replace an existing ``out_dir``.
        old_vocab_dir: The old base (or a folder with the patch's tokenizer), for vocabulary carry-over
            (default: the patch folder or its ``base_model_name_or_path``).
        progress: Called as ``progress(shard_name, shard_index, shard_count)`` before each shard.

    Returns:
        A :class:`MergeResult`.

    Raises:
        ConfigError: ``dtype`` is not ``auto``/``bf16``/``fp16``/``fp32``.
        PortingError: quantized base weights, a non-additive patch, unmatched
            modules, shape mismatches, too little disk space, ``out_dir`` exists,
            or NaN/Inf produced.
        PatchError / BaseModelError: unreadable inputs.
    """
    check_merge_target(adapter_dir, base_dir, out_dir, dtype=dtype, overwrite=overwrite)
    adapter_dir, base_dir, out_dir = Path(adapter_dir), Path(base_dir), Path(out_dir)
    layout, index, dtype, entries, info = _prepare(adapter_dir, base_dir, old_vocab_dir, dtype)
    aux = _aux_files(base_dir)
    weights_bytes = sum(sum(e.nbytes for e in es) for es in entries.values())
    _check_disk(out_dir, weights_bytes, sum(p.stat().st_size for p in aux), dtype)

    adapter = RowReader(layout.path, error_cls=PortingError)
    written = 0
    try:
        with atomic_dir(out_dir, overwrite=overwrite) as tmp:
            weight_map: dict[str, str] = {}
            for i, (shard, es) in enumerate(entries.items()):
                if progress is not None:
                    progress(shard.name, i, len(entries))
                base = RowReader(shard, error_cls=PortingError)
                try:
                    written += _write_shard(tmp / shard.name, es, base, adapter)
                finally:
                    base.close()
                weight_map.update({e.name: shard.name for e in es})
            if (base_dir / INDEX_NAME).is_file() or len(entries) > 1:
                idx = {
                    "metadata": {"total_size": weights_bytes},
                    "weight_map": dict(sorted(weight_map.items())),
                }
                (tmp / INDEX_NAME).write_text(json.dumps(idx, indent=2) + "\n", encoding="utf-8")
            for p in aux:
                shutil.copy2(p, tmp / p.name)
            cfg = _merged_config(index.config, dtype, untie=info["untie"])
            (tmp / "config.json").write_text(
                json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8"
            )
            result = MergeResult(
                out_dir=out_dir,
                dtype=dtype,
                merged_modules=info["merged"],
                replaced_tensors=info["replaced"],
                rows_carried=info["rows_carried"],
                untied=info["untie"],
                tensors_written=sum(len(es) for es in entries.values()),
                bytes_written=written,
                notes=info["notes"],
            )
            prov = {
                **result.to_dict(),
                "adapter": str(adapter_dir),
                "base": str(base_dir),
                "formula": "W_new + scale * B @ A (PortLLM); scale = lora_alpha/r (alpha/sqrt(r) with rsLoRA)",
            }
            (tmp / "portllm_merge.json").write_text(json.dumps(prov, indent=2) + "\n", encoding="utf-8")
    finally:
        adapter.close()
    return result


@dataclass(frozen=True)
class MergedTensor:
    """One tensor of the merged model, as :class:`MergeStream` yields it.

    Attributes:
        name: Hugging Face tensor name (``model.layers.0.self_attn.q_proj.weight``).
        shape: Its shape.
        dtype: The base's safetensors dtype (``F32``, ``BF16``, ...; non-floats are passed through raw).
        patched: True when the patch changes it (LoRA ΔW, saved tensor or carried rows).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    patched: bool


class MergeStream:
    """The streaming merge without a safetensors writer, for other output formats (GGUF).

    Runs the same refusals and plan as :func:`stream_merge` when opened; then
    :meth:`blocks` yields each tensor's merged rows (``float32``), one row block
    (:data:`CHUNK_BYTES`) at a time. Use as a context manager (it holds file descriptors).

    Raises:
        PortingError / PatchError / BaseModelError: as :func:`stream_merge`, at construction.
    """

    def __init__(self, adapter_dir: Path, base_dir: Path, *, old_vocab_dir: Path | None = None) -> None:
        layout, self.index, _, entries, self.info = _prepare(
            Path(adapter_dir), Path(base_dir), old_vocab_dir, "fp32"
        )
        self._entries = {e.name: (shard, e) for shard, es in entries.items() for e in es}
        self._adapter = RowReader(layout.path, error_cls=PortingError)
        self._readers: dict[Path, RowReader] = {}

    @property
    def tensors(self) -> list[MergedTensor]:
        """Every output tensor, in the base's shard order."""
        return [
            MergedTensor(
                e.name,
                e.shape,
                e.in_dtype,
                e.patch.lora is not None or e.patch.saved_key is not None or e.src != e.name,
            )
            for _, e in self._entries.values()
        ]

    def blocks(self, name: str) -> Iterator[tuple[int, int, np.ndarray]]:
        """Yield ``(start_row, stop_row, rows)`` of tensor ``name``: ``float32`` rows, shape ``[stop-start, *shape[1:]]``.

        Raises:
            KeyError: ``name`` is not an output tensor.
            PortingError: the tensor is not a float tensor, or the merge produced NaN/Inf.
        """
        shard, e = self._entries[name]
        if e.in_dtype not in _FLOAT_IN:
            raise PortingError(
                f"{shard}: tensor `{name}` is {e.in_dtype}, not a float", hint="report this bug"
            )
        if shard not in self._readers:
            self._readers[shard] = RowReader(shard, error_cls=PortingError)
        return _merged_blocks(e, self._readers[shard], self._adapter)

    def close(self) -> None:
        """Close every file this stream opened."""
        self._adapter.close()
        for r in self._readers.values():
            r.close()
        self._readers.clear()

    def __enter__(self) -> MergeStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = [
    "CHUNK_BYTES",
    "MergeResult",
    "MergeStream",
    "MergedTensor",
    "RowReader",
    "f32_to_bf16_bits",
    "human_bytes",
    "stream_merge",
]
