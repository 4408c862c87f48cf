"""Import a GGUF file into the local model store as a safetensors Hugging Face folder.

Why: edge users often hold their base model as a llama.cpp GGUF file. Porting,
fine-tuning and merging need a safetensors folder. The import streams: it reads
one tensor at a time: ``gguf.GGUFReader`` gives each tensor's offset, type and
shape, and the bytes are read with ``os.pread`` (the reader's memory map would keep
every page read resident in this process until the end, the whole file at 7B), then it
dequantizes it with ``gguf.quants.dequantize`` (Q4_1, Q8_0, ... to fp32, one
tensor), applies transformers' GGUF tensor fixes (``TENSOR_PROCESSORS``: e.g. the
reverse of llama.cpp's q/k row permutation, Gemma's ``norm - 1``), casts it to the
output dtype and appends its bytes to a size-capped safetensors shard whose header
is written last into space reserved at the front. Peak memory is the runtime plus
about three copies of the largest tensor (fp32 dequantized, processed, cast), never
the model: a 7B GGUF imports in about 2 GiB of anonymous memory instead of 28 GB.

Output dtype (:func:`output_dtype`): the file's own float type when every matrix is
stored as one (F32, F16 or BF16), else bf16 -- the dequantized values of a 4/8-bit
file are rounded to bf16 once (round to nearest even), which is below the
quantization error they already carry. Config and tokenizer come from transformers'
GGUF reader (``AutoConfig``/``AutoTokenizer`` with ``gguf_file=``); a
``portllm_model.json`` records the source file, its sha256 and the dtype.

Must not be imported by probe/plan (it imports torch and transformers inside the functions).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from portllm_edge import paths
from portllm_edge.errors import BaseModelError, StoreError
from portllm_edge.fsutil import atomic_dir

GGUF_MAGIC = b"GGUF"
METADATA_FILE = "portllm_model.json"
SHARD_BYTES = 2 * 1024**3
"""Size cap of one written safetensors shard, bytes (a tensor larger than the cap gets a shard of its own)."""
_QUANT_SUFFIX = re.compile(r"[.-](Q\d[\w]*|IQ\d[\w]*|F16|F32|BF16)$", re.IGNORECASE)
_ST_DTYPE = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}
_ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2}
_HEADER_SLACK = 512
"""Bytes reserved per planned tensor for its safetensors header entry (name, dtype, shape, offsets)."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def default_name(gguf_path: Path) -> str:
    """Store name for a GGUF file: its stem without the quantization suffix (``SmolLM2-135M-Instruct``)."""
    return _QUANT_SUFFIX.sub("", gguf_path.stem) or gguf_path.stem


def check_gguf_file(path: Path) -> None:
    """Check that ``path`` is a readable GGUF file (magic bytes ``GGUF``).

    Raises:
        BaseModelError: missing, unreadable, or not GGUF.
    """
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise BaseModelError(f"{path}: cannot read ({exc.strerror}).", hint="check the path") from exc
    if magic != GGUF_MAGIC:
        raise BaseModelError(
            f"{path}: not a GGUF file (first bytes {magic!r}, expected b'GGUF').",
            hint="pass a llama.cpp .gguf file, or a Hugging Face model folder with --base",
        )


def output_dtype(tensor_types: list[str]) -> str:
    """The dtype the import writes, from the GGUF type names of the file's matrices.

    Args:
        tensor_types: ``GGMLQuantizationType`` names of the 2-D (and larger) tensors, e.g. ``["Q4_1", "F32"]``.

    Returns:
        ``"float32"``, ``"float16"`` or ``"bfloat16"``: the file's own float type when all the
        matrices share it, else ``"bfloat16"`` (quantized or mixed files).
    """
    kinds = set(tensor_types)
    for ggml, torch_name in (("F32", "float32"), ("F16", "float16"), ("BF16", "bfloat16")):
        if kinds == {ggml}:
            return torch_name
    return "bfloat16"


