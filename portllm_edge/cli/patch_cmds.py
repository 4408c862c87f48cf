"""CLI commands: ``portllm-edge patch import|list|show|verify|export|remove|convert``.

``patch export`` runs the serving check and writes peft, vLLM or llama.cpp GGUF output
(:mod:`portllm_edge.export`).

Thin: parse arguments, call :class:`portllm_edge.patches.PatchStore`, print.
Expected failures are :class:`~portllm_edge.errors.PortllmError`s that
:func:`portllm_edge.cli.main` prints as one line (exit 2). ``patch verify``
prints every entry, then fails with exit 2 when any entry is inconsistent.
"""

from __future__ import annotations

import contextlib
import json
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from portllm_edge.cli._options import dest_argument, dest_option
from portllm_edge.cli._ui import list_console, list_table
from portllm_edge.cli.app import app
from portllm_edge.errors import PatchError, StoreError

patch_app = typer.Typer(
    name="patch",
    help="Import, inspect, verify, export and remove LoRA patches in the local store.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.add_typer(patch_app, name="patch")


def _store() -> Any:
    from portllm_edge.patches import PatchStore

    return PatchStore()


@contextlib.contextmanager
def _manifest_warnings() -> Iterator[None]:
    """Print manifest compatibility warnings as ``warning: ...`` lines on stderr (not Python's format)."""
    from portllm_edge.patches import ManifestWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ManifestWarning)
        try:
            yield
        finally:
            seen = set()
            for w in caught:
                text = str(w.message)
                if issubclass(w.category, ManifestWarning) and text not in seen:
                    seen.add(text)
                    print(f"warning: {text}", file=sys.stderr)
                elif not issubclass(w.category, ManifestWarning):
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _targets(m: Any) -> str:
    t = m.adapter.target_modules
    return t if isinstance(t, str) else ",".join(t)


