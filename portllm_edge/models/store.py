"""The local model store: copy a Hugging Face model folder in, list what is there, find quantized copies.

Store entries live in ``<home>/models/<name>/`` and are written atomically
(:func:`portllm_edge.fsutil.atomic_dir`). GGUF files have their own importer
(:mod:`portllm_edge.models.gguf`). Quantized copies of bases (NF4/int8, saved by
transformers + bitsandbytes right after quantizing, before any forward pass) live in
``<home>/models/.quantized/``, keyed by the base's weight fingerprint and the
quantization settings (:func:`quantized_cache_dir`), so a base is quantized once.
Must not import torch.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Mapping
from pathlib import Path

from portllm_edge import paths
from portllm_edge.errors import BaseModelError, StoreError
from portllm_edge.fsutil import atomic_dir

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$")
_KEEP_SUFFIXES = (".json", ".safetensors", ".model", ".txt", ".tiktoken", ".jinja")


def model_store_name(name: str | None, default: str) -> str:
    """The model-store name of an import: ``name``, or ``default`` when it is None.

    Raises:
        StoreError: the name is empty, holds a slash or a line break, starts with ``.`` or is over
            128 characters (allowed: letters, digits and ``. _ @ + -``).
    """
    store_name = default if name is None else name
    if not _NAME.fullmatch(store_name):
        raise StoreError(
            f"model name {store_name!r} is not allowed.",
            hint="use letters, digits and . _ @ + - (no slashes), at most 128 characters",
        )
    return store_name


def import_model_folder(src: str | Path, name: str | None = None, *, force: bool = False) -> Path:
    """Copy a local Hugging Face model folder (config.json + safetensors) into the model store.

    The folder is validated first by :func:`portllm_edge.models.resolve_base` (pickled-only
    weights are refused); config, tokenizer and safetensors files are copied into a temporary
    sibling and renamed into place.

    Args:
        src: The folder.
        name: Store name (default: the folder's name).
        force: Replace an existing entry of that name.

    Returns:
        The new store folder.

    Raises:
        BaseModelError: not a model folder (no config.json, no safetensors).
        StoreError: the name is invalid, or taken and ``force`` is false.
    """
    from portllm_edge.models import resolve_base

    folder = Path(src).expanduser()
    if not folder.is_dir():
        raise BaseModelError(f"{folder}: not a folder.", hint="pass a Hugging Face model folder")
    resolved = resolve_base(str(folder))
    store_name = model_store_name(name, resolved.path.name)
    dest = paths.models_dir() / store_name
    if dest.exists() and not force:
        raise StoreError(
            f"the model store already has {dest.name!r} ({dest}).",
            hint="pass --force to replace it, or --name to import under another name",
        )
    with atomic_dir(dest, overwrite=force) as tmp:
        for f in sorted(resolved.path.iterdir()):
            if f.is_file() and f.suffix.lower() in _KEEP_SUFFIXES:
                shutil.copy2(f, tmp / f.name)
    return dest


QUANTIZED_DIR = ".quantized"
"""Folder under the model store that holds quantized copies of bases (hidden from ``models list``)."""


def quantized_cache_dir(fingerprint: str, settings: Mapping[str, object]) -> Path:
    """Where the quantized copy of a base lives: keyed by its weights' fingerprint and the quantization settings.

    Args:
        fingerprint: the base's :func:`portllm_edge.models.fingerprint.fingerprint_weights` (``"w1:..."``).
        settings: every setting that changes the quantized bytes or the load (precision, quant type,
            double quant, compute dtype, dtype of unquantized tensors, blocksize, bitsandbytes version).

    Returns:
        ``<home>/models/.quantized/<fingerprint>-<sha256 of the settings, 12 hex>`` (may not exist).
    """
    key = hashlib.sha256(json.dumps(dict(settings), sort_keys=True, default=str).encode()).hexdigest()[:12]
    return paths.models_dir() / QUANTIZED_DIR / f"{fingerprint.replace(':', '-')}-{key}"


def quantized_cache_entries() -> list[Path]:
    """The quantized copies in the store (folders holding a ``config.json``)."""
    root = paths.models_dir() / QUANTIZED_DIR
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / "config.json").is_file())
