"""The local, offline patch store: atomic, locked, checksummed.

Why this module exists: users keep patches for months and move them between
base versions; a store that half-writes an entry when a laptop sleeps, or lets
two commands interleave, would lose them. Layout::

    <root>/.lock                      filelock; held by every writer
    <root>/<name>/manifest.json       PatchManifest (checksums of the files below)
    <root>/<name>/adapter/            a plain peft adapter folder
    <root>/.tmp-*                     leftovers of an interrupted write (never entries)

Guarantees:

* **Atomic.** An entry is built in a ``.tmp-`` sibling
  (:func:`portllm_edge.fsutil.atomic_dir`) and renamed into place, so after a
  crash (even SIGKILL) each entry is either complete or absent. A replaced
  entry (``force``) is moved aside to ``.tmp-old-*`` first; if the process dies
  between the two renames, the next write restores it (:meth:`PatchStore.recover`).
* **Locked.** Every write holds ``<root>/.lock`` (``filelock``, an OS lock that
  dies with its process, so it never goes stale). A second writer waits up to
  ``lock_timeout`` seconds, then fails with :class:`StoreError`; it never
  interleaves. Readers need no lock: they only ever see renamed, complete entries.
* **Checksummed.** The manifest records the sha256 of each adapter file;
  :meth:`PatchStore.get` verifies them on every load.
* **Nothing overwritten without** ``force``. Names cannot escape the store.

It must not import torch or UI code.
"""

from __future__ import annotations

import builtins
import contextlib
import difflib
import hashlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from portllm_edge import paths
from portllm_edge.errors import PatchError, PortllmError, StoreError
from portllm_edge.fsutil import TMP_PREFIX, atomic_dir, is_temporary
from portllm_edge.patches.adapter import CONFIG_NAME, WEIGHTS_NAME, AdapterSummary, validate_adapter_dir
from portllm_edge.patches.manifest import (
    MANIFEST_NAME,
    AdapterInfo,
    LineageEntry,
    PatchManifest,
    SourceBase,
    read_manifest,
    utc_now,
    write_manifest,
)
from portllm_edge.tensorio import PICKLE_SUFFIXES

NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}"
_NAME_RE = re.compile(NAME_PATTERN)
ADAPTER_SUBDIR = "adapter"
LOCK_NAME = ".lock"
OLD_PREFIX = TMP_PREFIX + "old-"
DEL_PREFIX = TMP_PREFIX + "del-"
ENV_LOCK_TIMEOUT = "PORTLLM_EDGE_LOCK_TIMEOUT"
ENV_TEST_WRITE_DELAY = "PORTLLM_EDGE_TEST_WRITE_DELAY"
"""Test hook: seconds to sleep between the files of a store write (crash-safety tests widen the window)."""
DEFAULT_LOCK_TIMEOUT = 30.0
_CHUNK = 1 << 20


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid store name, else raise.

    A name is 1-128 characters from ``[A-Za-z0-9._@+-]``, starts with a letter
    or digit, and contains no ``..``; so it can't be a path, hidden, or escape
    the store.

    Raises:
        StoreError: naming the offending name and the rule.
    """
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or ".." in name:
        raise StoreError(
            f"invalid patch name {name!r}: names are 1-128 characters of letters, digits and . _ @ + -, "
            "start with a letter or digit, and contain no '..' or path separators",
            hint="choose a plain name such as `sst2-smollm2-v1` (pass it with --name)",
        )
    return name


def default_name(src: Path) -> str:
    """A store name derived from a source folder's name (invalid characters become ``-``)."""
    cleaned = re.sub(r"[^A-Za-z0-9._@+-]", "-", src.name).lstrip("._@+-").replace("..", ".")[:128]
    return cleaned


