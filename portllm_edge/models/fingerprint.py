"""A cheap, content-based fingerprint of a base model's weights.

Why: a patch's manifest must record *which* weights it was trained on, so that a
later base (same name, updated weights) can be told apart. Hashing a 7B model's
14 GB takes minutes; instead we hash every tensor's name, dtype and shape plus a
few small samples of its bytes (start, quarter points and end of each tensor's
data). Any real update (continued pretraining, a new release) moves essentially
every tensor, so it changes the samples; a re-download of the same files does not.

Reads safetensors headers and a few hundred bytes per tensor; never loads a tensor.
Must not import torch.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

from portllm_edge.errors import BaseModelError

_SAMPLE = 64  # bytes per sample
FINGERPRINT_PREFIX = "w1:"  # bump when the algorithm changes


def _header(path: Path) -> tuple[int, dict[str, dict[str, object]]]:
    try:
        from portllm_edge.tensorio import read_safetensors_header
    except ImportError:  # pragma: no cover - tensorio ships with the package
        read_safetensors_header = None  # type: ignore[assignment]
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) < 8:
            raise BaseModelError(
                f"{path}: not a safetensors file (shorter than 8 bytes).",
                hint="re-export the model with save_pretrained(safe_serialization=True)",
            )
        (n,) = struct.unpack("<Q", raw)
    if read_safetensors_header is not None:
        read_safetensors_header(path, error_cls=BaseModelError)  # full validation, file named
    with open(path, "rb") as fh:
        fh.seek(8)
        header = json.loads(fh.read(n))
    header.pop("__metadata__", None)
    return 8 + n, header


def fingerprint_weights(files: list[Path]) -> str:
    """Return ``"w1:<sha256 hex, 32 chars>"`` for the given safetensors shards.

    Args:
        files: the model's ``.safetensors`` shards (any order).

    Returns:
        A stable string; equal for identical weights, different after any update
        that changes the sampled bytes of any tensor.

    Raises:
        BaseModelError: a file is not a valid safetensors file.
    """
    digest = hashlib.sha256()
    entries: list[tuple[str, Path, int, dict[str, object]]] = []
    for f in files:
        start, header = _header(Path(f))
        for name, info in header.items():
            entries.append((name, Path(f), start, info))
    entries.sort(key=lambda e: e[0])
    handles: dict[Path, object] = {}
    try:
        for name, path, start, info in entries:
            offsets = info["data_offsets"]
            assert isinstance(offsets, list)
            begin, end = int(offsets[0]), int(offsets[1])
            digest.update(f"{name}|{info['dtype']}|{info['shape']}|".encode())
            fh = handles.get(path)
            if fh is None:
                fh = handles[path] = open(path, "rb")
            size = end - begin
            for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
                pos = begin + max(0, min(size - _SAMPLE, int(size * frac)))
                fh.seek(start + pos)  # type: ignore[attr-defined]
                digest.update(fh.read(min(_SAMPLE, size)))  # type: ignore[attr-defined]
    finally:
        for fh in handles.values():
            fh.close()  # type: ignore[attr-defined]
    return FINGERPRINT_PREFIX + digest.hexdigest()[:32]