@dataclass
class _Shard:
    """One output shard being written: its file, reserved header space and entries so far."""

    path: Path
    reserved: int
    entries: dict[str, dict[str, Any]]
    offset: int = 0
    fh: Any = None

    def open(self) -> None:
        self.fh = open(self.path, "wb")
        self.fh.write(b"\0" * (8 + self.reserved))

    def add(self, name: str, tensor: Any) -> None:
        """Append ``tensor``'s bytes (a contiguous torch tensor of a dtype in ``_ST_DTYPE``)."""
        import torch

        data = tensor.reshape(-1).view(torch.uint8).numpy().data
        self.fh.write(data)
        self.entries[name] = {
            "dtype": _ST_DTYPE[str(tensor.dtype).removeprefix("torch.")],
            "shape": list(tensor.shape),
            "data_offsets": [self.offset, self.offset + data.nbytes],
        }
        self.offset += data.nbytes

    def close(self) -> None:
        """Write the header into the reserved space (padded with spaces); move the payload when it does not fit."""
        import os

        header = json.dumps(
            {"__metadata__": {"format": "pt"}, **self.entries}, separators=(",", ":")
        ).encode()
        if len(header) <= self.reserved:
            self.fh.seek(0)
            self.fh.write(self.reserved.to_bytes(8, "little") + header + b" " * (self.reserved - len(header)))
            self.fh.flush()
            os.fsync(self.fh.fileno())
            self.fh.close()
            return
        self.fh.close()  # pragma: no cover - only when a processor produced far more tensors than planned
        header += b" " * (-len(header) % 8)
        moved = self.path.with_suffix(".tmp")
        with open(self.path, "rb") as src, open(moved, "wb") as dst:
            dst.write(len(header).to_bytes(8, "little") + header)
            src.seek(8 + self.reserved)
            for block in iter(lambda: src.read(1 << 24), b""):
                dst.write(block)
        moved.replace(self.path)


def _plan_shards(sizes: list[int], cap: int) -> list[int]:
    """Shard index of each tensor (file order), filling shards up to ``cap`` bytes."""
    index, used, out = 0, 0, []
    for n in sizes:
        if used and used + n > cap:
            index, used = index + 1, 0
        out.append(index)
        used += n
    return out


