"""portllm_edge.export: hand a ported patch to the runtimes people serve with.

``export_patch`` runs the serving check (:mod:`.serving`) for the chosen format,
refuses before writing anything when the runtime cannot serve the patch, then
writes a vLLM adapter folder or a llama.cpp LoRA GGUF (:mod:`.adapters`), and says
which command serves the result. :mod:`.merged_gguf` writes a merged model as a
GGUF that reuses the source GGUF's tokenizer and metadata.

Nothing here imports torch at module import; UI code never lives here.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from portllm_edge.errors import BaseModelError, ExportError, StoreError
from portllm_edge.export.serving import FORMAT_RUNTIME, ServingReport, check_serving, vllm_max_lora_rank
from portllm_edge.fsutil import empty_path_reason, unwritable_reason

EXPORT_FORMATS: tuple[str, ...] = ("peft", "vllm", "gguf-lora")


@dataclass
class ExportTarget:
    """A patch and the base it will be served on, resolved.

    Attributes:
        name: Patch name (store name, or the folder's name).
        adapter_dir: The peft adapter folder.
        base_ref: What names the base (``--base``, or the patch's last lineage base), or ``None``.
        base_dir: The local base folder, or ``None`` when it could not be found.
        base_gguf: The GGUF the base was imported from, when it was.
        base_note: Why no base was resolved, when ``base_dir`` is ``None``.
        stored: True when the patch is a store entry (``--format peft`` copies store entries).
    """

    name: str
    adapter_dir: Path
    base_ref: str | None
    base_dir: Path | None
    base_gguf: Path | None = None
    base_note: str | None = None
    stored: bool = False


@dataclass
class ExportResult:
    """What :func:`export_patch` did.

    Attributes:
        out: The written folder or file.
        format: ``peft``, ``vllm`` or ``gguf-lora``.
        report: The serving check.
        serve_command: A shell command that serves ``out`` (placeholders in CAPITALS where unknown).
        details: Format-specific facts (config written, tensors, alpha).
    """

    out: Path
    format: str
    report: ServingReport
    serve_command: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "format": self.format,
            "serve_command": self.serve_command,
            "details": self.details,
            "blockers": [b.__dict__ for b in self.report.blockers],
            "notes": self.report.notes,
        }


def _gguf_source(base_dir: Path) -> Path | None:
    import json

    from portllm_edge.models.gguf import METADATA_FILE

    meta = base_dir / METADATA_FILE
    try:
        data = json.loads(meta.read_text(encoding="utf-8")) if meta.is_file() else {}
    except ValueError:
        return None
    src = data.get("source_file") if data.get("source") == "gguf" else None
    return Path(src) if src else None


def resolve_target(patch: str, base: str | None = None) -> ExportTarget:
    """Find the patch (store name or adapter folder) and its serving base.

    The base is ``base`` when given, else the base of the patch's last lineage
    entry (the base it was ported or trained on), else its ``source_base``.

    Raises:
        StoreError / PatchError: the patch cannot be found, or a folder is not a valid LoRA adapter
            (:func:`~portllm_edge.patches.validate_adapter_dir`: non-finite factors, a rank that
            disagrees with ``r``; a stored patch was validated on import).
        BaseModelError: ``base`` was given and cannot be resolved.
    """
    from portllm_edge.models import resolve_base
    from portllm_edge.patches import validate_adapter_dir

    p = Path(patch).expanduser()
    manifest = None
    if p.is_dir():
        validate_adapter_dir(p)
        adapter_dir, name = p, p.name
    else:
        from portllm_edge.patches import PatchStore

        entry = PatchStore().get(patch)
        adapter_dir, name, manifest = Path(entry.adapter_dir), patch, entry.manifest
    ref = base
    if ref is None and manifest is not None:
        last = next((e.base_id for e in reversed(manifest.lineage) if e.base_id), None)
        ref = last or manifest.source_base.id
    if ref is None:
        from portllm_edge.patches.adapter_format import AdapterConfig

        ref = AdapterConfig.read(adapter_dir, refuse_unknown=False).base_model_name_or_path
    in_store = manifest is not None
    if ref is None:
        return ExportTarget(
            name, adapter_dir, None, None, base_note="no base recorded; pass --base", stored=in_store
        )
    try:
        resolved = resolve_base(ref)
    except BaseModelError as exc:
        if base is not None:
            raise
        note = f"recorded base {ref!r} not found ({exc.message}); pass --base"
        return ExportTarget(name, adapter_dir, ref, None, base_note=note, stored=in_store)
    return ExportTarget(name, adapter_dir, ref, resolved.path, _gguf_source(resolved.path), stored=in_store)


def serve_command(fmt: str, target: ExportTarget, out: Path, report: ServingReport) -> str:
    """The command that serves an export (see docs/serving.md); for a peft archive it unpacks the
    archive beside itself first and loads the folder inside."""
    q = shlex.quote
    if fmt == "gguf-lora":
        base = str(target.base_gguf) if target.base_gguf else "BASE.gguf"
        return f"llama-server -m {q(base)} --lora {q(str(out))}"
    if fmt == "vllm":
        base = str(target.base_dir) if target.base_dir else (target.base_ref or "BASE")
        rank = vllm_max_lora_rank(report.max_rank) or report.max_rank
        return (
            f"vllm serve {q(base)} --enable-lora --lora-modules {q(f'{target.name}={out}')} "
            f"--max-lora-rank {rank}"
        )
    from portllm_edge.patches.store import is_archive_path

    base = str(target.base_dir) if target.base_dir else "BASE"
    # PeftModel.from_pretrained loads a folder: an archive (members `<name>/...`, see
    # PatchStore.export_archive) is unpacked next to itself first and the folder inside loaded
    unpack, folder = "", out
    if is_archive_path(out):
        unpack, folder = f"tar -xf {q(str(out))} -C {q(str(out.parent))} && ", out.parent / target.name
    return unpack + (
        'python -c "from peft import PeftModel; from transformers import AutoModelForCausalLM; '
        f'PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained({base!r}), {str(folder)!r})"'
    )


def serving_report(target: ExportTarget) -> ServingReport:
    """Run the serving check for a resolved target (base headers only, no weights)."""
    from portllm_edge.porting.adapter_io import read_base_index

    index = read_base_index(target.base_dir) if target.base_dir is not None else None
    return check_serving(target.adapter_dir, index)


def export_patch(
    target: ExportTarget, fmt: str, out: Path, *, force: bool = False, report: ServingReport | None = None
) -> ExportResult:
    """Export a patch for a runtime after the serving check passed.

    Args:
        target: From :func:`resolve_target`.
        fmt: ``peft`` (a copy of the stored adapter folder with its manifest, or a .tar/.tgz),
            ``vllm`` (a folder) or ``gguf-lora`` (a ``.gguf`` file).
        out: Destination.
        force: Replace ``out``.
        report: A serving report already computed for ``target`` (else computed here).

    Returns:
        An :class:`ExportResult`.

    Raises:
        ExportError: an unknown format; the runtime's blockers (the first named, with its fix);
            a bad ``out``.
    """
    from portllm_edge.porting.adapter_io import read_base_index

    if fmt not in EXPORT_FORMATS:
        raise ExportError(
            f"export format `{fmt}` is not known", hint=f"use one of: {', '.join(EXPORT_FORMATS)}"
        )
    report = report if report is not None else serving_report(target)
    runtime = FORMAT_RUNTIME[fmt]
    blockers = report.blocking(runtime)
    if blockers:
        more = f" (and {len(blockers) - 1} more; see the serving check above)" if len(blockers) > 1 else ""
        raise ExportError(
            f"{target.adapter_dir}: {runtime} cannot serve this patch: {blockers[0].problem}{more}",
            hint=blockers[0].fix,
        )
    reason = empty_path_reason(out)
    if reason is not None:
        raise ExportError(
            f"export destination {str(out)!r}: {reason}", hint="pass --out a folder or file path"
        )
    out = Path(out).expanduser()
    reason = unwritable_reason(out)
    if reason is not None:
        raise ExportError(f"{out}: {reason}", hint="pass an --out in a folder you can write to")
    details: dict[str, Any] = {}
    if fmt == "gguf-lora":
        from portllm_edge.export.adapters import write_lora_gguf

        if out.suffix.lower() != ".gguf":
            raise ExportError(
                f"{out}: a llama.cpp LoRA adapter needs a .gguf file name", hint="e.g. --out patch.gguf"
            )
        assert target.base_dir is not None  # the serving check blocks llama.cpp without a base
        details = write_lora_gguf(
            target.adapter_dir, out, base=read_base_index(target.base_dir), name=target.name, overwrite=force
        )
    elif fmt == "vllm":
        from portllm_edge.export.adapters import write_vllm

        if out.exists() and not out.is_dir():
            raise ExportError(
                f"{out}: is a file; vLLM loads an adapter folder", hint="pass a folder name to --out"
            )
        index = read_base_index(target.base_dir) if target.base_dir is not None else None
        details = write_vllm(
            target.adapter_dir,
            out,
            base=index,
            base_id=str(target.base_dir or target.base_ref or ""),
            overwrite=force,
        )
    else:
        from portllm_edge.patches import PatchStore
        from portllm_edge.patches.store import is_archive_path

        if not target.stored:
            raise StoreError(
                f"{target.adapter_dir}: --format peft exports a stored patch",
                hint="import it first (`portllm-edge patch import DIR`), or copy the folder",
            )
        store = PatchStore()
        out = (
            store.export_archive(target.name, out, force=force)
            if is_archive_path(out)
            else store.export(target.name, out, force=force)
        )
    return ExportResult(out, fmt, report, serve_command(fmt, target, out, report), details)


__all__ = [
    "EXPORT_FORMATS",
    "ExportResult",
    "ExportTarget",
    "export_patch",
    "resolve_target",
    "serve_command",
    "serving_report",
]
