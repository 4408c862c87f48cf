"""Safe tensor IO: validate safetensors headers, list weight shards, read one tensor at a time.

Why this module exists: every weight file portllm-edge reads (a patch's
``adapter_model.safetensors``, a base model's shards) comes from somewhere the
user may not control. Before any tensor is touched we read the 8-byte header
length and the JSON header *ourselves*, with hard limits, so a hostile or
damaged file cannot make us allocate gigabytes, seek outside the file, or hand
``safetensors`` overlapping ranges. Only then do we open it with
``safetensors.safe_open`` and read tensors one at a time (the mergekit way:
never the whole model in memory).

Pickled weights (``.bin``, ``.pt``, ``.pth``) are never loaded for use. They are
refused with a message that says how to convert them; the conversion helper
:func:`convert_pickle_to_safetensors` uses ``torch.load(weights_only=True)``,
which cannot run arbitrary code.

File format (https://github.com/huggingface/safetensors, "Format"): 8 bytes
little-endian u64 ``N``, then ``N`` bytes of UTF-8 JSON mapping tensor name to
``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets relative to the
byte after the header) plus an optional ``"__metadata__"`` str->str map, then
the payload. The tensors must cover the payload exactly, without gaps or
overlaps.

This module must not import torch or safetensors at module import time (they
are imported inside the functions that read tensors) and never imports UI code.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import struct
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from portllm_edge.errors import BaseModelError, PatchError, PortllmError

if TYPE_CHECKING:  # pragma: no cover
    import torch

MAX_HEADER_BYTES = 100 * 1024 * 1024
"""Largest JSON header we accept (100 MiB, the same cap the safetensors library uses)."""

DTYPE_BITS: dict[str, int] = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "F64": 64,
    "I64": 64,
    "U64": 64,
    "C64": 64,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
}
"""Bits per element of each safetensors dtype name (safetensors ``Dtype`` enum)."""

FLOAT_DTYPES = frozenset({"F16", "BF16", "F32", "F64", "F8_E5M2", "F8_E4M3"})
"""Dtypes that can hold NaN/Inf and that :func:`check_finite` inspects."""

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
"""File suffixes of pickled PyTorch checkpoints, which we refuse to load."""

INDEX_NAME = "model.safetensors.index.json"

_REDOWNLOAD_HINT = "re-download or re-export the file (e.g. `save_pretrained(..., safe_serialization=True)`)"


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's entry in a safetensors header (nothing loaded).

    Attributes:
        name: Tensor key, e.g. ``base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight``.
        dtype: safetensors dtype name, e.g. ``"F32"``, ``"BF16"``.
        shape: Tensor shape (non-negative ints; ``()`` for a scalar).
        data_offsets: ``(begin, end)`` byte offsets relative to the start of the payload.
        nbytes: ``end - begin`` in bytes (= elements × bits / 8).
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    data_offsets: tuple[int, int]
    nbytes: int

    @property
    def numel(self) -> int:
        """Number of elements (``prod(shape)``; 1 for a scalar)."""
        return math.prod(self.shape)


class SafetensorsHeader(dict[str, TensorInfo]):
    """A validated header: a ``dict`` of tensor name -> :class:`TensorInfo`, plus file facts.

    Attributes:
        path: The file the header was read from.
        metadata: The ``__metadata__`` map (str -> str), empty when absent.
        header_size: Length of the JSON header in bytes (the leading u64).
        file_size: Size of the whole file in bytes.
    """

    def __init__(
        self,
        tensors: dict[str, TensorInfo],
        *,
        path: Path,
        metadata: dict[str, str],
        header_size: int,
        file_size: int,
    ) -> None:
        super().__init__(tensors)
        self.path = path
        self.metadata = metadata
        self.header_size = header_size
        self.file_size = file_size

    @property
    def payload_offset(self) -> int:
        """Absolute file offset of the first payload byte (``8 + header_size``)."""
        return 8 + self.header_size

    @property
    def payload_bytes(self) -> int:
        """Total tensor bytes declared by the header."""
        return sum(t.nbytes for t in self.values())


@dataclass(frozen=True)
class NonFiniteTensor:
    """The first tensor found holding NaN or ±Inf.

    Attributes:
        name: Tensor key.
        nan_count: Number of NaN elements.
        inf_count: Number of ±Inf elements.
        numel: Number of elements in the tensor.
    """

    name: str
    nan_count: int
    inf_count: int
    numel: int

    def describe(self) -> str:
        """``"3 NaN and 0 Inf of 256 values"``."""
        return f"{self.nan_count} NaN and {self.inf_count} Inf of {self.numel} values"


def _fail(
    error_cls: type[PortllmError],
    path: Path,
    problem: str,
    *,
    tensor: str | None = None,
    hint: str | None = None,
) -> PortllmError:
    where = f"{path}" + (f", tensor `{tensor}`" if tensor is not None else "")
    return error_cls(f"{where}: {problem}", hint=hint or _REDOWNLOAD_HINT)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _read_header_bytes(p: Path, error_cls: type[PortllmError]) -> tuple[bytes, int]:
    """The raw JSON header bytes and the file size, after the length checks of :func:`read_safetensors_header`."""
    try:
        size = p.stat().st_size
        if not p.is_file():
            raise _fail(error_cls, p, "is not a regular file", hint="point to the .safetensors file itself")
        with open(p, "rb") as fh:
            head = fh.read(8)
            if size < 8 or len(head) < 8:
                what = (
                    "is empty" if size == 0 else f"has only {size} bytes, fewer than the 8-byte header length"
                )
                raise _fail(error_cls, p, f"{what} (truncated or not a safetensors file)")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER_BYTES:
                raise _fail(
                    error_cls,
                    p,
                    f"declares a {n}-byte header, above the {MAX_HEADER_BYTES}-byte limit "
                    "(corrupt or not a safetensors file)",
                )
            if n > size - 8:
                raise _fail(
                    error_cls,
                    p,
                    f"declares a {n}-byte header but the file has only {size - 8} bytes after the "
                    "length field (truncated or not a safetensors file)",
                )
            raw = fh.read(n)
    except PortllmError:
        raise
    except FileNotFoundError:
        raise _fail(error_cls, p, "file not found", hint="check the path") from None
    except OSError as exc:
        raise _fail(
            error_cls, p, f"cannot be read ({exc.strerror or exc})", hint="check the file permissions"
        ) from None
    return raw, size


def _tensor_entry(name: str, entry: Any, payload: int, p: Path, error_cls: type[PortllmError]) -> TensorInfo:
    """One validated header entry (dtype, shape, offsets inside the payload, span = numel × bits / 8)."""
    if not isinstance(entry, dict):
        raise _fail(error_cls, p, "has a header entry that is not an object", tensor=name)
    dtype = entry.get("dtype")
    shape = entry.get("shape")
    offsets = entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        raise _fail(error_cls, p, f"has unknown dtype {dtype!r}", tensor=name)
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise _fail(error_cls, p, f"has an invalid shape {shape!r} (need non-negative ints)", tensor=name)
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(_is_int(o) for o in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise _fail(error_cls, p, f"has invalid data_offsets {offsets!r}", tensor=name)
    begin, end = int(offsets[0]), int(offsets[1])
    if end > payload:
        raise _fail(
            error_cls,
            p,
            f"ends at payload byte {end} but the payload has only {payload} bytes (the file is truncated)",
            tensor=name,
        )
    bits = math.prod(shape) * DTYPE_BITS[dtype]
    if bits % 8 != 0 or bits // 8 != end - begin:
        raise _fail(
            error_cls,
            p,
            f"declares {dtype}{list(shape)} ({bits / 8:g} bytes) but its offsets span {end - begin} bytes",
            tensor=name,
        )
    return TensorInfo(name, dtype, tuple(int(d) for d in shape), (begin, end), end - begin)


def _check_coverage(
    tensors: dict[str, TensorInfo], payload: int, p: Path, error_cls: type[PortllmError]
) -> None:
    """Tensors neither overlap nor leave gaps, and cover the payload exactly."""
    cursor = 0
    for info in sorted(tensors.values(), key=lambda t: t.data_offsets):
        begin, end = info.data_offsets
        if begin < cursor:
            raise _fail(
                error_cls, p, f"overlaps the previous tensor (starts at {begin} < {cursor})", tensor=info.name
            )
        if begin > cursor:
            raise _fail(error_cls, p, f"leaves a gap of {begin - cursor} bytes before it", tensor=info.name)
        cursor = end
    if cursor != payload:
        raise _fail(
            error_cls, p, f"has {payload - cursor} bytes after the last tensor that no header entry describes"
        )


def read_safetensors_header(
    path: str | os.PathLike[str], *, error_cls: type[PortllmError] = PatchError
) -> SafetensorsHeader:
    """Read and validate a safetensors file's header without loading any tensor.

    Checks, in order: the file exists and has at least 8 bytes; the declared
    header length fits the file and is at most :data:`MAX_HEADER_BYTES`; the
    header is UTF-8 JSON holding an object without duplicate keys;
    ``__metadata__`` (if present) maps strings to strings; each tensor has a
    known dtype, a shape of non-negative ints and two int offsets inside the
    payload whose span equals ``numel × bits / 8``; tensors neither overlap nor
    leave gaps, and together cover the payload exactly (what ``safe_open``
    requires). At most ``MAX_HEADER_BYTES`` are read, whatever the file says.

    Args:
        path: The ``.safetensors`` file.
        error_cls: The error type to raise (``PatchError`` for adapters,
            ``BaseModelError`` for base shards).

    Returns:
        A :class:`SafetensorsHeader` (a dict of name -> :class:`TensorInfo`).

    Raises:
        PortllmError: ``error_cls``, naming the file (and tensor) and the fix.
    """
    p = Path(path)
    raw, size = _read_header_bytes(p, error_cls)
    n = len(raw)
    try:
        text = raw.decode("utf-8")
        obj = json.loads(text, object_pairs_hook=_no_duplicates)
    except RecursionError:
        raise _fail(error_cls, p, "has a header that is nested too deeply; the file is corrupt") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise _fail(
            error_cls, p, f"has a header that is not valid JSON ({exc}); the file is corrupt"
        ) from None
    if not isinstance(obj, dict):
        raise _fail(error_cls, p, f"has a JSON header that is a {type(obj).__name__}, not an object")

    metadata: dict[str, str] = {}
    meta = obj.pop("__metadata__", None)
    if meta is not None:
        if not isinstance(meta, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in meta.items()
        ):
            raise _fail(error_cls, p, "has a `__metadata__` entry that is not a map of strings to strings")
        metadata = dict(meta)

    payload = size - 8 - n
    tensors = {name: _tensor_entry(name, entry, payload, p, error_cls) for name, entry in obj.items()}
    _check_coverage(tensors, payload, p, error_cls)
    return SafetensorsHeader(tensors, path=p, metadata=metadata, header_size=n, file_size=size)


MAX_JSON_BYTES = 16 * 1024 * 1024
"""Largest small JSON file (adapter config, manifest, shard index) we read: 16 MiB."""


def read_small_json(path: str | os.PathLike[str], *, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Parse a small UTF-8 JSON file with a size cap, turning every parse failure into ``ValueError``.

    Guards the config-like files we read (``adapter_config.json``, ``manifest.json``,
    ``model.safetensors.index.json``) against huge or pathologically nested input.

    Raises:
        OSError: the file can't be read.
        ValueError: larger than ``max_bytes``, not UTF-8, not JSON, or nested too deeply.
    """
    p = Path(path)
    size = p.stat().st_size
    if size > max_bytes:
        raise ValueError(f"the file is {size} bytes, above the {max_bytes}-byte limit for this JSON file")
    with open(p, "rb") as fh:
        raw = fh.read(max_bytes + 1)
    try:
        return json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise ValueError("the JSON is nested too deeply") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 ({exc.reason})") from None


