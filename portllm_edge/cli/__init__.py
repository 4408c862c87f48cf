"""Command-line entry point: ``portllm-edge``.

Thin on purpose: every command parses its arguments, calls the headless core
and prints. Expected failures (:class:`~portllm_edge.errors.PortllmError`)
print ``error: <what and where>. Fix: <how>`` to stderr and exit with 2, with no
traceback. Unexpected exceptions keep their traceback (they are bugs).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from portllm_edge.cli.app import app
from portllm_edge.errors import EXIT_USAGE, PortllmError

# Each import registers its commands on ``app``.
from portllm_edge.cli import (  # noqa: E402,F401  (registration side effect)
    check_cmds,
    hardware_cmds,
    model_cmds,
    patch_cmds,
    port_cmds,
    eval_cmds,
    runs_cmds,
    tui_cmds,
)

__all__ = ["app", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code (0 ok, 2 expected error, 130 interrupted)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        rv = app(args=args, prog_name="portllm-edge", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code or 0)
    except click.exceptions.Abort:
        print("aborted", file=sys.stderr)
        return 130
    except click.exceptions.ClickException as exc:
        exc.show()
        return EXIT_USAGE
    except PortllmError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return rv if isinstance(rv, int) else 0


def run() -> None:
    """Console-script wrapper around :func:`main`."""
    sys.exit(main())
