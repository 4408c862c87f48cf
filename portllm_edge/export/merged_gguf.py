"""Write a ported (merged) model as a llama.cpp GGUF that reuses the source GGUF's tokenizer and metadata.

Why this module exists: a base imported from a GGUF file (``portllm-edge`` keeps
the source file's path and sha256 in ``portllm_model.json``) should come back out
as a GGUF that llama.cpp and Ollama run without another tool. The merged weights
come from :class:`portllm_edge.porting.merge.MergeStream` (W_new + scale·B·A, exact,
fp32); every other tensor is read from the source GGUF itself. Metadata
(tokenizer, chat template, hyperparameters) is copied from the source; only
``general.file_type`` changes. Tensor names and order are the source's.

Encoding (``dtype``): ``f16``/``bf16`` for every 2-D weight, ``q8_0`` for 2-D
weights whose rows are a multiple of 32 (others F16); 1-D tensors (norms) keep
the source's type (F32), as llama.cpp's converter writes them.

Correctness guard: for each patched tensor the base's own (unpatched) weight, put
in GGUF layout (:mod:`.gguf_layout`), must equal the dequantized source tensor;
otherwise the layout mapping is wrong for this architecture and the export
stops before renaming anything into place.

Memory: one tensor at a time (the GGUF writer takes whole tensors), fp32 plus its encoding.
It must not write a partial file: the output is built in a temporary sibling and renamed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from portllm_edge.errors import ExportError
from portllm_edge.fsutil import atomic_file, unwritable_reason

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

GgufDtype = Literal["f16", "bf16", "q8_0"]
GGUF_DTYPES: tuple[str, ...] = ("f16", "bf16", "q8_0")
_DTYPE_ALIASES = {"auto": "f16", "fp16": "f16", "float16": "f16", "bfloat16": "bf16"}
"""``--merge-dtype`` values of the folder merge that mean a GGUF type (``auto`` -> F16, llama.cpp's default)."""


def gguf_dtype(dtype: str) -> str:
    """Normalize a ``--merge-dtype`` value for a GGUF (``auto``/``fp16`` -> ``f16``); unknown values pass through."""
    return _DTYPE_ALIASES.get(dtype, dtype)


LAYOUT_RTOL = {"F32": 1e-5, "F16": 2.0**-10, "BF16": 2.0**-7}
"""Max |base in GGUF layout − dequantized source| / max |source| accepted by the layout guard, by the
base tensor's stored safetensors dtype: twice that format's unit roundoff (fp16 2^-11, bf16 2^-8), the
most that storing the source's values at that precision can move them. A wrong layout (a missing
rotary permutation, a transposed tensor) moves them by O(1)."""


@dataclass
class MergedGgufResult:
    """What :func:`write_merged_gguf` wrote.

    Attributes:
        out: The ``.gguf`` file.
        source: The source GGUF whose metadata and unpatched tensors were reused.
        dtype: ``f16``, ``bf16`` or ``q8_0``.
        tensors: Tensors written.
        patched: GGUF names of tensors the patch changed.
        bytes_written: Size of the file.
        notes: Remarks (untied head, F16 fallbacks).
    """

    out: Path
    source: Path
    dtype: str
    tensors: int
    patched: list[str]
    bytes_written: int
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["out"], d["source"] = str(self.out), str(self.source)
        return d


def gguf_source_of(base_dir: Path) -> Path:
    """The GGUF file a store base was imported from, checked against its recorded sha256.

    Raises:
        ExportError: the base was not imported from GGUF, the source file is gone, or it changed.
    """
    from portllm_edge.models.gguf import METADATA_FILE

    meta_path = Path(base_dir) / METADATA_FILE
    meta: dict[str, Any] = {}
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except ValueError:
            meta = {}
    if meta.get("source") != "gguf" or not meta.get("source_file"):
        raise ExportError(
            f"{base_dir}: was not imported from a GGUF file (no `source_file` in {METADATA_FILE}); "
            "a merged GGUF reuses the source file's tokenizer and metadata",
            hint="merge to a folder (`portllm-edge merge PATCH --base BASE --out DIR`) and convert it with "
            "llama.cpp's convert_hf_to_gguf.py, or import the base from its .gguf (`--base FILE.gguf`)",
        )
    src = Path(meta["source_file"])
    if not src.is_file():
        raise ExportError(
            f"{meta_path}: `source_file` {src} no longer exists",
            hint="put the file back, or re-import the base from its .gguf (`--base FILE.gguf`)",
        )
    h = hashlib.sha256()
    with open(src, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    if meta.get("source_sha256") and h.hexdigest() != meta["source_sha256"]:
        raise ExportError(
            f"{src}: sha256 differs from the one recorded at import ({meta_path}); the file changed",
            hint="re-import the base from this file (`portllm-edge model import FILE.gguf --force`) and port again",
        )
    return src


def _copy_metadata(reader: Any, writer: Any, file_type: int) -> None:
    import gguf

    skip = {gguf.Keys.General.ARCHITECTURE, gguf.Keys.General.FILE_TYPE, gguf.Keys.General.ALIGNMENT}
    for key, fld in reader.fields.items():
        if key.startswith("GGUF.") or key in skip or not fld.types:
            continue
        vtype = fld.types[0]
        sub = fld.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, fld.contents(), vtype, sub_type=sub)
    writer.add_file_type(file_type)


def _encode(arr: np.ndarray, dtype: str) -> tuple[np.ndarray, Any]:
    """``float32`` array -> (data to write, raw GGML type or ``None`` for numpy's own)."""
    import gguf
    import numpy as np

    q = gguf.GGMLQuantizationType
    if arr.ndim < 2:
        return np.ascontiguousarray(arr, dtype=np.float32), None
    if dtype == "q8_0" and arr.shape[-1] % gguf.GGML_QUANT_SIZES[q.Q8_0][0] == 0:
        return gguf.quants.quantize(arr, q.Q8_0), q.Q8_0
    if dtype == "bf16":
        return gguf.quants.quantize(arr, q.BF16), q.BF16
    return arr.astype(np.float16), None


def is_gguf_path(path: str | Path) -> bool:
    """True when a merge destination names a GGUF file (``.gguf``), not a folder."""
    return Path(path).suffix.lower() == ".gguf"


def check_gguf_merge_target(base_dir: Path, out: str | Path, *, dtype: str, overwrite: bool) -> Path:
    """The cheap checks of :func:`write_merged_gguf`, for callers that fail before other work.

    Returns:
        The source GGUF the merge will reuse.

    Raises:
        ExportError: bad ``dtype`` or file name, ``out`` exists without ``overwrite`` or can't be
            written (:func:`~portllm_edge.fsutil.unwritable_reason`), the base was
            not imported from GGUF or its source file is gone or changed.
    """
    if gguf_dtype(dtype) not in GGUF_DTYPES:
        raise ExportError(
            f"merge dtype `{dtype}` is not supported for a .gguf",
            hint="use --merge-dtype f16 (or auto), bf16 or q8_0",
        )
    out = Path(out)
    if not is_gguf_path(out):
        raise ExportError(f"{out}: a merged GGUF needs a .gguf file name", hint="e.g. --merge-to merged.gguf")
    if out.exists() and not overwrite:
        raise ExportError(
            f"{out}: already exists", hint="choose a new file name, or replace it (--overwrite/--force)"
        )
    reason = unwritable_reason(out)
    if reason is not None:
        raise ExportError(f"{out}: {reason}", hint="pass a .gguf path in a folder you can write to")
    return gguf_source_of(Path(base_dir))


def write_merged_gguf(
    adapter_dir: Path | None,
    base_dir: Path,
    out: Path,
    *,
    dtype: GgufDtype | str = "f16",
    overwrite: bool = False,
    old_vocab_dir: Path | None = None,
) -> MergedGgufResult:
    """Write W_new + ΔW (or, with ``adapter_dir=None``, the base alone) as a GGUF in ``dtype``.

    Args:
        adapter_dir: The patch, or ``None`` to re-encode the base itself (a reference base for tests
            and for ``llama-server --lora``).
        base_dir: A store base imported from GGUF (see :func:`gguf_source_of`).
        out: Destination ``.gguf``; written atomically.
        dtype: ``f16``, ``bf16`` or ``q8_0`` for 2-D weights.
        overwrite: Replace an existing ``out``.
        old_vocab_dir: Old tokenizer folder for vocabulary carry-over (as :func:`stream_merge`).

    Returns:
        A :class:`MergedGgufResult`.

    Raises:
        ExportError: bad ``dtype`` or ``out``; base not from GGUF; a layout mismatch;
            an untied head the source has no slot for.
        PortingError / PatchError / BaseModelError: as :func:`portllm_edge.porting.merge.stream_merge`.
    """
    import gguf

    from portllm_edge.export.gguf_layout import GgufNames
    from portllm_edge.porting.adapter_io import read_base_index
    from portllm_edge.porting.merge import MergeStream

    out, base_dir, dtype = Path(out), Path(base_dir), gguf_dtype(dtype)
    source = check_gguf_merge_target(base_dir, out, dtype=dtype, overwrite=overwrite)
    index = read_base_index(base_dir)
    names = GgufNames(index.config, str(base_dir / "config.json"))
    reader = gguf.GGUFReader(source)
    _check_source_arch(reader, names, source, base_dir)
    stream = MergeStream(adapter_dir, base_dir, old_vocab_dir=old_vocab_dir) if adapter_dir else None
    notes: list[str] = list(stream.info["notes"]) if stream else []
    try:
        tensors = _GgufTensors(reader, stream, index, names, source, base_dir, dtype)
    except BaseException:
        if stream is not None:
            stream.close()
        raise
    try:
        written_patched = _write_gguf_file(out, overwrite, reader, names, tensors, dtype)
        if stream is not None and stream.info["untie"]:
            notes.append("the GGUF carries its own output.weight (untied from token_embd)")
    finally:
        tensors.close()
    return MergedGgufResult(
        out, source, dtype, len(tensors.order), written_patched, out.stat().st_size, notes
    )


def _check_source_arch(reader: Any, names: Any, source: Path, base_dir: Path) -> None:
    """Refuse a source GGUF whose ``general.architecture`` is not the one the base's config maps to."""
    import gguf

    src_arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    if src_arch != names.arch.name:
        raise ExportError(
            f"{source}: architecture `{src_arch}` but {base_dir / 'config.json'} maps to `{names.arch.name}`",
            hint="re-import the base from this GGUF file",
        )


class _GgufTensors:
    """The tensors of the merged GGUF, by GGUF name: their order, shapes and encoded data.

    Patched tensors come from the merge stream (after the layout guard); all others are
    the source GGUF's own, dequantized and re-encoded in ``dtype``.
    """

    def __init__(
        self, reader: Any, stream: Any, index: Any, names: Any, source: Path, base_dir: Path, dtype: str
    ) -> None:
        self.stream, self.index, self.names = stream, index, names
        self.source, self.base_dir, self.dtype = source, base_dir, dtype
        self.base_readers: dict[Path, Any] = {}
        self.src_tensors = {t.name: t for t in reader.tensors}
        self.patched_hf = {t.name for t in stream.tensors if t.patched} if stream else set()
        hf_names = [t.name for t in stream.tensors] if stream else list(index.tensors)
        self.hf_by_gguf: dict[str, str] = {}
        for hf in hf_names:
            g = names.tensor_name(hf)
            if g is not None:
                self.hf_by_gguf[g] = hf
        for hf in sorted(self.patched_hf):
            if names.tensor_name(hf) is None:
                raise ExportError(
                    f"{base_dir}: patched tensor `{hf}` has no llama.cpp name ({names.arch.name})",
                    hint="merge to a folder instead (`portllm-edge merge`)",
                )
        self.order = [t.name for t in reader.tensors] + sorted(
            g for g, hf in self.hf_by_gguf.items() if g not in self.src_tensors and hf in self.patched_hf
        )

    def is_patched(self, g: str) -> bool:
        return self.hf_by_gguf.get(g) in self.patched_hf

    def shape_of(self, g: str) -> tuple[int, ...]:
        """Logical shape (outermost first) of GGUF tensor ``g``."""
        st = self.src_tensors.get(g)
        if st is not None:
            return tuple(int(x) for x in reversed(st.shape.tolist()))
        assert self.stream is not None
        return next(t.shape for t in self.stream.tensors if t.name == self.hf_by_gguf[g])

    def data(self, g: str) -> tuple[np.ndarray, Any]:
        """Encoded data of GGUF tensor ``g`` and its raw GGML type (``None`` for numpy's own)."""
        import gguf
        import numpy as np

        hf = self.hf_by_gguf.get(g)
        st = self.src_tensors.get(g)
        if hf is not None and hf in self.patched_hf and self.stream is not None:
            merged = np.concatenate([blk for _, _, blk in self.stream.blocks(hf)])
            if st is not None and hf in self.index.tensors:
                src = gguf.quants.dequantize(st.data, st.tensor_type).reshape(merged.shape)
                self._check_layout(g, hf, src)
            return _encode(self.names.to_gguf_rows(g, merged), self.dtype)
        assert st is not None
        arr = gguf.quants.dequantize(st.data, st.tensor_type).reshape(self.shape_of(g))
        return _encode(arr, self.dtype)

    def _check_layout(self, g: str, hf: str, src: np.ndarray) -> None:
        """The layout guard: the unpatched base weight in GGUF layout must equal the source tensor."""
        import numpy as np

        from portllm_edge.porting.merge import RowReader

        bt = self.index.tensors[hf]
        if bt.file not in self.base_readers:
            self.base_readers[bt.file] = RowReader(bt.file, error_cls=ExportError)
        mine = self.names.to_gguf_rows(g, self.base_readers[bt.file].full_f32(hf))
        err = float(np.abs(mine - src).max()) / max(float(np.abs(src).max()), 1e-30)
        if err > LAYOUT_RTOL.get(bt.info.dtype, LAYOUT_RTOL["F32"]):
            raise ExportError(
                f"{self.source}: tensor `{g}` does not match `{hf}` of {self.base_dir} in llama.cpp's layout "
                f"(relative difference {err:.2e})",
                hint="this architecture's GGUF layout is not supported here; merge to a folder "
                "and convert it with llama.cpp's convert_hf_to_gguf.py",
            )

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
        for r in self.base_readers.values():
            r.close()


def _write_gguf_file(
    out: Path, overwrite: bool, reader: Any, names: Any, tensors: _GgufTensors, dtype: str
) -> list[str]:
    """Write the header, metadata and every tensor of ``tensors`` to ``out`` atomically.

    Returns:
        The GGUF names of the patched tensors written.
    """
    import gguf
    import numpy as np

    ftype = {
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "bf16": gguf.LlamaFileType.MOSTLY_BF16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }[dtype]
    written_patched: list[str] = []
    with atomic_file(out, overwrite=overwrite) as tmp:
        w = gguf.GGUFWriter(tmp, names.arch.name)
        _copy_metadata(reader, w, int(ftype))
        for g in tensors.order:
            shape = tensors.shape_of(g)
            probe, raw = _encode(np.zeros((1,) * (len(shape) - 1) + (shape[-1],), np.float32), dtype)
            nbytes = probe.nbytes * int(np.prod(shape[:-1], dtype=np.int64))
            if raw is None:
                w.add_tensor_info(g, shape, probe.dtype, nbytes)
            else:
                w.add_tensor_info(g, _byte_shape(shape, raw), np.dtype(np.uint8), nbytes, raw_dtype=raw)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        for g in tensors.order:
            data, _ = tensors.data(g)
            if tensors.is_patched(g):
                written_patched.append(g)
            w.write_tensor_data(np.ascontiguousarray(data))
        w.close()
    return written_patched


def _byte_shape(shape: tuple[int, ...], raw: Any) -> tuple[int, ...]:
    import gguf

    return tuple(gguf.quants.quant_shape_to_byte_shape(shape, raw))


__all__ = [
    "GGUF_DTYPES",
    "MergedGgufResult",
    "check_gguf_merge_target",
    "gguf_source_of",
    "is_gguf_path",
    "write_merged_gguf",
]