def _tensor_map(src: Path, config: Any) -> tuple[Any, dict[str, str], dict[str, Any]]:
    """transformers' tensor processor for the file's architecture and its GGUF→HF name map (meta-device model)."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import (
        TENSOR_PROCESSORS,
        TensorProcessor,
        get_gguf_hf_weights_map,
        load_gguf_checkpoint,
    )

    parsed = load_gguf_checkpoint(str(src), return_tensors=False)
    from gguf import GGUFReader

    architecture = str(GGUFReader(str(src)).fields["general.architecture"].contents())
    processor = TENSOR_PROCESSORS.get(architecture, TensorProcessor)(config=parsed["config"])
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return processor, get_gguf_hf_weights_map(model, processor), parsed


def _read_tensor(fd: int, tensor: Any) -> Any:
    """``tensor``'s raw data (the reader's dtype and shape) read with ``os.pread``, not through the map.

    Raises:
        BaseModelError: the file ends before the tensor's last byte.
    """
    import numpy as np

    data = os.pread(fd, int(tensor.n_bytes), int(tensor.data_offset))
    if len(data) != int(tensor.n_bytes):
        raise BaseModelError(
            f"GGUF tensor {tensor.name!r}: the file ends after {len(data)} of its {int(tensor.n_bytes)} bytes.",
            hint="the file is truncated; download or convert it again",
        )
    return np.frombuffer(data, dtype=tensor.data.dtype).reshape(tensor.data.shape)


def _write_weights(src: Path, config: Any, dest: Path, dtype: str, shard_bytes: int) -> list[str]:
    """Stream every tensor of ``src`` into safetensors shards under ``dest``; returns the shard file names."""
    import numpy as np
    import torch
    from gguf import GGUFReader
    from gguf.quants import dequantize

    processor, name_map, parsed = _tensor_map(src, config)
    parsed["tensors"] = {}
    reader = GGUFReader(str(src))
    target = getattr(torch, dtype)
    plan = _plan_shards([int(t.n_elements) * _ITEMSIZE[dtype] for t in reader.tensors], shard_bytes)
    count = plan[-1] + 1 if plan else 1
    names = (
        [f"model-{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count)]
        if count > 1
        else ["model.safetensors"]
    )
    per_shard = [plan.count(i) for i in range(count)]
    shards = [_Shard(dest / names[i], _HEADER_SLACK * per_shard[i] + 4096, {}) for i in range(count)]
    weight_map: dict[str, str] = {}
    current = -1
    fd = os.open(src, os.O_RDONLY)
    try:
        for tensor, index in zip(reader.tensors, plan, strict=True):
            if index != current:
                if current >= 0:
                    shards[current].close()
                shards[index].open()
                current = index
            weights = dequantize(_read_tensor(fd, tensor), tensor.tensor_type)
            result = processor.process(
                weights=weights, name=tensor.name, tensor_key_mapping=name_map, parsed_parameters=parsed
            )
            del weights
            if result.name is None or result.name not in name_map:
                continue
            hf_name = name_map[result.name]
            out = torch.from_numpy(np.require(result.weights, requirements=["C", "W"])).to(target)
            del result
            shards[index].add(hf_name, out)
            weight_map[hf_name] = names[index]
            del out
    finally:
        os.close(fd)
    for hf_name, value in parsed["tensors"].items():  # tensors a processor assembled itself (MoE experts)
        shards[current].add(hf_name, value.to(target).contiguous())
        weight_map[hf_name] = names[current]
    if current >= 0:
        shards[current].close()
    if count > 1:
        total = sum(s.offset for s in shards)
        index_doc = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (dest / "model.safetensors.index.json").write_text(json.dumps(index_doc, indent=2))
    return names


def import_gguf(
    path: str | Path,
    *,
    name: str | None = None,
    force: bool = False,
    reuse: bool = False,
    dtype: str = "auto",
    shard_bytes: int = SHARD_BYTES,
) -> Path:
    """Convert a GGUF file to a safetensors model folder in the local model store, one tensor at a time.

    Args:
        path: the ``.gguf`` file.
        name: store name; default :func:`default_name`.
        force: replace an existing store entry of that name.
        reuse: if an entry of that name was imported from a file with the same
            sha256, return it without converting again.
        dtype: ``auto`` (:func:`output_dtype`), ``bf16``, ``fp16`` or ``fp32``.
        shard_bytes: size cap of one safetensors shard, bytes.

    Returns:
        The store folder (``config.json``, safetensors shards at the output dtype, tokenizer
        files, ``portllm_model.json``).

    Raises:
        BaseModelError: not a GGUF file, or transformers cannot read its architecture or tokenizer.
        StoreError: the name is invalid, or taken and neither ``force`` nor a reusable match.
    """
    src = Path(path).expanduser().resolve()
    check_gguf_file(src)
    from portllm_edge.models.store import model_store_name

    name = model_store_name(name, default_name(src))
    choices = {"auto": None, "bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
    if dtype not in choices:
        raise StoreError(f"GGUF import dtype {dtype!r} is not known.", hint="use auto, bf16, fp16 or fp32")
    dest = paths.models_dir() / name
    digest = _sha256(src)
    if dest.exists():
        meta_path = dest / METADATA_FILE
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        if reuse and meta.get("source_sha256") == digest:
            return dest
        if not force:
            raise StoreError(
                f"model store already has {name!r} ({dest}).",
                hint="pass --force to replace it, or --name to import under another name",
            )

    import torch
    from gguf import GGUFReader
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    try:
        reader = GGUFReader(str(src))
        matrices = [t.tensor_type.name for t in reader.tensors if len(t.shape) > 1]
        del reader
        out_dtype = choices[dtype] or output_dtype(matrices)
        tokenizer = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
        config = AutoConfig.from_pretrained(src.parent, gguf_file=src.name)
    except Exception as exc:  # transformers/gguf raise many types for unsupported/corrupt GGUF
        raise BaseModelError(
            f"{src}: transformers could not read this GGUF ({type(exc).__name__}: {str(exc)[:200]}).",
            hint="check that the architecture is supported by transformers' GGUF loader and the file is complete",
        ) from exc
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = getattr(torch, out_dtype)
    config.name_or_path = name
    with atomic_dir(dest, overwrite=True) as tmp:
        try:
            _write_weights(src, config, tmp, out_dtype, shard_bytes)
        except (ValueError, KeyError, NotImplementedError) as exc:
            raise BaseModelError(
                f"{src}: cannot convert the tensors ({type(exc).__name__}: {str(exc)[:200]}).",
                hint="check that the architecture is supported by transformers' GGUF loader and the file is complete",
            ) from exc
        if not getattr(config, "architectures", None):
            from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

            config.architectures = [MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[config.model_type]]
        config.save_pretrained(tmp)
        GenerationConfig.from_model_config(config).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / METADATA_FILE).write_text(
            json.dumps(
                {
                    "name": name,
                    "source": "gguf",
                    "source_file": str(src),
                    "source_sha256": digest,
                    "imported_at": datetime.now(UTC).isoformat(),
                    "dtype": out_dtype,
                },
                indent=2,
            )
        )
    return dest
