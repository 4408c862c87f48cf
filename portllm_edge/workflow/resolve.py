"""Step 1, resolve: what the user typed -> a local patch, a local new base and (when known) the old base.

The old base is what the preflight compares tokenizers against, what the vocabulary
carry-over reads and what the drift table measures. When the user does not pass
``--old``, it is looked up in the model store from what the patch recorded: the weight
fingerprint of the base it was trained on (stored patches), the bases in its lineage,
and its ``adapter_config.json`` ``base_model_name_or_path``. Reads configs and
safetensors headers only; imports no torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from portllm_edge.workflow.types import OldBaseSource, PatchRef, Resolved

if TYPE_CHECKING:
    from portllm_edge.errors import ConfigError
    from portllm_edge.models.refs import ResolvedBase


def resolve_patch_ref(patch: str, *, validate: bool = True) -> PatchRef:
    """A store name or an adapter folder -> :class:`PatchRef`.

    Args:
        patch: what the user typed.
        validate: check a folder's adapter files now; ``check`` leaves that to the preflight,
            which reports every problem instead of the first.

    Raises:
        StoreError: an unknown store name (with a did-you-mean hint).
        PatchError: a folder that is not a valid LoRA adapter (with ``validate``), or no such folder.
    """
    from portllm_edge.errors import PatchError
    from portllm_edge.patches import PatchStore, validate_adapter_dir

    folder = Path(patch).expanduser()
    if folder.is_dir():
        if validate:
            validate_adapter_dir(folder)
        return PatchRef(ref=patch, adapter_dir=folder)
    if ("/" in patch or folder.suffix) and not folder.exists():
        raise PatchError(
            f"{folder}: no such patch folder.", hint="pass a store name (see `patch list`) or a folder"
        )
    stored = PatchStore().get(patch)
    return PatchRef(ref=patch, adapter_dir=stored.adapter_dir, stored=stored)


def _recorded_bases(patch: PatchRef) -> list[tuple[str | None, str | None]]:
    """``(name, fingerprint)`` of every base the patch recorded, most specific first."""
    out: list[tuple[str | None, str | None]] = []
    if patch.stored is not None:
        m = patch.stored.manifest
        out.append((m.source_base.id, m.source_base.fingerprint))
        out.extend(
            (e.base_id, e.base_fingerprint) for e in reversed(m.lineage) if e.base_id or e.base_fingerprint
        )
    try:
        cfg = json.loads((patch.adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cfg = {}
    ref = cfg.get("base_model_name_or_path") if isinstance(cfg, dict) else None
    if isinstance(ref, str) and ref:
        out.append((ref, None))
    return out


def distinct_weights(old: ResolvedBase, new: ResolvedBase, *, old_flag: str) -> tuple[str, str]:
    """The weight fingerprints of the old and the new base, refusing two references to the same weights.

    Args:
        old, new: the resolved bases; old_flag: the option that named the old one (``--old``, ``--from``).

    Returns:
        ``(old fingerprint, new fingerprint)``.

    Raises:
        ConfigError: both hold the same weights, so there is no update to port across.
    """
    from portllm_edge.errors import ConfigError

    old_fp, new_fp = old.fingerprint(), new.fingerprint()
    if old_fp == new_fp:
        raise ConfigError(
            f"{old_flag} {old.ref} and --base {new.ref} hold the same weights (fingerprint {new_fp}): "
            "there is no update to port across.",
            hint=f"pass the updated base with --base and the base the patch was trained on with {old_flag}",
        )
    return old_fp, new_fp


def find_old_base(patch: PatchRef, new_base: ResolvedBase) -> tuple[ResolvedBase, OldBaseSource] | None:
    """The base the patch was trained on, from the model store (or a recorded local folder), or None.

    A candidate with the new base's own weights is skipped: comparing a base with itself
    tells nothing (a ported patch records the base it was ported onto).
    """
    from portllm_edge.errors import BaseModelError
    from portllm_edge.models.refs import find_store_base, resolve_base

    new_fp = new_base.fingerprint()
    for name, fingerprint in _recorded_bases(patch):
        if fingerprint == new_fp:
            continue
        found = find_store_base(name, fingerprint)
        if found is None and name and Path(name).expanduser().is_dir():
            try:
                found = resolve_base(name), "name"
            except BaseModelError:
                found = None
        if found is not None and found[0].path.resolve() != new_base.path.resolve():
            base, how = found
            return base, ("store: fingerprint" if how == "fingerprint" else "store: name")
    return None


def own_base_error(r: Resolved, *, old_flag: str = "--old") -> ConfigError | None:
    """The error when ``r`` has no old base because ``--base`` is a base the patch records, else None.

    A recorded base with ``r.base``'s weight fingerprint, or a recorded folder that is ``r.base``'s
    folder, means ``--base`` is the patch's own base: there is no update to port across.
    """
    from portllm_edge.errors import ConfigError

    new_fp = r.base.fingerprint()
    for name, fingerprint in _recorded_bases(r.patch):
        same = fingerprint == new_fp
        if not same and fingerprint is None and name and Path(name).expanduser().is_dir():
            same = Path(name).expanduser().resolve() == r.base.path.resolve()
        if same:
            return ConfigError(
                f"--base {r.base.ref} is the base the patch records ({name or fingerprint}): there is no "
                "update to port across",
                hint=f"pass the updated base with --base (and the base the patch was trained on with "
                f"{old_flag} if it is not in the model store)",
            )
    return None


def unknown_old_base(r: Resolved, *, old_flag: str = "--old") -> ConfigError:
    """The error of a command that needs the old base when ``r`` has none (``drift``, ``forecast``).

    :func:`own_base_error` when ``--base`` is the patch's own base, else: none of its bases is here.
    """
    from portllm_edge.errors import ConfigError

    return own_base_error(r, old_flag=old_flag) or ConfigError(
        "the old base is not known: the patch records no base that is in the model store.",
        hint=f"pass {old_flag} with the base the patch was trained on",
    )


def resolve(
    patch: str, base: str, *, old: str | None = None, find_old: bool = True, validate: bool = True
) -> Resolved:
    """Resolve a patch, a new base and the old base (``old``, else looked up; see the module docstring).

    Raises:
        StoreError, PatchError: the patch; BaseModelError: a base reference that matches nothing.
    """
    from portllm_edge.models.refs import resolve_base

    patch_ref = resolve_patch_ref(patch, validate=validate)
    new = resolve_base(base)
    if old is not None:
        return Resolved(patch_ref, new, resolve_base(old), "given")
    found = find_old_base(patch_ref, new) if find_old else None
    if found is None:
        return Resolved(patch_ref, new)
    return Resolved(patch_ref, new, found[0], found[1])