def pickle_hint(folder: Path, command: str | None = None) -> str:
    """The fix for a folder holding only pickled weights.

    Args:
        folder: The folder with the pickled files.
        command: A CLI command that converts the folder (e.g. ``"portllm-edge patch convert"``), if any.
    """
    how = (
        f"convert it with `{command} {folder}` (uses torch.load(weights_only=True))"
        if command
        else "convert each file with portllm_edge.tensorio.convert_pickle_to_safetensors "
        "(uses torch.load(weights_only=True))"
    )
    return f"{how}, or re-save it with `save_pretrained(..., safe_serialization=True)` on a trusted machine"


def pickled_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Pickled checkpoint files (``.bin``, ``.pt``, ``.pth``, ``.ckpt``, ``.pkl``) directly in ``folder``, sorted."""
    d = Path(folder)
    if not d.is_dir():
        return []
    return sorted(f for f in d.iterdir() if f.is_file() and f.suffix in PICKLE_SUFFIXES)


def _safe_relative(folder: Path, rel: str, error_cls: type[PortllmError], source: Path) -> Path:
    rp = Path(rel)
    if rp.is_absolute() or ".." in rp.parts or len(rp.parts) != 1:
        raise _fail(
            error_cls,
            source,
            f"names shard {rel!r}, which is not a plain file name inside {folder}",
            hint="fix the index's weight_map or re-export the model",
        )
    return folder / rp


def list_weight_files(
    model_dir: str | os.PathLike[str], *, error_cls: type[PortllmError] = BaseModelError
) -> list[Path]:
    """Return a model folder's safetensors weight files, in shard order.

    With ``model.safetensors.index.json`` the shards are the distinct values of
    its ``weight_map`` (each must be a plain file name in the folder and exist);
    otherwise every ``*.safetensors`` file in the folder (temporary ``.tmp-*``
    files excluded). Headers are not validated here; use
    :func:`read_safetensors_header` on each.

    Args:
        model_dir: A Hugging Face model folder.
        error_cls: The error type to raise.

    Returns:
        Paths of the shards, sorted by name (at least one).

    Raises:
        PortllmError: the folder is missing, the index is invalid or names a
            missing shard, or the folder has only pickled ``.bin``/``.pt``/``.pth``
            files (refused, with how to convert) or no weights at all.
    """
    d = Path(model_dir)
    if not d.is_dir():
        raise error_cls(f"{d}: model folder not found", hint="check the path")
    index = d / INDEX_NAME
    if index.is_file():
        try:
            data = read_small_json(index)
            weight_map = data["weight_map"]
            if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
                raise TypeError("weight_map is not a map of tensor name to file name")
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
            raise _fail(error_cls, index, f"is not a valid shard index ({exc})") from None
        shards = sorted({_safe_relative(d, v, error_cls, index) for v in weight_map.values()})
        missing = [s.name for s in shards if not s.is_file()]
        if missing:
            raise _fail(
                error_cls,
                index,
                f"names shard(s) {', '.join(missing)} that are missing from {d}",
                hint="copy the missing shard files into the folder or re-download the model",
            )
        if not shards:
            raise _fail(error_cls, index, "has an empty weight_map")
        return shards
    files = sorted(f for f in d.glob("*.safetensors") if f.is_file() and not f.name.startswith(".tmp-"))
    if files:
        return files
    pickled = pickled_files(d)
    if pickled:
        names = ", ".join(f.name for f in pickled[:3]) + (" ..." if len(pickled) > 3 else "")
        raise error_cls(
            f"{d}: has only pickled weights ({names}); portllm-edge loads safetensors only, because "
            "unpickling can run arbitrary code",
            hint=pickle_hint(d),
        )
    raise error_cls(
        f"{d}: no *.safetensors weight files found", hint="point to a folder saved with save_pretrained"
    )


def iter_tensors(
    path: str | os.PathLike[str],
    names: Iterable[str] | None = None,
    *,
    error_cls: type[PortllmError] = PatchError,
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(name, tensor)`` pairs one at a time from a validated safetensors file.

    The header is validated first (:func:`read_safetensors_header`); tensors
    are then read lazily with ``safetensors.safe_open`` on CPU, so peak memory
    is one tensor.

    Args:
        path: The ``.safetensors`` file.
        names: Tensor names to read, in this order; ``None`` for all, in header order.
        error_cls: The error type to raise.

    Yields:
        ``(name, tensor)``, each tensor on CPU with the file's dtype and shape.

    Raises:
        PortllmError: invalid header, or a requested name not in the file.
    """
    header = read_safetensors_header(path, error_cls=error_cls)
    wanted = list(header) if names is None else list(names)
    unknown = [n for n in wanted if n not in header]
    if unknown:
        raise _fail(
            error_cls,
            header.path,
            f"has no tensor named {unknown[0]!r}"
            + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""),
            hint="check the tensor names with `read_safetensors_header`",
        )
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(header.path), framework="pt", device="cpu") as fh:
            for name in wanted:
                yield name, fh.get_tensor(name)
    except SafetensorError as exc:  # pragma: no cover - header already validated
        raise _fail(error_cls, header.path, f"could not be read by safetensors ({exc})") from None


