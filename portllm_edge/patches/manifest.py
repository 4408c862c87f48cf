"""The patch manifest: what a stored patch is, where it came from, and the checksums of its files.

Why this module exists: a LoRA adapter folder alone does not say which base
weights it was learned on, nor what happened to it since. The manifest
(``manifest.json`` next to the adapter) records the source base (id and a
fingerprint of its weights), the adapter's shape (``r``, ``lora_alpha``,
target modules), the sha256 of each file, and a lineage of imports, trainings
and ports.

Compatibility follows peft's config loading (``PeftConfigMixin.from_pretrained``
/ ``check_kwargs``): a manifest written by a *newer* portllm-edge may carry keys
we don't know; they are dropped with one :class:`ManifestWarning`, while a
minimum key set stays required. A manifest that misses a required key or has a
wrong type raises :class:`~portllm_edge.errors.PatchError` naming the field.

This module must not import torch or UI code; it only reads and writes JSON.
"""

from __future__ import annotations

import os
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from portllm_edge.errors import PatchError
from portllm_edge.fsutil import atomic_write_json
from portllm_edge.tensorio import read_small_json

SCHEMA_VERSION = 1
"""Manifest schema written by this version."""

MANIFEST_NAME = "manifest.json"

REQUIRED_KEYS: dict[str, tuple[str, ...]] = {
    "": ("schema_version", "name", "adapter", "files"),
    "adapter": ("peft_type", "r", "lora_alpha", "target_modules"),
    "lineage[]": ("kind",),
}
"""The minimum key set, per object path, that a manifest of any version must hold."""

LineageKind = Literal["import", "train", "port"]


class ManifestWarning(UserWarning):
    """A manifest holds keys this version doesn't know (written by a newer portllm-edge)."""


def utc_now() -> datetime:
    """The current time, timezone-aware UTC, to the second."""
    return datetime.now(UTC).replace(microsecond=0)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceBase(_Strict):
    """The base model a patch was learned on (or last ported to).

    Attributes:
        id: A model id or local path (``base_model_name_or_path``), or ``None`` if unknown.
        fingerprint: ``portllm_edge.models.fingerprint`` of its weights (``"w1:..."``), or ``None``.
        model_type: ``config.json``'s ``model_type`` (``"llama"``, ...), or ``None``.
    """

    id: Optional[str] = None
    fingerprint: Optional[str] = None
    model_type: Optional[str] = None


class AdapterInfo(_Strict):
    """The adapter's shape, copied from ``adapter_config.json``.

    Attributes:
        peft_type: Always ``"LORA"`` for now.
        r: LoRA rank (the ``r`` of ΔW = (lora_alpha/r)·B·A).
        lora_alpha: LoRA scaling numerator.
        target_modules: Module names (list) or peft's regex (str).
        modules_to_save: Fully trained modules stored with the patch, or ``None``.
        peft_version: The peft version that saved the adapter, if recorded.
        use_dora: Whether the adapter is DoRA (magnitude vectors).
    """

    peft_type: str
    r: int = Field(gt=0)
    lora_alpha: float
    target_modules: Union[list[str], str]
    modules_to_save: Optional[list[str]] = None
    peft_version: Optional[str] = None
    use_dora: bool = False


class LineageEntry(_Strict):
    """One step in a patch's history.

    Attributes:
        kind: ``"import"`` (copied into the store), ``"train"`` (learned by
            ``portllm-edge train``) or ``"port"`` (moved onto a new base).
        at: When (UTC).
        base_id: The base involved (trained on / ported to).
        base_fingerprint: That base's weight fingerprint.
        precision: Load precision used (``"nf4"``, ``"bf16"``, ...), for train/port.
        parent: The patch this one was derived from (store name), for ports.
        parent_checksum: :func:`files_checksum` of the parent's files when it was ported, so a
            rerun can tell "already ported" from "ported from an older version of that name".
        run_id: The run in the run history (``portllm-edge runs show ID``), if any.
        note: Free text.
    """

    kind: LineageKind
    at: datetime = Field(default_factory=utc_now)
    base_id: Optional[str] = None
    base_fingerprint: Optional[str] = None
    precision: Optional[str] = None
    parent: Optional[str] = None
    parent_checksum: Optional[str] = None
    run_id: Optional[str] = None
    note: Optional[str] = None


class PatchManifest(_Strict):
    """``manifest.json`` of a stored patch (schema version 1).

    Attributes:
        schema_version: :data:`SCHEMA_VERSION` when written by this version.
        name: The store name.
        task: The task the patch was trained for (``"sst2"``, ...), or ``None``.
        created_at: When the entry was created (UTC).
        source_base: The base the current adapter belongs to.
        adapter: The adapter's shape.
        files: Adapter file name (relative to the adapter folder) -> sha256 hex.
        lineage: History, oldest first.
    """

    schema_version: int = SCHEMA_VERSION
    name: str
    task: Optional[str] = None
    created_at: datetime = Field(default_factory=utc_now)
    source_base: SourceBase = Field(default_factory=SourceBase)
    adapter: AdapterInfo
    files: dict[str, str]
    lineage: list[LineageEntry] = Field(default_factory=list)

    @field_validator("files")
    @classmethod
    def _hex_digests(cls, v: dict[str, str]) -> dict[str, str]:
        for rel, digest in v.items():
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ValueError(f"`files[{rel!r}]` is not a sha256 hex digest")
        return v

    def to_json_dict(self) -> dict[str, Any]:
        """The manifest as a JSON-ready dict (datetimes as ISO strings)."""
        return self.model_dump(mode="json")


