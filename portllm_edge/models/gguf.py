"""Import a GGUF file into the local model store as a safetensors Hugging Face folder.

Why: edge users often hold their base model as a llama.cpp GGUF file. Porting,
fine-tuning and merging need a safetensors folder. transformers dequantizes GGUF
tensors (Q4_1, Q8_0, ...) to fp32 when loading with ``gguf_file=`` (see the
transformers docs, "GGUF and interaction with Transformers"); we save that result,
with its tokenizer, under ``<home>/models/<name>/`` plus a ``portllm_model.json``
that records the source file and its sha256. The dequantized weights are exact
copies of what the GGUF encodes; they are not re-quantized.

Must not be imported by probe/plan (it imports transformers inside the function).
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from pathlib import Path

from portllm_edge import paths
from portllm_edge.errors import BaseModelError, StoreError
from portllm_edge.fsutil import atomic_dir

GGUF_MAGIC = b"GGUF"
METADATA_FILE = "portllm_model.json"
_QUANT_SUFFIX = re.compile(r"[.-](Q\d[\w]*|IQ\d[\w]*|F16|F32|BF16)$", re.IGNORECASE)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$")


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


def import_gguf(
    path: str | Path, *, name: str | None = None, force: bool = False, reuse: bool = False
) -> Path:
    """Convert a GGUF file to a safetensors model folder in the local model store.

    Args:
        path: the ``.gguf`` file.
        name: store name; default :func:`default_name`.
        force: replace an existing store entry of that name.
        reuse: if an entry of that name was imported from a file with the same
            sha256, return it without converting again.

    Returns:
        The store folder (``config.json``, ``model.safetensors`` in fp32, tokenizer files,
        ``portllm_model.json``).

    Raises:
        BaseModelError: not a GGUF file, or transformers cannot convert it.
        StoreError: the name is invalid, or taken and neither ``force`` nor a reusable match.
    """
    src = Path(path).expanduser().resolve()
    check_gguf_file(src)
    name = name or default_name(src)
    if not _NAME.match(name):
        raise StoreError(
            f"model name {name!r} is not allowed.",
            hint="use letters, digits and . _ @ + - (no slashes), at most 128 characters",
        )
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
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
        model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
    except Exception as exc:  # transformers raises many types for unsupported/corrupt GGUF
        raise BaseModelError(
            f"{src}: transformers could not convert this GGUF ({type(exc).__name__}: {str(exc)[:200]}).",
            hint="check that the architecture is supported by transformers' GGUF loader and the file is complete",
        ) from exc
    # The GGUF "quantizer" only marks the model as loaded-from-GGUF; the tensors are already fp32.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = name
    with atomic_dir(dest, overwrite=True) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / METADATA_FILE).write_text(
            json.dumps(
                {
                    "name": name,
                    "source": "gguf",
                    "source_file": str(src),
                    "source_sha256": digest,
                    "imported_at": datetime.now(UTC).isoformat(),
                    "dtype": "float32",
                },
                indent=2,
            )
        )
    return dest