_FLOAT_BITS: dict[str, tuple[str, int, int]] = {
    # dtype -> (numpy unsigned view, exponent mask, mantissa mask); IEEE-style layouts.
    "F16": ("<u2", 0x7C00, 0x03FF),
    "BF16": ("<u2", 0x7F80, 0x007F),
    "F32": ("<u4", 0x7F800000, 0x007FFFFF),
    "F64": ("<u8", 0x7FF0000000000000, 0x000FFFFFFFFFFFFF),
    "F8_E5M2": ("<u1", 0x7C, 0x03),
}
_SCAN_CHUNK_BYTES = 64 * 1024 * 1024


def find_nonfinite_in_file(
    path: str | os.PathLike[str],
    names: Iterable[str] | None = None,
    *,
    error_cls: type[PortllmError] = PatchError,
) -> NonFiniteTensor | None:
    """Return the first tensor (in payload order) of a safetensors file holding NaN or ±Inf.

    Reads the raw bytes through a read-only memory map in chunks of at most
    64 MiB and tests the bit patterns (all exponent bits set = non-finite;
    non-zero mantissa = NaN), so it needs neither torch nor more memory than
    one chunk. ``F8_E4M3`` (the ``fn`` variant) has no Inf; its NaN is
    ``S.1111.111``. Integer and bool tensors are skipped.

    Args:
        path: The ``.safetensors`` file (its header is validated first).
        names: Only these tensors; ``None`` for all.
        error_cls: The error type to raise on an invalid header.

    Returns:
        A :class:`NonFiniteTensor` with exact counts, or ``None`` when all values are finite.
    """
    import numpy as np

    header = read_safetensors_header(path, error_cls=error_cls)
    wanted = set(header) if names is None else set(names)
    infos = sorted((header[n] for n in wanted if n in header), key=lambda t: t.data_offsets)
    with open(header.path, "rb") as fh:
        for info in infos:
            if info.nbytes == 0 or info.dtype not in (*_FLOAT_BITS, "F8_E4M3"):
                continue
            view, exp, man = _FLOAT_BITS.get(info.dtype, ("<u1", 0x7F, 0))
            itemsize = np.dtype(view).itemsize
            nan = inf = 0
            step = max(itemsize, _SCAN_CHUNK_BYTES - _SCAN_CHUNK_BYTES % itemsize)
            for start in range(0, info.nbytes, step):
                length = min(step, info.nbytes - start)
                fh.seek(header.payload_offset + info.data_offsets[0] + start)
                raw = np.frombuffer(fh.read(length), dtype=view)
                if info.dtype == "F8_E4M3":
                    nan += int(np.count_nonzero((raw & 0x7F) == 0x7F))
                    continue
                bad = (raw & exp) == exp
                if not bad.any():
                    continue
                is_nan = bad & ((raw & man) != 0)
                n_nan = int(np.count_nonzero(is_nan))
                nan += n_nan
                inf += int(np.count_nonzero(bad)) - n_nan
            if nan or inf:
                return NonFiniteTensor(info.name, nan, inf, info.numel)
    return None