@patch_app.command("import")
def import_cmd(
    src: Annotated[
        Path,
        typer.Argument(
            help="A peft LoRA adapter folder (adapter_config.json + adapter_model.safetensors), "
            "or a .tar/.tar.gz/.tgz made by `patch export`."
        ),
    ],
    name: Annotated[
        Optional[str], typer.Option("--name", help="Store name (default: the folder's name).")
    ] = None,
    task: Annotated[
        Optional[str], typer.Option("--task", help="Task the patch was trained for (e.g. sst2).")
    ] = None,
    base_id: Annotated[
        Optional[str],
        typer.Option(
            "--base-id",
            help="Base the patch was learned on (default: the adapter config's base_model_name_or_path).",
        ),
    ] = None,
    base_fingerprint: Annotated[
        Optional[str],
        typer.Option(
            "--base-fingerprint",
            help="Weight fingerprint of that base (computed when --base-id is a local folder).",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a stored patch of the same name.")] = False,
) -> None:
    """Validate an adapter folder and copy it into the store (atomic, checksummed)."""
    from portllm_edge.patches.store import is_archive_path

    archive = src.is_file() and is_archive_path(src)
    with _manifest_warnings():
        store = _store()
        manifest = (store.import_archive if archive else store.import_dir)(
            src,
            name=name,
            task=task,
            source_base_id=base_id,
            source_base_fingerprint=base_fingerprint,
            force=force,
        )
    typer.echo(
        f"imported '{manifest.name}'{' from archive' if archive else ''}: LoRA r={manifest.adapter.r} "
        f"alpha={manifest.adapter.lora_alpha:g} targets={_targets(manifest)} ({len(manifest.files)} files)"
    )


@patch_app.command("list")
def list_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (a list of manifests).")] = False,
) -> None:
    """List stored patches.

    times ported: the port steps in the patch's own lineage, i.e. how many base updates it has
    been carried across (0 as trained or imported; `patch show NAME` lists the steps).
    """
    store = _store()
    with _manifest_warnings():
        manifests = store.list()
    if as_json:
        typer.echo(json.dumps([m.to_json_dict() for m in manifests], indent=2))
        return
    unreadable = len(store.names()) - len(manifests)
    if not manifests:
        typer.echo(
            f"no patches in {store.root}" + (f" ({unreadable} unreadable entries)" if unreadable else "")
        )
    else:
        # Fits LIST_WIDTH (as `runs list`): the name whole on one line (the field users type),
        # the other columns wrapped down to their narrowest (targets joined with ", " so they
        # wrap between modules); only names too long for that widen the table.
        fixed = {"r": None, "alpha": None, "times ported": None, "created": 10}  # width; None: its own
        name_width = max(len("name"), *(len(m.name) for m in manifests))
        least = name_width + 1 + 5 + 12 + 10 + 3 * 6 + 2 * 7  # every column, the wrapped ones 6 wide
        console = list_console(at_least=least)
        table = list_table(f"Patches in {store.root}")
        table.add_column("name", no_wrap=True, min_width=name_width)
        for col in ("task", "r", "alpha", "targets", "source base", "times ported", "created"):
            if col in fixed:
                table.add_column(col, no_wrap=fixed[col] is None, width=fixed[col])
            else:
                table.add_column(col, overflow="fold")
        for m in manifests:
            ports = sum(1 for e in m.lineage if e.kind == "port")
            table.add_row(
                m.name,
                m.task or "-",
                str(m.adapter.r),
                f"{m.adapter.lora_alpha:g}",
                _targets(m).replace(",", ", "),
                m.source_base.id or "-",
                str(ports),
                m.created_at.strftime("%Y-%m-%d %H:%M"),
            )
        console.print(table)
    if unreadable:
        print(
            f"warning: {unreadable} store entries could not be read; run `portllm-edge patch verify --all`",
            file=sys.stderr,
        )


@patch_app.command("show")
def show_cmd(
    name: Annotated[str, typer.Argument(help="Store name.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Show one patch's manifest (checksums verified)."""
    with _manifest_warnings():
        patch = _store().get(name)
    m = patch.manifest
    if as_json:
        data = m.to_json_dict()
        data["path"] = str(patch.path)
        data["adapter_dir"] = str(patch.adapter_dir)
        typer.echo(json.dumps(data, indent=2))
        return
    lines = [
        f"name:          {m.name}",
        f"task:          {m.task or '-'}",
        f"created:       {m.created_at.isoformat()}",
        f"adapter dir:   {patch.adapter_dir}",
        f"source base:   {m.source_base.id or '-'} (model_type {m.source_base.model_type or '-'})",
        f"fingerprint:   {m.source_base.fingerprint or '-'}",
        f"LoRA:          r={m.adapter.r} alpha={m.adapter.lora_alpha:g} dora={m.adapter.use_dora} "
        f"peft={m.adapter.peft_version or '-'}",
        f"targets:       {_targets(m)}",
        f"save modules:  {','.join(m.adapter.modules_to_save) if m.adapter.modules_to_save else '-'}",
        "files:",
        *(f"  {rel}  sha256:{digest[:16]}…" for rel, digest in sorted(m.files.items())),
        "lineage:",
        *(
            f"  {e.at.isoformat()}  {e.kind:<6} base={e.base_id or '-'}"
            + (f" precision={e.precision}" if e.precision else "")
            + (f" parent={e.parent}" if e.parent else "")
            + (f" run={e.run_id}" if e.run_id else "")
            + (f"  {e.note}" if e.note else "")
            for e in m.lineage
        ),
    ]
    typer.echo("\n".join(lines))


@patch_app.command("verify")
def verify_cmd(
    name: Annotated[
        Optional[str], typer.Argument(help="Store name (omit, or pass --all, for every entry).")
    ] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Verify every entry and report leftovers of interrupted writes.")
    ] = False,
    clean: Annotated[
        bool, typer.Option("--clean", help="First restore or remove leftovers of interrupted writes.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print results as JSON.")] = False,
) -> None:
    """Check checksums and completeness; exit 2 if any entry is inconsistent."""
    if name is not None and all_:
        raise StoreError(
            "pass either a patch name or --all, not both", hint="e.g. `portllm-edge patch verify --all`"
        )
    store = _store()
    if clean:
        for action in store.recover():
            typer.echo(f"clean: {action}")
    with _manifest_warnings():
        results = store.verify(name)
    bad = [r for r in results if r.kind == "entry" and not r.ok]
    entries = [r for r in results if r.kind == "entry"]
    if as_json:
        typer.echo(
            json.dumps(
                [
                    {
                        "name": r.name,
                        "path": str(r.path),
                        "kind": r.kind,
                        "ok": r.ok,
                        "problems": list(r.problems),
                    }
                    for r in results
                ],
                indent=2,
            )
        )
    else:
        for r in results:
            status = "ok" if r.ok else "INCONSISTENT"
            if r.kind == "leftover":
                status = "leftover"
            typer.echo(f"{status:<13} {r.name}")
            for p in r.problems:
                typer.echo(f"              {p}")
        if not results:
            typer.echo(f"store at {store.root} is empty")
    if bad:
        raise StoreError(
            f"{len(bad)} of {len(entries)} store entries are inconsistent ({', '.join(r.name for r in bad)}): "
            f"{bad[0].problems[0]}",
            hint="re-import each damaged patch with `portllm-edge patch import SRC --name NAME --force`, "
            "or remove it with `portllm-edge patch remove NAME`",
        )
    if not as_json:
        typer.echo(f"{len(entries)} {'entry' if len(entries) == 1 else 'entries'} consistent")


@patch_app.command("export")
def export_cmd(
    name: Annotated[str, typer.Argument(help="Store name (or, for vllm/gguf-lora, an adapter folder).")],
    dest: Annotated[
        Optional[Path],
        dest_argument(help="Same as --out (kept for `patch export NAME DEST`)."),
    ] = None,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="peft: the adapter folder with its manifest (or a .tar/.tar.gz/.tgz); "
            "vllm: a folder for `vllm serve --enable-lora`; gguf-lora: a llama.cpp LoRA .gguf.",
        ),
    ] = "peft",
    out: Annotated[Optional[Path], dest_option("--out", help="Destination folder or file.")] = None,
    base: Annotated[
        Optional[str],
        typer.Option(
            "--base",
            help="The base it is served on (folder, store name, .gguf); default: the patch's last lineage base.",
        ),
    ] = None,
    merge_to: Annotated[
        Optional[Path],
        dest_option(
            "--merge-to",
            help="Also write W_base + ΔW as a .gguf (base imported from GGUF).",
        ),
    ] = None,
    merge_dtype: Annotated[
        str, typer.Option("--merge-dtype", help="f16, bf16 or q8_0 for --merge-to.")
    ] = "f16",
    force: Annotated[
        bool, typer.Option("--force", help="Replace DEST if it is an existing adapter folder or file.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Export a patch for serving: run the serving check, write the format, print the serve command."""
    from portllm_edge.errors import ExportError
    from portllm_edge.export import EXPORT_FORMATS, export_patch, resolve_target, serving_report

    if dest is not None and out is not None:
        raise ExportError("pass the destination once: DEST or --out, not both", hint="use --out PATH")
    out = out if out is not None else dest
    if fmt not in EXPORT_FORMATS:
        raise ExportError(f"`--format {fmt}` is not known", hint=f"use one of: {', '.join(EXPORT_FORMATS)}")
    if out is None and merge_to is None:
        raise ExportError("nothing to write", hint="pass --out PATH (and/or --merge-to FILE.gguf)")
    with _manifest_warnings():
        target = resolve_target(name, base)
        if merge_to is not None:  # every check of the merge before anything is written
            from portllm_edge.export.merged_gguf import check_gguf_merge_target

            if target.base_dir is None:
                raise ExportError(
                    f"{target.name}: no base to merge into ({target.base_note})", hint="pass --base"
                )
            check_gguf_merge_target(target.base_dir, merge_to, dtype=merge_dtype, overwrite=force)
        report = serving_report(target)
        results: dict[str, Any] = {}
        if out is not None:
            if not as_json:
                typer.echo("\n".join(report.lines()))
                if target.base_note:
                    typer.echo(f"  note: {target.base_note}")
            res = export_patch(target, fmt, out, force=force, report=report)
            results["export"] = res.to_dict()
            if not as_json:
                typer.echo(f"exported '{target.name}' as {fmt} to {res.out}")
                typer.echo(f"serve with: {res.serve_command}")
        if merge_to is not None:
            from portllm_edge.export.merged_gguf import write_merged_gguf

            assert target.base_dir is not None  # checked above
            merged = write_merged_gguf(
                target.adapter_dir, target.base_dir, merge_to, dtype=merge_dtype, overwrite=force
            )
            results["merged_gguf"] = merged.to_dict()
            if not as_json:
                typer.echo(
                    f"merged '{target.name}' into {merged.out} ({merged.dtype}, {merged.tensors} tensors, "
                    f"{len(merged.patched)} patched; tokenizer and metadata from {merged.source})"
                )
                for note in merged.notes:
                    typer.echo(f"note: {note}")
                typer.echo(f"serve with: llama-server -m {merged.out}")
    if as_json:
        typer.echo(json.dumps(results, indent=2))


@patch_app.command("remove")
def remove_cmd(
    name: Annotated[str, typer.Argument(help="Store name.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a stored patch."""
    store = _store()
    store.path_of(name)  # unknown or invalid names fail here, before any prompt (damaged entries can go)
    if not yes:
        if not sys.stdin.isatty():
            raise StoreError(
                f"refusing to remove patch '{name}' without confirmation in a non-interactive session",
                hint=f"pass --yes: `portllm-edge patch remove {name} --yes`",
            )
        if not typer.confirm(f"Remove patch '{name}' from {store.root}?", default=False):
            typer.echo("not removed")
            raise typer.Exit(1)
    store.remove(name)
    typer.echo(f"removed '{name}'")


@patch_app.command("convert")
def convert_cmd(
    src: Annotated[
        Path, typer.Argument(help="Adapter folder holding a pickled adapter_model.bin (or .pt/.pth).")
    ],
    out: Annotated[
        Optional[Path],
        dest_option("--out", help="Write a converted copy of the folder here instead of in place."),
    ] = None,
) -> None:
    """Convert a pickled adapter to safetensors with torch.load(weights_only=True), then validate it."""
    import shutil

    from portllm_edge.fsutil import atomic_dir
    from portllm_edge.patches import WEIGHTS_NAME, validate_adapter_dir
    from portllm_edge.patches.adapter import PICKLED_WEIGHTS_NAMES
    from portllm_edge.tensorio import convert_pickle_to_safetensors

    pickled = [src / n for n in PICKLED_WEIGHTS_NAMES if (src / n).is_file()]
    if not src.is_dir():
        raise PatchError(f"{src}: adapter folder not found", hint="check the path")
    if not pickled:
        raise PatchError(
            f"{src}: no pickled adapter weights ({', '.join(PICKLED_WEIGHTS_NAMES)}) to convert",
            hint="nothing to do; `portllm-edge patch import` takes safetensors adapters directly",
        )
    if out is None:
        if (src / WEIGHTS_NAME).exists():
            raise PatchError(
                f"{src / WEIGHTS_NAME}: already exists", hint="remove it, or convert to --out DIR"
            )
        convert_pickle_to_safetensors(pickled[0], src / WEIGHTS_NAME)
        target = src
    else:
        from portllm_edge.fsutil import unwritable_reason

        if out.exists():
            raise PatchError(f"{out}: already exists", hint="choose a new --out folder")
        reason = unwritable_reason(out)  # not into the stores: `patch import` the converted copy
        if reason is not None:
            raise PatchError(
                f"{out}: {reason}", hint="convert to a folder outside the stores, then `patch import` it"
            )
        with atomic_dir(out) as tmp:
            for f in src.iterdir():
                if f.is_file() and f not in pickled and not f.name.startswith("."):
                    shutil.copyfile(f, tmp / f.name)
            convert_pickle_to_safetensors(pickled[0], tmp / WEIGHTS_NAME)
        target = out
    summary = validate_adapter_dir(target)
    typer.echo(
        f"converted {pickled[0].name} -> {target / WEIGHTS_NAME} ({summary.num_tensors} tensors, r={summary.r}); "
        "the pickled file was not executed (weights_only=True)"
    )