def sha256_file(path: str | os.PathLike[str]) -> str:
    """sha256 hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _copy_hashing(src: Path, dst: Path) -> str:
    h = hashlib.sha256()
    with open(src, "rb") as fin, open(dst, "xb") as fout:
        for block in iter(lambda: fin.read(_CHUNK), b""):
            h.update(block)
            fout.write(block)
    return h.hexdigest()


def _test_write_delay() -> None:
    raw = os.environ.get(ENV_TEST_WRITE_DELAY)
    if raw:
        with contextlib.suppress(ValueError):
            time.sleep(max(0.0, min(float(raw), 5.0)))


ARCHIVE_MAX_MEMBERS = 256
"""Most members a patch archive may hold."""
ARCHIVE_MAX_BYTES = 64 * 1024**3
"""Most uncompressed bytes a patch archive may hold (64 GiB), against tar bombs."""
_ARCHIVE_MODES = {".tar": "", ".tar.gz": "gz", ".tgz": "gz"}
_UNSUPPORTED_ARCHIVES = (".zip", ".7z", ".rar", ".gz", ".bz2", ".xz", ".zst", ".tbz2", ".txz")
"""Archive-looking names ``export`` refuses rather than silently creating a folder so named."""


def _archive_mode(path: Path, rw: str) -> str:
    name = path.name.lower()
    for suffix, comp in _ARCHIVE_MODES.items():
        if name.endswith(suffix):
            if rw == "r":
                return "r:*"  # detect the compression from the bytes, not the name
            return f"w:{comp}" if comp else "w"
    raise StoreError(
        f"{path}: unsupported archive type", hint="use a .tar, .tar.gz or .tgz file name, or a folder"
    )


def is_archive_path(path: str | os.PathLike[str]) -> bool:
    """True when ``path``'s name ends with a supported archive suffix (``.tar``, ``.tar.gz``, ``.tgz``)."""
    name = Path(path).name.lower()
    return any(name.endswith(s) for s in _ARCHIVE_MODES)


def _safe_members(archive: Path, tf: Any, hint: str) -> list[tuple[Any, str]]:
    """Check every member before extracting anything; return (member, file name) pairs."""
    out: list[tuple[Any, str]] = []
    tops: set[str] = set()
    total = 0
    for count, m in enumerate(tf, start=1):
        if count > ARCHIVE_MAX_MEMBERS:
            raise StoreError(f"{archive}: holds more than {ARCHIVE_MAX_MEMBERS} members", hint=hint)
        raw = m.name
        parts = [p for p in raw.replace("\\", "/").split("/") if p not in ("", ".")]
        if raw.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", raw) or ".." in parts:
            raise StoreError(
                f"{archive}: member {raw!r} has an absolute path or '..'; refusing an archive that could "
                "write outside its folder",
                hint=hint,
            )
        if m.isdir():
            if len(parts) > 1:
                raise StoreError(f"{archive}: member {raw!r} is a nested folder", hint=hint)
            tops.update(parts)
            continue
        if not m.isfile():
            kind = "a link" if (m.issym() or m.islnk()) else "not a regular file"
            raise StoreError(
                f"{archive}: member {raw!r} is {kind}; patch archives hold regular files only", hint=hint
            )
        if len(parts) == 2:
            tops.add(parts[0])
        elif len(parts) != 1:
            raise StoreError(f"{archive}: member {raw!r} is nested too deep", hint=hint)
        total += m.size
        if total > ARCHIVE_MAX_BYTES:
            raise StoreError(f"{archive}: unpacks to more than {ARCHIVE_MAX_BYTES} bytes", hint=hint)
        rel = parts[-1]
        if rel.startswith(".") or any(r == rel for _, r in out):
            raise StoreError(f"{archive}: member {raw!r} is hidden or duplicated", hint=hint)
        out.append((m, rel))
    if len(tops) > 1:
        raise StoreError(f"{archive}: holds several top-level folders ({', '.join(sorted(tops))})", hint=hint)
    if not out:
        raise StoreError(f"{archive}: holds no files", hint=hint)
    return out


def _write_error(where: Path, exc: OSError) -> StoreError:
    what = exc.strerror or str(exc)
    name = f" ({exc.filename})" if exc.filename else ""
    return StoreError(
        f"cannot write to {where}: {what}{name}",
        hint="free disk space or fix the folder's permissions, then retry; "
        "the interrupted write left no partial entry",
    )


