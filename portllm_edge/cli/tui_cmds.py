"""CLI commands: tui (placeholder; filled by the owner of this area)."""

from __future__ import annotations

from portllm_edge.cli.app import app


def launch_tui() -> None:
    """Open the Textual app (imported lazily: the core never imports textual)."""
    from portllm_edge_tui.app import create_app

    create_app().run()


@app.command("tui")
def tui() -> None:
    """Open the terminal app."""
    launch_tui()