_KNOWN: dict[str, type[BaseModel]] = {
    "": PatchManifest,
    "source_base": SourceBase,
    "adapter": AdapterInfo,
    "lineage[]": LineageEntry,
}


def _drop_unknown(data: dict[str, Any], where: str, dropped: list[str]) -> dict[str, Any]:
    model = _KNOWN[where]
    known = set(model.model_fields)
    out = {}
    for key, value in data.items():
        if key in known:
            out[key] = value
        else:
            dropped.append(f"{where}.{key}" if where else key)
    return out


def _missing(data: dict[str, Any], where: str) -> list[str]:
    return [f"{where}.{k}" if where else k for k in REQUIRED_KEYS.get(where, ()) if k not in data]


def manifest_from_dict(data: object, *, source: str | os.PathLike[str] = MANIFEST_NAME) -> PatchManifest:
    """Build a :class:`PatchManifest` from parsed JSON, tolerating newer versions.

    Unknown keys (at the top level and inside ``source_base``, ``adapter`` and
    each lineage entry) are dropped with one :class:`ManifestWarning` listing
    them; a ``schema_version`` above :data:`SCHEMA_VERSION` adds a warning too.
    The keys in :data:`REQUIRED_KEYS` must be present.

    Args:
        data: The parsed ``manifest.json``.
        source: The file it came from, for messages.

    Returns:
        The manifest.

    Raises:
        PatchError: not an object, a required key missing, or a value of the
            wrong type (the message names the field in backticks).
    """
    src = str(source)
    hint = (
        "restore the manifest from an export or re-import the patch with `portllm-edge patch import --force`"
    )
    if not isinstance(data, dict):
        raise PatchError(f"{src}: the manifest is a {type(data).__name__}, not a JSON object", hint=hint)
    dropped: list[str] = []
    missing = _missing(data, "")
    top = _drop_unknown(data, "", dropped)
    for key in ("source_base", "adapter"):
        if isinstance(top.get(key), dict):
            missing += _missing(top[key], key)
            top[key] = _drop_unknown(top[key], key, dropped)
    if isinstance(top.get("lineage"), list):
        entries = []
        for i, entry in enumerate(top["lineage"]):
            if isinstance(entry, dict):
                missing += [m.replace("lineage[]", f"lineage[{i}]") for m in _missing(entry, "lineage[]")]
                entry = _drop_unknown(entry, "lineage[]", dropped)
            entries.append(entry)
        top["lineage"] = entries
    if missing:
        fields = ", ".join(f"`{m}`" for m in missing)
        raise PatchError(f"{src}: the manifest lacks required field(s) {fields}", hint=hint)
    version = top.get("schema_version")
    if isinstance(version, int) and version > SCHEMA_VERSION:
        warnings.warn(
            f"{src}: manifest schema_version {version} is newer than this portllm-edge's "
            f"({SCHEMA_VERSION}); reading what this version understands",
            ManifestWarning,
            stacklevel=2,
        )
    if dropped:
        warnings.warn(
            f"{src}: ignoring unknown manifest key(s) {', '.join(sorted(dropped))} "
            "(written by a newer portllm-edge?)",
            ManifestWarning,
            stacklevel=2,
        )
    try:
        return PatchManifest.model_validate(top)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or "<root>"
        raise PatchError(
            f"{src}: manifest field `{loc}` is invalid ({err['msg']})"
            + (f" and {exc.error_count() - 1} more problem(s)" if exc.error_count() > 1 else ""),
            hint=hint,
        ) from None


def read_manifest(path: str | os.PathLike[str]) -> PatchManifest:
    """Read and validate a ``manifest.json`` file.

    Raises:
        PatchError: missing, unreadable, not JSON, or invalid (see :func:`manifest_from_dict`).
    """
    p = Path(path)
    try:
        data = read_small_json(p)
    except FileNotFoundError:
        raise PatchError(
            f"{p}: manifest not found",
            hint="re-import the patch with `portllm-edge patch import --force`, or remove it",
        ) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise PatchError(
            f"{p}: the manifest is not valid JSON ({exc})",
            hint="restore it from an export or re-import the patch with `portllm-edge patch import --force`",
        ) from None
    return manifest_from_dict(data, source=p)


def files_checksum(files: dict[str, str]) -> str:
    """One sha256 hex digest over a manifest's ``files`` (name -> sha256), independent of key order.

    Two store entries have the same checksum exactly when they hold the same adapter files.
    """
    import hashlib

    h = hashlib.sha256()
    for rel in sorted(files):
        h.update(f"{rel}\0{files[rel]}\n".encode())
    return h.hexdigest()


def write_manifest(path: str | os.PathLike[str], manifest: PatchManifest) -> None:
    """Write ``manifest`` to ``path`` atomically (indented, key-sorted JSON)."""
    atomic_write_json(path, manifest.to_json_dict())


__all__ = [
    "MANIFEST_NAME",
    "REQUIRED_KEYS",
    "SCHEMA_VERSION",
    "AdapterInfo",
    "LineageEntry",
    "LineageKind",
    "ManifestWarning",
    "PatchManifest",
    "SourceBase",
    "files_checksum",
    "manifest_from_dict",
    "read_manifest",
    "utc_now",
]
