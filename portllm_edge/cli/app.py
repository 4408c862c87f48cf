"""The typer application object and the global options.

Command modules (``portllm_edge.cli.<group>_cmds``) import :data:`app` and add
their commands; :mod:`portllm_edge.cli` imports them all. Commands stay thin:
parse arguments, call the core, print. They raise :class:`PortllmError`
subclasses; :func:`portllm_edge.cli.main` turns those into one line on stderr
and exit code 2.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from portllm_edge import __version__, paths

app = typer.Typer(
    name="portllm-edge",
    help="Port fine-tuned LoRA patches onto updated base models, within your memory budget.",
    no_args_is_help=False,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"portllm-edge {__version__}")
        raise typer.Exit(0)


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    home: Annotated[
        Optional[str],  # str, not Path: Path("") would silently become the current folder
        typer.Option(
            "--home",
            metavar="<path>",
            help="Data folder (patch store, models, runs). Default: $PORTLLM_EDGE_HOME or the user data folder.",
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    if home is not None:
        paths.set_home(home)
    if ctx.invoked_subcommand is None:
        import sys

        if sys.stdin.isatty() and sys.stdout.isatty():
            from portllm_edge.cli.tui_cmds import launch_tui

            launch_tui()
        else:
            typer.echo(ctx.get_help())
        raise typer.Exit(0)