def first_nonfinite(items: Iterable[tuple[str, torch.Tensor]]) -> NonFiniteTensor | None:
    """Return the first floating-point tensor holding NaN or ±Inf, or ``None``.

    Args:
        items: ``(name, tensor)`` pairs, e.g. from :func:`iter_tensors`.
            Integer and bool tensors are skipped.
    """
    import torch

    for name, t in items:
        if not (t.is_floating_point() or t.is_complex()):
            continue
        if t.dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
            t = t.float()
        if bool(torch.isfinite(t).all()):
            continue
        return NonFiniteTensor(
            name=name,
            nan_count=int(torch.isnan(t).sum()),
            inf_count=int(torch.isinf(t).sum()),
            numel=t.numel(),
        )
    return None


def check_finite(
    source: str | os.PathLike[str] | Iterable[tuple[str, torch.Tensor]],
    *,
    error_cls: type[PortllmError] = PatchError,
    hint: str | None = None,
) -> None:
    """Raise if any tensor holds NaN or ±Inf, naming the first such tensor.

    Args:
        source: A ``.safetensors`` path (scanned without torch by
            :func:`find_nonfinite_in_file`) or ``(name, tensor)`` pairs.
        error_cls: The error type to raise.
        hint: The fix to suggest; default: retrain or re-export.

    Raises:
        PortllmError: ``error_cls`` naming the file (when a path was given), the tensor and the counts.
    """
    path: Path | None = None
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        bad = find_nonfinite_in_file(path, error_cls=error_cls)
    else:
        bad = first_nonfinite(source)
    if bad is None:
        return
    where = f"{path}, tensor `{bad.name}`" if path is not None else f"tensor `{bad.name}`"
    raise error_cls(
        f"{where}: holds non-finite values ({bad.describe()})",
        hint=hint
        or "the weights diverged or are corrupt; retrain with a lower learning rate or re-export them",
    )