def _adapter_files(src: Path) -> list[Path]:
    """The files of an adapter folder that a store entry keeps (no manifest, pickles, hidden or temp files)."""
    out = []
    for f in sorted(src.iterdir()):
        if f.name == MANIFEST_NAME or f.name.startswith(".") or f.suffix in PICKLE_SUFFIXES:
            continue
        if f.is_file():
            out.append(f)
    return out


@dataclass(frozen=True)
class StoredPatch:
    """A patch in the store, checksums verified.

    Attributes:
        name: Store name.
        path: The entry folder ``<root>/<name>``.
        adapter_dir: The peft adapter folder inside it (pass to ``PeftModel.from_pretrained``).
        manifest: Its manifest.
    """

    name: str
    path: Path
    adapter_dir: Path
    manifest: PatchManifest


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of verifying one store entry, or one leftover of an interrupted write.

    Attributes:
        name: Entry name (for a leftover: the folder name, e.g. ``.tmp-ab12``).
        path: The folder checked.
        kind: ``"entry"`` or ``"leftover"`` (a ``.tmp-*`` folder or file; never an entry).
        ok: ``True`` when the entry is complete and every checksum matches. Leftovers
            are harmless (``ok=True``); the next write removes or restores them.
        problems: One line per problem found (empty when ``ok`` for an entry).
    """

    name: str
    path: Path
    kind: Literal["entry", "leftover"]
    ok: bool
    problems: tuple[str, ...] = ()


class PatchStore:
    """The patch store under ``root`` (default :func:`portllm_edge.paths.patches_dir`).

    Args:
        root: Store folder; created on the first write.
        lock_timeout: Seconds a writer waits for another writer's lock before
            failing (default ``$PORTLLM_EDGE_LOCK_TIMEOUT`` or 30 s).
    """

    def __init__(self, root: Path | None = None, *, lock_timeout: float | None = None) -> None:
        self.root = Path(root) if root is not None else paths.patches_dir()
        if lock_timeout is None:
            try:
                lock_timeout = float(os.environ.get(ENV_LOCK_TIMEOUT, DEFAULT_LOCK_TIMEOUT))
            except ValueError:
                lock_timeout = DEFAULT_LOCK_TIMEOUT
        self.lock_timeout = lock_timeout

    # ------------------------------------------------------------------ helpers

    @contextlib.contextmanager
    def _locked(self) -> Iterator[list[str]]:
        """Hold the store lock, recover interrupted writes, and turn OS write errors into StoreError.

        Yields:
            The recovery actions taken (see :meth:`recover`).
        """
        from filelock import FileLock, Timeout

        try:
            self.root.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(self.root / LOCK_NAME))
            lock.acquire(timeout=self.lock_timeout)
        except Timeout:
            raise StoreError(
                f"the patch store at {self.root} is busy: another portllm-edge command is writing to it "
                f"(waited {self.lock_timeout:g} s for {self.root / LOCK_NAME})",
                hint="wait for the other command to finish and retry, or raise "
                f"${ENV_LOCK_TIMEOUT}; the lock is released automatically when that process exits",
            ) from None
        except OSError as exc:
            raise _write_error(self.root, exc) from None
        try:
            yield self._recover_locked()
        except OSError as exc:
            raise _write_error(self.root, exc) from None
        finally:
            lock.release()

    def _entry_path(self, name: str) -> Path:
        return self.root / validate_name(name)

    def names(self) -> list[str]:
        """Names of the entry folders in the store, sorted (whether or not they verify)."""
        if not self.root.is_dir():
            return []
        return sorted(
            d.name
            for d in self.root.iterdir()
            if d.is_dir() and _NAME_RE.fullmatch(d.name) and ".." not in d.name
        )

    def _unknown(self, name: str) -> StoreError:
        names = self.names()
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        if close:
            hint = (
                "did you mean "
                + " or ".join(f"'{c}'" for c in close)
                + "? (`portllm-edge patch list` shows all)"
            )
        elif names:
            hint = "`portllm-edge patch list` shows the stored patches"
        else:
            hint = "the store is empty; add a patch with `portllm-edge patch import DIR`"
        return StoreError(f"no patch named '{name}' in the store at {self.root}", hint=hint)

    def _require(self, name: str) -> Path:
        path = self._entry_path(name)
        if not path.is_dir():
            raise self._unknown(name)
        return path

    @staticmethod
    def _symlink_problem(path: Path) -> str | None:
        if path.is_symlink():
            return f"{path}: is a symbolic link; store entries must be real folders (the store never creates links)"
        return None

    def _check_entry(self, name: str, path: Path) -> tuple[PatchManifest | None, list[str]]:
        """Load an entry's manifest and compare checksums; return the manifest (if readable) and problems."""
        problems: list[str] = []
        link = self._symlink_problem(path)
        if link is not None:
            return None, [link]
        try:
            manifest = read_manifest(path / MANIFEST_NAME)
        except PatchError as exc:
            return None, [exc.message]
        if manifest.name != name:
            problems.append(f"{path / MANIFEST_NAME}: names the patch '{manifest.name}', not '{name}'")
        adapter = path / ADAPTER_SUBDIR
        link = self._symlink_problem(adapter)
        if link is not None:
            return manifest, [link]
        for rel, digest in sorted(manifest.files.items()):
            rp = Path(rel)
            if rp.is_absolute() or ".." in rp.parts or len(rp.parts) != 1:
                problems.append(f"{path / MANIFEST_NAME}: file entry {rel!r} is not a plain file name")
                continue
            f = adapter / rp
            if not f.is_file():
                problems.append(f"{f}: missing")
            elif sha256_file(f) != digest:
                problems.append(f"{f}: sha256 does not match the manifest (the file changed or is corrupt)")
        for required in (CONFIG_NAME, WEIGHTS_NAME):
            if required not in manifest.files:
                problems.append(f"{path / MANIFEST_NAME}: lists no checksum for {required}")
        if adapter.is_dir():
            for f in adapter.iterdir():
                if f.name not in manifest.files and not is_temporary(f):
                    problems.append(f"{f}: not listed in the manifest")
        return manifest, problems

    def _load(self, name: str) -> StoredPatch:
        path = self._require(name)
        manifest, problems = self._check_entry(name, path)
        if problems or manifest is None:
            raise StoreError(
                f"stored patch '{name}' is damaged: {problems[0]}"
                + (f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""),
                hint=f"re-import it with `portllm-edge patch import SRC --name {name} --force`, "
                f"or delete it with `portllm-edge patch remove {name}`",
            )
        return StoredPatch(name=name, path=path, adapter_dir=path / ADAPTER_SUBDIR, manifest=manifest)

    def _leftovers(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        found = [p for p in self.root.iterdir() if is_temporary(p)]
        for name in self.names():
            entry = self.root / name
            if entry.is_symlink():
                continue  # never clean up inside a folder outside the store
            found += [p for p in entry.iterdir() if is_temporary(p)]
            adapter = entry / ADAPTER_SUBDIR
            if adapter.is_dir() and not adapter.is_symlink():
                found += [p for p in adapter.iterdir() if is_temporary(p)]
        return sorted(found)

    def _restorable(self, leftover: Path) -> str | None:
        """The entry name a ``.tmp-old-*`` folder can be restored to, if it is a complete entry."""
        if not leftover.name.startswith(OLD_PREFIX) or not leftover.is_dir():
            return None
        try:
            manifest = read_manifest(leftover / MANIFEST_NAME)
            name = validate_name(manifest.name)
        except PortllmError:
            return None
        if (self.root / name).exists():
            return None
        _, problems = self._check_entry(name, leftover)
        return None if problems else name

    def _recover_locked(self) -> list[str]:
        actions: list[str] = []
        for left in self._leftovers():
            target = self._restorable(left)
            if target is not None:
                os.replace(left, self.root / target)
                actions.append(f"restored '{target}' from {left.name} (an interrupted --force replace)")
            elif left.is_dir() and not left.is_symlink():
                shutil.rmtree(left, ignore_errors=True)
                actions.append(f"removed {left}")
            else:
                with contextlib.suppress(FileNotFoundError):
                    left.unlink()
                actions.append(f"removed {left}")
        return actions

    # --------------------------------------------------------------- public API

    def recover(self) -> list[str]:
        """Clean up after interrupted writes (every write does this first, under the lock).

        A ``.tmp-old-*`` folder that holds a complete, checksum-valid copy of an
        entry that is now absent is renamed back (a ``force`` replace died between
        its two renames); every other ``.tmp-*`` leftover is deleted.

        Returns:
            One line per action taken.

        Raises:
            StoreError: the lock could not be taken in time.
        """
        if not self.root.is_dir():
            return []
        with self._locked() as actions:
            return actions

    def import_dir(
        self,
        src: Path,
        *,
        name: str | None = None,
        task: str | None = None,
        source_base_id: str | None = None,
        source_base_fingerprint: str | None = None,
        model_type: str | None = None,
        lineage: list[LineageEntry] | None = None,
        force: bool = False,
    ) -> PatchManifest:
        """Validate a LoRA adapter folder and copy it into the store atomically.

        ``src`` may be a plain peft adapter folder or a patch exported by
        :meth:`export` (with ``manifest.json``); an exported manifest's task,
        source base and lineage are kept unless overridden here. Pickled files,
        hidden files and sub-folders are not copied.

        Args:
            src: The adapter folder.
            name: Store name (default: derived from ``src``'s folder name).
            task: Task label (``"sst2"``, ...).
            source_base_id: The base the adapter was learned on (default: the
                config's ``base_model_name_or_path``).
            source_base_fingerprint: That base's weight fingerprint. When omitted
                and ``source_base_id`` is given and is a local model folder, it is
                computed (``portllm_edge.models.fingerprint``).
            model_type: The base's ``model_type`` (default: read from the base
                folder's ``config.json`` when it is local).
            lineage: The full lineage to record. Default: the exported lineage
                (if any) plus one ``"import"`` entry.
            force: Replace an existing entry of the same name.

        Returns:
            The stored entry's manifest.

        Raises:
            PatchError: the folder is not a valid LoRA adapter (see
                :func:`~portllm_edge.patches.adapter.validate_adapter_dir`).
            StoreError: invalid name, the name exists and ``force`` is false, or
                the store is locked by another writer for too long.
        """
        src = Path(src)
        summary = validate_adapter_dir(src)
        previous = None
        if (src / MANIFEST_NAME).is_file():
            try:
                previous = read_manifest(src / MANIFEST_NAME)
            except PatchError as exc:
                raise PatchError(
                    exc.message,
                    hint=f"fix it, or delete {src / MANIFEST_NAME} to import the folder as a plain adapter",
                ) from None
        if name is None:
            name = previous.name if previous is not None else default_name(src.resolve())
            if not name:
                raise StoreError(
                    f"cannot derive a patch name from the folder name '{src.name}'",
                    hint="pass a name with --name",
                )
        validate_name(name)
        source = self._source_base(summary, previous, source_base_id, source_base_fingerprint, model_type)
        if lineage is None:
            lineage = [
                *(previous.lineage if previous is not None else []),
                LineageEntry(
                    kind="import",
                    base_id=source.id,
                    base_fingerprint=source.fingerprint,
                    note=f"imported from {src.resolve()}",
                ),
            ]
        files = _adapter_files(src)
        dest = self.root / name
        with self._locked():
            if dest.exists() and not force:
                raise StoreError(
                    f"a patch named '{name}' already exists in the store at {self.root}",
                    hint="pass --force to replace it, or choose another name with --name",
                )
            with atomic_dir(dest, overwrite=force) as tmp:
                adapter = tmp / ADAPTER_SUBDIR
                adapter.mkdir()
                digests: dict[str, str] = {}
                for f in files:
                    digests[f.name] = _copy_hashing(f, adapter / f.name)
                    _test_write_delay()
                manifest = PatchManifest(
                    name=name,
                    task=task if task is not None else (previous.task if previous else None),
                    created_at=utc_now(),
                    source_base=source,
                    adapter=AdapterInfo(
                        peft_type=summary.peft_type,
                        r=summary.r,
                        lora_alpha=summary.lora_alpha,
                        target_modules=list(summary.target_modules)
                        if not isinstance(summary.target_modules, str)
                        else summary.target_modules,
                        modules_to_save=list(summary.modules_to_save) if summary.modules_to_save else None,
                        peft_version=summary.peft_version,
                        use_dora=summary.use_dora,
                    ),
                    files=digests,
                    lineage=list(lineage),
                )
                write_manifest(tmp / MANIFEST_NAME, manifest)
                _test_write_delay()
        return manifest

    @staticmethod
    def _source_base(
        summary: AdapterSummary,
        previous: PatchManifest | None,
        base_id: str | None,
        fingerprint: str | None,
        model_type: str | None,
    ) -> SourceBase:
        prev = previous.source_base if previous is not None else SourceBase()
        explicit = base_id is not None
        base_id = base_id or prev.id or summary.base_model_name_or_path
        if not explicit:
            fingerprint = fingerprint or prev.fingerprint
            model_type = model_type or prev.model_type
        local = Path(base_id).expanduser() if base_id else None
        if local is not None and local.is_dir() and (local / "config.json").is_file():
            if model_type is None:
                with contextlib.suppress(OSError, ValueError, AttributeError):
                    import json

                    mt = json.loads((local / "config.json").read_text(encoding="utf-8")).get("model_type")
                    model_type = mt if isinstance(mt, str) else None
            if fingerprint is None and explicit:
                # Only for a base the user named: the path recorded in adapter_config.json may
                # since hold an updated model, whose fingerprint would be wrong here.
                with contextlib.suppress(PortllmError, ImportError, OSError):
                    from portllm_edge.models.fingerprint import fingerprint_weights
                    from portllm_edge.tensorio import list_weight_files

                    fingerprint = fingerprint_weights(list_weight_files(local))
        return SourceBase(id=base_id, fingerprint=fingerprint, model_type=model_type)

    def path_of(self, name: str) -> Path:
        """The entry folder of an existing patch (nothing verified).

        Raises:
            StoreError: invalid or unknown name (with "did you mean").
        """
        return self._require(name)

    def list(self) -> list[PatchManifest]:
        """Manifests of the readable entries, sorted by name.

        Entries whose manifest is unreadable or names another patch are left out;
        checksums are not verified here (see :meth:`verify`).
        """
        out = []
        for name in self.names():
            with contextlib.suppress(PatchError):
                manifest = read_manifest(self.root / name / MANIFEST_NAME)
                if manifest.name == name:
                    out.append(manifest)
        return out

    def get(self, name: str) -> StoredPatch:
        """Load a stored patch, verifying every file's sha256 against the manifest.

        Raises:
            StoreError: invalid or unknown name (with "did you mean"), or the
                entry is damaged (missing file, checksum mismatch, bad manifest).
        """
        return self._load(name)

    def verify(self, name: str | None = None) -> builtins.list[VerifyResult]:
        """Check one entry, or (``None``) every entry plus leftovers of interrupted writes.

        Read-only: nothing is repaired here (see :meth:`recover`).

        Returns:
            One :class:`VerifyResult` per entry (sorted by name), then one per
            leftover ``.tmp-*`` path (only when ``name`` is ``None``).

        Raises:
            StoreError: ``name`` is invalid or unknown.
        """
        names = [name] if name is not None else self.names()
        results = []
        for n in names:
            path = self._require(n)
            _, problems = self._check_entry(n, path)
            results.append(VerifyResult(n, path, "entry", not problems, tuple(problems)))
        if name is None:
            for left in self._leftovers():
                target = self._restorable(left)
                note = (
                    f"holds a complete copy of '{target}' from an interrupted --force replace; "
                    "the next store write restores it"
                    if target
                    else "leftover of an interrupted write; the next store write removes it"
                )
                results.append(VerifyResult(left.name, left, "leftover", True, (note,)))
        return results

    def export(self, name: str, dest: Path, *, force: bool = False) -> Path:
        """Copy a stored patch (adapter files + ``manifest.json``) to a plain folder, atomically.

        The result is a peft adapter folder that :meth:`import_dir` can re-import
        with its lineage. Checksums are verified before copying.

        Args:
            name: Store name.
            dest: Destination folder (must not exist, unless ``force``).
            force: Replace ``dest`` if it is empty or an adapter/patch folder.

        Returns:
            ``dest``.

        Raises:
            StoreError: unknown/damaged patch; ``dest`` exists without ``force``,
                is a file, is inside the store, or (with ``force``) is a non-empty
                folder that is not an adapter.
        """
        patch = self._load(name)
        dest = Path(dest).expanduser()
        root = self.root.resolve()
        resolved = dest.resolve()
        if resolved == root or root in resolved.parents:
            raise StoreError(
                f"cannot export into the store itself ({dest})", hint="choose a folder outside the store"
            )
        if dest.name.lower().endswith(_UNSUPPORTED_ARCHIVES):
            raise StoreError(
                f"{dest}: unsupported archive type (this name would become a folder)",
                hint="use a .tar, .tar.gz or .tgz file name, or a folder name",
            )
        if dest.exists():
            if not dest.is_dir():
                raise StoreError(f"{dest}: exists and is not a folder", hint="choose another destination")
            if not force:
                raise StoreError(
                    f"{dest}: already exists",
                    hint="pass --force to replace it, or choose another destination",
                )
            if any(dest.iterdir()) and not ((dest / CONFIG_NAME).exists() or (dest / MANIFEST_NAME).exists()):
                raise StoreError(
                    f"{dest}: is a non-empty folder that is not an adapter; refusing to replace it even with --force",
                    hint="choose a new or empty destination folder",
                )
        try:
            self._export_files(patch, dest, force)
        except OSError as exc:
            raise _write_error(dest, exc) from None
        return dest

    @staticmethod
    def _export_files(patch: StoredPatch, dest: Path, force: bool) -> None:
        with atomic_dir(dest, overwrite=force) as tmp:
            for rel in sorted(patch.manifest.files):
                digest = _copy_hashing(patch.adapter_dir / rel, tmp / rel)
                if digest != patch.manifest.files[rel]:
                    raise StoreError(
                        f"{patch.adapter_dir / rel}: changed while exporting",
                        hint="retry the export; if it persists, run `portllm-edge patch verify`",
                    )
                _test_write_delay()
            write_manifest(tmp / MANIFEST_NAME, patch.manifest)

    def export_archive(self, name: str, dest: Path, *, force: bool = False) -> Path:
        """Write a stored patch as a tar archive (``.tar``, ``.tar.gz`` or ``.tgz``), atomically.

        Members are ``<name>/<file>`` for each adapter file plus
        ``<name>/manifest.json``: regular files only, owner 0, mode 0644, the
        manifest's ``created_at`` as mtime (so the same patch gives the same bytes).

        Raises:
            StoreError: unknown/damaged patch, an unsupported suffix, or ``dest``
                exists without ``force`` (or is a folder).
        """
        import io
        import json
        import tarfile

        patch = self._load(name)
        dest = Path(dest).expanduser()
        mode = _archive_mode(dest, "w")
        if dest.exists() and (dest.is_dir() or not force):
            raise StoreError(
                f"{dest}: already exists" + (" and is a folder" if dest.is_dir() else ""),
                hint="choose another archive path"
                + ("" if dest.is_dir() else ", or pass --force to replace it"),
            )
        mtime = int(patch.manifest.created_at.timestamp())

        def add(tf: tarfile.TarFile, rel: str, data: bytes) -> None:
            info = tarfile.TarInfo(f"{name}/{rel}")
            info.size, info.mode, info.mtime, info.uid, info.gid = len(data), 0o644, mtime, 0, 0
            tf.addfile(info, io.BytesIO(data))

        tmp = dest.with_name(f"{TMP_PREFIX}{dest.name}")
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            with tarfile.open(tmp, mode) as tf:  # type: ignore[call-overload]
                for rel in sorted(patch.manifest.files):
                    data = (patch.adapter_dir / rel).read_bytes()
                    if hashlib.sha256(data).hexdigest() != patch.manifest.files[rel]:
                        raise StoreError(
                            f"{patch.adapter_dir / rel}: changed while exporting",
                            hint="retry; if it persists, run `portllm-edge patch verify`",
                        )
                    add(tf, rel, data)
                    _test_write_delay()
                add(
                    tf,
                    MANIFEST_NAME,
                    (json.dumps(patch.manifest.to_json_dict(), indent=2, sort_keys=True) + "\n").encode(),
                )
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, dest)
        except OSError as exc:
            raise _write_error(dest, exc) from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return dest

    def import_archive(self, archive: Path, *, name: str | None = None, **kwargs: Any) -> PatchManifest:
        """Import a patch from a tar archive made by :meth:`export_archive` (or by hand), safely.

        Every member must be a regular file directly at the archive root or
        inside one top-level folder; absolute paths, ``..``, deeper folders,
        links, devices, more than :data:`ARCHIVE_MAX_MEMBERS` members or more
        than :data:`ARCHIVE_MAX_BYTES` uncompressed bytes are refused before
        anything is written. Files are extracted by content into a private
        temporary folder (never ``extractall``), then imported with
        :meth:`import_dir` (same validation, same atomic write).

        Args:
            archive: ``.tar``, ``.tar.gz`` or ``.tgz`` file.
            name: Store name (default: the manifest's name, else the top folder's or file's stem).
            **kwargs: Passed to :meth:`import_dir` (``task``, ``force``, ...).

        Raises:
            StoreError: unsafe or unreadable archive, or any :meth:`import_dir` error.
            PatchError: the archived adapter is invalid (paths name the archive).
        """
        import tarfile

        archive = Path(archive)
        mode = _archive_mode(archive, "r")
        hint = "re-create the archive with `portllm-edge patch export NAME FILE.tar.gz`"
        try:
            with tarfile.open(archive, mode) as tf:  # type: ignore[call-overload]
                members = _safe_members(archive, tf, hint)
                with tempfile.TemporaryDirectory(prefix="portllm-edge-archive-") as tmpdir:
                    stage = Path(tmpdir) / "patch"
                    stage.mkdir()
                    for member, rel in members:
                        fh = tf.extractfile(member)
                        if fh is None:  # pragma: no cover - regular files always have data
                            continue
                        with fh, open(stage / rel, "xb") as out:
                            shutil.copyfileobj(fh, out, _CHUNK)
                    if name is None and not (stage / MANIFEST_NAME).is_file():
                        top = {m.name.split("/")[0] for m, _ in members if "/" in m.name}
                        name = default_name(Path(top.pop() if len(top) == 1 else archive.name.split(".")[0]))
                    try:
                        return self.import_dir(stage, name=name, **kwargs)
                    except PortllmError as exc:
                        exc.message = exc.message.replace(str(stage), str(archive))
                        exc.args = (exc.message,)
                        raise
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise StoreError(f"{archive}: not a readable tar archive ({exc})", hint=hint) from None

    def remove(self, name: str) -> None:
        """Delete a stored patch (atomically: renamed aside, then deleted).

        Raises:
            StoreError: invalid or unknown name, or the store is locked too long.
        """
        path = self._entry_path(name)
        with self._locked():
            if not path.is_dir():
                raise self._unknown(name)
            aside = Path(tempfile.mkdtemp(prefix=DEL_PREFIX, dir=self.root))
            aside.rmdir()
            os.replace(path, aside)
            shutil.rmtree(aside, ignore_errors=True)

    def add_lineage(self, name: str, entry: LineageEntry) -> PatchManifest:
        """Append ``entry`` to a stored patch's lineage (manifest rewritten atomically, under the lock).

        Returns:
            The updated manifest.

        Raises:
            StoreError: invalid, unknown or damaged patch, or the store is locked too long.
        """
        self._entry_path(name)
        with self._locked():
            patch = self._load(name)
            updated = patch.manifest.model_copy(update={"lineage": [*patch.manifest.lineage, entry]})
            write_manifest(patch.path / MANIFEST_NAME, updated)
        return updated


__all__ = [
    "ADAPTER_SUBDIR",
    "NAME_PATTERN",
    "PatchStore",
    "StoredPatch",
    "VerifyResult",
    "default_name",
    "is_archive_path",
    "sha256_file",
    "validate_name",
]
