"""CLI commands: ``models import-gguf``, ``models list``, ``models convert-pickle``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from portllm_edge.cli._options import dest_argument
from portllm_edge.cli._ui import console, human_bytes, out
from portllm_edge.cli.app import app

models_app = typer.Typer(help="The local model store: import GGUF files, list models.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("import-gguf")
def import_gguf_cmd(
    file: Annotated[Path, typer.Argument(help="A llama.cpp .gguf file.")],
    name: Annotated[
        Optional[str], typer.Option(help="Store name (default: the file name without quant suffix).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing model of that name.")] = False,
    dtype: Annotated[
        str,
        typer.Option("--dtype", help="auto (the file's float type, else bf16), bf16, fp16 or fp32."),
    ] = "auto",
) -> None:
    """Convert a GGUF file into a safetensors model folder (with tokenizer) in the local model store."""
    from portllm_edge.models.gguf import import_gguf

    console.print(f"importing {file} (streaming, one tensor at a time, dtype {dtype}) ...")
    folder = import_gguf(file, name=name, force=force, dtype=dtype)
    size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    out.print(f"imported {folder.name} -> {folder} ({human_bytes(size)})")


@models_app.command("import")
def import_folder_cmd(
    folder: Annotated[
        Path, typer.Argument(help="A Hugging Face model folder (config.json + *.safetensors).")
    ],
    name: Annotated[Optional[str], typer.Option(help="Store name (default: the folder's name).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing model of that name.")] = False,
) -> None:
    """Copy a local Hugging Face model folder into the local model store."""
    from portllm_edge.models.store import import_model_folder

    dest = import_model_folder(folder, name, force=force)
    out.print(f"imported {dest.name} -> {dest}")


@models_app.command("list")
def list_cmd(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List the models in the local model store."""
    from portllm_edge import paths

    rows = []
    root = paths.models_dir()
    for d in sorted(root.glob("*")) if root.is_dir() else []:
        if not d.is_dir() or d.name.startswith("."):
            continue
        cfg = {}
        try:
            cfg = json.loads((d / "config.json").read_text())
        except (OSError, ValueError):
            pass
        size = sum(p.stat().st_size for p in d.glob("*.safetensors"))
        rows.append({"name": d.name, "model_type": cfg.get("model_type"), "path": str(d), "bytes": size})
    if as_json:
        out.print_json(json.dumps(rows))
        return
    if not rows:
        out.print(f"no models in {root} (import one with `portllm-edge models import-gguf FILE`)")
        return
    for r in rows:
        out.print(
            f"{r['name']:<40} {r['model_type']!s:<12} {human_bytes(float(r['bytes'] or 0)):>12}  {r['path']}"
        )


@models_app.command("convert-pickle")
def convert_pickle_cmd(
    src: Annotated[Path, typer.Argument(help="A pickled .bin/.pt weight file.")],
    dst: Annotated[Path, dest_argument(help="Output .safetensors file.")],
) -> None:
    """Convert a pickled weight file to safetensors, loading it with torch.load(weights_only=True)."""
    from portllm_edge.tensorio import convert_pickle_to_safetensors

    convert_pickle_to_safetensors(src, dst)
    out.print(f"wrote {dst}")