def convert_pickle_to_safetensors(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    error_cls: type[PortllmError] = PatchError,
) -> Path:
    """Convert a pickled PyTorch state dict to safetensors without running pickled code.

    Uses ``torch.load(map_location="cpu", weights_only=True)``, which only
    rebuilds tensors and plain containers and refuses any other object. Shared
    storages are cloned (safetensors forbids aliasing). ``dst`` is written
    atomically, and its header is validated afterwards.

    Args:
        src: A ``.bin``/``.pt``/``.pth`` file holding a ``{name: tensor}`` map
            (or ``{"state_dict": {...}}``).
        dst: Output ``.safetensors`` path (must not exist).
        error_cls: The error type to raise.

    Returns:
        ``dst`` as a :class:`Path`.

    Raises:
        PortllmError: ``src`` missing, not loadable with ``weights_only=True``,
            not a map of tensors, or ``dst`` exists.
    """
    import torch
    from safetensors.torch import save_file

    from portllm_edge.fsutil import TMP_PREFIX

    s, d = Path(src), Path(dst)
    if not s.is_file():
        raise error_cls(f"{s}: file not found", hint="check the path")
    if d.exists():
        raise error_cls(
            f"{d}: already exists; refusing to overwrite", hint="remove it or choose another output path"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter(
                "ignore"
            )  # torch warns about pickle protocols; we report failures ourselves
            obj = torch.load(s, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise error_cls(
            f"{s}: cannot be loaded safely with torch.load(weights_only=True) ({first[:200]})",
            hint="the file holds Python objects besides tensors or is corrupt; re-save only the "
            "state dict on a trusted machine",
        ) from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if (
        not isinstance(obj, dict)
        or not obj
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    ):
        raise error_cls(
            f"{s}: is not a map of tensor names to tensors", hint="save `model.state_dict()` and convert that"
        )
    tensors = {k: v.detach().contiguous().clone() for k, v in obj.items()}
    d.parent.mkdir(parents=True, exist_ok=True)
    tmp = d.with_name(f"{TMP_PREFIX}{d.name}")
    try:
        save_file(tensors, str(tmp), metadata={"format": "pt", "converted_from": s.name})
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, d)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    read_safetensors_header(d, error_cls=error_cls)
    return d


__all__ = [
    "DTYPE_BITS",
    "MAX_HEADER_BYTES",
    "NonFiniteTensor",
    "SafetensorsHeader",
    "TensorInfo",
    "check_finite",
    "convert_pickle_to_safetensors",
    "find_nonfinite_in_file",
    "first_nonfinite",
    "iter_tensors",
    "list_weight_files",
    "pickle_hint",
    "pickled_files",
    "read_safetensors_header",
    "read_small_json",
]
