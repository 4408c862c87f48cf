"""Patches: validate LoRA adapter folders and keep them in an atomic, locked, checksummed store.

Public API (others code against these names):

* :func:`validate_adapter_dir` -> :class:`AdapterSummary`
* :class:`PatchStore` (``import_dir``, ``list``, ``get``, ``verify``, ``export``, ``remove``,
  ``add_lineage``, ``recover``), :class:`StoredPatch`, :class:`VerifyResult`
* :class:`PatchManifest`, :class:`LineageEntry`, :class:`SourceBase`, :class:`AdapterInfo`,
  :func:`read_manifest`

Must not import torch or UI code at import time.
"""

from __future__ import annotations

from portllm_edge.patches.adapter import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    AdapterSummary,
    validate_adapter_dir,
)
from portllm_edge.patches.manifest import (
    MANIFEST_NAME,
    SCHEMA_VERSION,
    AdapterInfo,
    LineageEntry,
    ManifestWarning,
    PatchManifest,
    SourceBase,
    manifest_from_dict,
    read_manifest,
)
from portllm_edge.patches.store import PatchStore, StoredPatch, VerifyResult, validate_name

__all__ = [
    "CONFIG_NAME",
    "MANIFEST_NAME",
    "SCHEMA_VERSION",
    "WEIGHTS_NAME",
    "AdapterInfo",
    "AdapterSummary",
    "LineageEntry",
    "ManifestWarning",
    "PatchManifest",
    "PatchStore",
    "SourceBase",
    "StoredPatch",
    "VerifyResult",
    "manifest_from_dict",
    "read_manifest",
    "validate_adapter_dir",
    "validate_name",
]
