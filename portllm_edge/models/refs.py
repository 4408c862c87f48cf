"""Resolve what a user typed after ``--base`` to a local folder of safetensors weights.

Order of resolution (first match wins):

1. a local Hugging Face model folder (has ``config.json``);
2. a GGUF file: imported once into the local model store (see :mod:`.gguf`);
3. a name in the local model store (``<home>/models/<name>``);
4. a model id (``org/name``) in the local Hugging Face cache, offline;
5. a hub id, downloaded only when ``online=True`` *and* ``HF_HUB_OFFLINE`` is unset.

Only safetensors weights are accepted: a folder that offers only pickled
``.bin``/``.pt`` files is refused (unpickling can run code). This module must
not import torch.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from portllm_edge import paths
from portllm_edge.errors import BaseModelError

BaseKind = Literal["folder", "store", "hf_cache", "hub", "gguf"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


@dataclass(frozen=True)
class ResolvedBase:
    """A base model that is on disk, ready to load.

    Attributes:
        ref: what the user typed.
        kind: how it was found.
        path: the local model folder (``config.json``, safetensors, tokenizer files).
        model_id: a readable id for records (store name, hub id or folder name).
        weight_files: the safetensors shards, sorted.
    """

    ref: str
    kind: BaseKind
    path: Path
    model_id: str
    weight_files: tuple[Path, ...] = field(default_factory=tuple)

    def fingerprint(self) -> str:
        """The weights' fingerprint (see :func:`portllm_edge.models.fingerprint.fingerprint_weights`)."""
        from portllm_edge.models.fingerprint import fingerprint_weights

        return fingerprint_weights(list(self.weight_files))

    def config(self) -> dict[str, object]:
        """The parsed ``config.json``."""
        import json

        try:
            data = json.loads((self.path / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BaseModelError(
                f"{self.path / 'config.json'}: cannot read ({exc}).",
                hint="the base folder must hold a valid Hugging Face config.json",
            ) from exc
        if not isinstance(data, dict):
            raise BaseModelError(
                f"{self.path / 'config.json'}: not a JSON object.",
                hint="the base folder must hold a valid Hugging Face config.json",
            )
        return data


def weight_files_of(folder: Path) -> tuple[Path, ...]:
    """Return the safetensors shards of a model folder.

    Raises:
        BaseModelError: no safetensors shard, or only pickled weights (with a conversion hint).
    """
    try:
        from portllm_edge.tensorio import list_weight_files
    except ImportError:  # pragma: no cover
        list_weight_files = None  # type: ignore[assignment]
    if list_weight_files is not None:
        try:
            return tuple(sorted(Path(p) for p in list_weight_files(folder)))
        except BaseModelError:
            raise
        except Exception as exc:  # the tensorio error types are PortllmError subclasses
            from portllm_edge.errors import PortllmError

            if isinstance(exc, PortllmError):
                raise BaseModelError(exc.message, hint=exc.hint) from exc
            raise
    shards = sorted(folder.glob("*.safetensors"))
    if shards:
        return tuple(shards)
    pickled = [p.name for p in folder.iterdir() if p.suffix in _PICKLE_SUFFIXES]
    if pickled:
        raise BaseModelError(
            f"{folder}: only pickled weights ({', '.join(sorted(pickled))}); portllm-edge loads safetensors only.",
            hint="convert them with `portllm-edge models convert-pickle DIR` or save_pretrained(safe_serialization=True)",
        )
    raise BaseModelError(
        f"{folder}: no *.safetensors weight files.",
        hint="point --base at a Hugging Face model folder with safetensors weights",
    )


def _folder(ref: str, path: Path, kind: BaseKind, model_id: str) -> ResolvedBase:
    if not (path / "config.json").is_file():
        raise BaseModelError(
            f"{path}: no config.json, so this is not a Hugging Face model folder.",
            hint="pass the folder that holds config.json and the *.safetensors files",
        )
    return ResolvedBase(ref=ref, kind=kind, path=path, model_id=model_id, weight_files=weight_files_of(path))


def _hf_cache_lookup(model_id: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover
        return None
    try:
        return Path(snapshot_download(model_id, local_files_only=True))
    except Exception:  # not in the cache (LocalEntryNotFoundError and friends)
        return None


def _hub_download(model_id: str) -> Path:  # pragma: no cover - needs the network; no test uses it
    from huggingface_hub import snapshot_download

    return Path(
        snapshot_download(
            model_id,
            allow_patterns=["*.json", "*.safetensors", "tokenizer*", "*.model", "*.jinja", "*.txt"],
        )
    )


def resolve_base(ref: str | os.PathLike[str], *, online: bool = False) -> ResolvedBase:
    """Resolve a base reference to a local model folder.

    Args:
        ref: a folder, a ``.gguf`` file, a store name, or a hub id (``org/name``).
        online: allow a hub download when the id is in neither store nor cache
            (also requires ``HF_HUB_OFFLINE`` to be unset).

    Returns:
        A :class:`ResolvedBase` whose ``path`` holds ``config.json`` and safetensors.

    Raises:
        BaseModelError: nothing matched, the folder is incomplete, or only pickled weights exist.
    """
    text = os.fspath(ref)
    path = Path(text).expanduser()
    if path.is_dir():
        return _folder(text, path.resolve(), "folder", path.resolve().name)
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            from portllm_edge.models.gguf import import_gguf

            folder = import_gguf(path, force=False, reuse=True)
            return _folder(text, folder, "gguf", folder.name)
        raise BaseModelError(
            f"{path}: a file, not a model folder.",
            hint="pass a Hugging Face model folder, a .gguf file, a local store name or a hub id",
        )
    store = paths.models_dir() / text
    if "/" not in text and os.sep not in text and store.is_dir():
        return _folder(text, store, "store", text)
    if _HUB_ID.match(text):
        cached = _hf_cache_lookup(text)
        if cached is not None:
            return _folder(text, cached, "hf_cache", text)
        hub_offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}
        if online and not hub_offline:
            return _folder(text, _hub_download(text), "hub", text)
        raise BaseModelError(
            f"base {text!r}: not a local folder, not in the model store and not in the Hugging Face cache.",
            hint="download it while online (or pass --online with HF_HUB_OFFLINE unset), or pass a local folder",
        )
    known = sorted(p.name for p in paths.models_dir().glob("*") if p.is_dir() and not p.name.startswith("."))
    hint = "pass a model folder, a .gguf file or a store name"
    if known:
        import difflib

        close = difflib.get_close_matches(text, known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"store models: {', '.join(known)}"
    raise BaseModelError(f"base {text!r}: no such folder, file or store model.", hint=hint)


def store_models() -> list[Path]:
    """The model store's folders (``<home>/models/<name>`` with a ``config.json``), sorted by name."""
    root = paths.models_dir()
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if not p.name.startswith(".") and (p / "config.json").is_file())


def find_store_base(
    name: str | None = None, fingerprint: str | None = None
) -> tuple[ResolvedBase, str] | None:
    """Look a base up in the model store: by weight fingerprint first, then by name.

    Args:
        name: a base's recorded id (``base_model_name_or_path``, a lineage ``base_id``); a
            path's last part is tried as a store name too.
        fingerprint: a recorded ``w1:…`` weight fingerprint (read from safetensors headers only).

    Returns:
        ``(the store model, "fingerprint" | "name")``, or None when neither matches.
    """
    if fingerprint:
        from portllm_edge.models.fingerprint import fingerprint_weights

        for folder in store_models():
            try:
                files = weight_files_of(folder)
            except BaseModelError:
                continue
            if fingerprint_weights(list(files)) == fingerprint:
                return ResolvedBase(folder.name, "store", folder, folder.name, files), "fingerprint"
    if name:
        for candidate in dict.fromkeys((name, Path(name).name)):
            folder = paths.models_dir() / candidate
            if candidate and "/" not in candidate and (folder / "config.json").is_file():
                try:
                    return _folder(candidate, folder, "store", candidate), "name"
                except BaseModelError:
                    return None
    return None
