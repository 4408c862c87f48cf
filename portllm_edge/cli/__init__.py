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
import typer

# Each import registers its commands on ``app``.
from portllm_edge.cli import (  # noqa: F401  (registration side effect)
    check_cmds,
    compare_cmds,
    demo_cmds,
    eval_cmds,
    hardware_cmds,
    model_cmds,
    patch_cmds,
    port_cmds,
    runs_cmds,
    tui_cmds,
)
from portllm_edge.cli.app import app
from portllm_edge.errors import EXIT_USAGE, PortllmError

__all__ = ["app", "main"]


def _typer_click(name: str) -> tuple[type[BaseException], ...]:
    """Typer >= 0.2x vendors click as ``typer._click``; its usage errors are not click's classes."""
    try:
        import typer._click.exceptions as vendored
    except ImportError:  # pragma: no cover - older typer uses click itself
        return ()
    cls = getattr(vendored, name, None)
    return (cls,) if isinstance(cls, type) and issubclass(cls, BaseException) else ()


_USAGE_ERRORS: tuple[type[BaseException], ...] = (
    click.exceptions.ClickException,
    *_typer_click("ClickException"),
)
_ABORTS: tuple[type[BaseException], ...] = (click.exceptions.Abort, typer.Abort)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code (0 ok, 2 expected error, 130 interrupted)."""
    args = list(sys.argv[1:] if argv is None else argv)
    _quiet_libraries()
    try:
        rv = app(args=args, prog_name="portllm-edge", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code or 0)
    except _ABORTS:
        print("aborted", file=sys.stderr)
        return 130
    except _USAGE_ERRORS as exc:
        print_error(_usage_error(exc))
        return EXIT_USAGE
    except PortllmError as exc:
        print_error(exc.one_line())
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return rv if isinstance(rv, int) else 0


def print_error(text: str) -> None:
    """Print one CLI error line to stderr: ``error: <what and where>. Fix: <how>``.

    The one place the CLI words an error: core errors (:meth:`PortllmError.one_line`) and the
    argument parser's usage errors (:func:`_usage_error`) both come here, and exit with 2.
    """
    print(f"error: {text}", file=sys.stderr)


def _usage_error(exc: BaseException) -> str:
    """A click/typer usage error as ``<message>. Fix: <usage>; see `<command> --help```."""
    from portllm_edge.errors import sentence

    message = sentence(exc.format_message() if hasattr(exc, "format_message") else str(exc))
    ctx = getattr(exc, "ctx", None)
    if ctx is None:
        return message
    usage = ctx.get_usage().removeprefix("Usage: ").strip()
    return f"{message} Fix: {usage}; see `{ctx.command_path} --help`"


def _quiet_libraries() -> None:
    """Hide library progress bars and advisory warnings; our own progress is shown instead."""
    import os
    import warnings

    # peft 0.21 on transformers 5 trips this deprecation on every LoRA set-up; it is not the user's to fix.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    import logging

    # bitsandbytes looks for an optional hub-hosted CPU kernel and warns when it is absent;
    # we run offline by design. (A logger's level can be set before its module is imported.)
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # read when transformers is first imported
    if "transformers" in sys.modules:
        _silence_transformers()


def _silence_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def run() -> None:
    """Console-script wrapper around :func:`main`."""
    sys.exit(main())
