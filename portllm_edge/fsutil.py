"""Crash-safe file writes: write to a temporary sibling, fsync, then rename.

Why: a laptop that sleeps or a process killed mid-write must never leave a
half-written file or folder where a complete one is expected. ``os.replace`` is
atomic on POSIX and Windows when source and destination share a file system, so
every temporary lives next to its destination, under a name that starts with
``.tmp-`` (readers skip such names).

This module must not import torch.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TMP_PREFIX = ".tmp-"


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _as_created_by_open(path: Path) -> None:
    """Give a ``mkstemp`` file (0600) the mode ``open()`` would: ``0o666 & ~umask`` (0644 usually).

    Reports, manifests and exports are files people share and serve; only a temporary is private.
    """
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def _destination(dest: str | os.PathLike[str], overwrite: bool) -> Path:
    """``dest`` as a Path, its parent created; refuses an existing ``dest`` unless ``overwrite``.

    Raises:
        FileExistsError: ``dest`` exists and ``overwrite`` is false.
    """
    final = Path(dest)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists() and not overwrite:
        raise FileExistsError(str(final))
    return final


@contextlib.contextmanager
def atomic_file(dest: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling path to write a large file into; rename it to ``dest`` on success.

    The temporary file is fsynced before the rename and removed on an exception
    (``dest`` untouched).

    Raises:
        FileExistsError: ``dest`` exists and ``overwrite`` is false.
    """
    final = _destination(dest, overwrite)
    fd, name = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=final.suffix, dir=final.parent)
    os.close(fd)
    tmp = Path(name)
    _as_created_by_open(tmp)  # mkstemp makes 0600; a served file must be readable like any other
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(final.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, replacing it (:func:`atomic_file`: temp sibling, fsync, rename).

    The file gets the mode a plain ``open()`` gives (``0o666 & ~umask``), not ``mkstemp``'s 0600.
    """
    with atomic_file(path, overwrite=True) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


@contextlib.contextmanager
def atomic_dir(dest: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Build a folder in a temporary sibling and rename it to ``dest`` on success.

    Yields the temporary folder to fill. On an exception the temporary folder is
    removed and ``dest`` is untouched. With ``overwrite=True`` an existing
    ``dest`` is replaced only after the new folder is complete (the old one is
    renamed aside first, then deleted).

    Raises:
        FileExistsError: ``dest`` exists and ``overwrite`` is false.
    """
    final = _destination(dest, overwrite)
    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=final.parent))
    try:
        yield tmp
        for child in tmp.rglob("*"):
            if child.is_file():
                with open(child, "rb") as fh:
                    os.fsync(fh.fileno())
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=TMP_PREFIX + "old-", dir=final.parent))
            old.rmdir()
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def empty_path_reason(dest: str | os.PathLike[str]) -> str | None:
    """Why ``dest`` is refused for being empty (or blank), or None when it is not.

    ``Path("")`` is ``Path(".")``: an empty destination would silently write into, or with
    ``--overwrite``/``--force`` replace, the current folder. The CLI applies this to every
    destination option as it parses it (:func:`portllm_edge.cli._options.dest_path`).
    """
    if os.fspath(dest).strip():
        return None
    return "the path is empty, which would mean the current folder; pass a path (or pass . for the current folder)"


def unwritable_reason(dest: str | os.PathLike[str], *, model_store_entry: bool = False) -> str | None:
    """Why ``dest`` (a file or folder to create or replace) can't be written, or None when it can.

    An empty path is refused (:func:`empty_path_reason`). A destination inside the patch store or
    the model store, or one that holds either, is refused: only the stores write there, so an
    export, merge, update or report can't replace a stored patch or base model; so is the run
    history database (or one of its SQLite side files, ``runs.sqlite-wal`` ...). Then walks up
    to the nearest existing ancestor: it must be a folder in which a temporary entry can be
    created (the probe is removed at once). Catches a parent that is a file, a read-only or
    virtual file system and a folder without write permission, before any work is done.

    Args:
        dest: The file or folder to write.
        model_store_entry: ``dest`` is a model written into the model store on the store's behalf
            (the demo's updated base, ``models/NAME``): allowed there, and only there.
    """
    from portllm_edge import paths

    empty = empty_path_reason(dest)
    if empty is not None:
        return empty
    final = Path(dest).absolute()
    resolved = final.resolve()
    stores = (
        (paths.patches_dir().resolve(), "patch store", "`patch import`, `train` and `port`", "stored patches"),
        (paths.models_dir().resolve(), "model store", "`models import`, `models import-gguf` and the demo", "stored base models"),
    )  # fmt: skip
    for store, what, writers, lost in stores:
        if what == "model store" and model_store_entry:
            if resolved.parent != store or resolved.name.startswith("."):
                return f"it is not an entry of the model store {store} (expected {store}/NAME)"
            continue
        if resolved == store or store in resolved.parents:
            return f"it is inside the {what} {store} (written only by {writers})"
        if resolved in store.parents:
            return f"it holds the {what} {store}; replacing it would delete the {lost}"
    history = paths.runs_db().resolve()
    if resolved.parent == history.parent and resolved.name in {
        history.name + side for side in ("", "-wal", "-shm", "-journal")
    }:
        return f"it is the run history {history} (written only by the commands that record runs)"
    probe = final.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is a file, not a folder"
    try:
        os.rmdir(tempfile.mkdtemp(prefix=TMP_PREFIX + "probe-", dir=probe))
    except OSError as exc:
        return f"can't write in {probe} ({exc.strerror or exc})"
    return None


def is_temporary(path: str | os.PathLike[str]) -> bool:
    """True for the leftovers of an interrupted atomic write (names starting with ``.tmp-``)."""
    return Path(path).name.startswith(TMP_PREFIX)
