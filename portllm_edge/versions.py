"""Versions of the libraries that decide numerics, for run records. Imports nothing heavy itself."""

from __future__ import annotations

import platform
import sys
from importlib import metadata

_PACKAGES = ("portllm-edge", "torch", "transformers", "peft", "bitsandbytes", "safetensors", "accelerate")


def library_versions() -> dict[str, str | None]:
    """``{package: version or None}`` for the numerics-relevant packages, plus python and platform."""
    out: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    out["python"] = sys.version.split()[0]
    out["platform"] = platform.platform()
    return out
