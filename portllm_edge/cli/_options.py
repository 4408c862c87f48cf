"""Typer option declarations that several commands share, declared once (same flag, same help).

A command uses an alias as its parameter's type, e.g. ``verbalizers: Verbalizers = None``;
its default stays in the command. Only options whose meaning is the same everywhere live
here; an option whose help differs by command (``--limit``, ``--precision``) stays local.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

OldOpt = Annotated[
    Optional[str],
    typer.Option(
        "--old",
        help="The base the patch was trained on (default: found in the model store from the patch's records).",
    ),
]
"""``--old`` (check, drift, merge, eval, port); found from the patch's records when omitted."""

OldBaseAlias = Annotated[Optional[str], typer.Option("--old-base", hidden=True)]
"""``--old-base``: the former spelling of ``--old``, still accepted (hidden)."""

Verbalizers = Annotated[
    Optional[list[str]],
    typer.Option("--verbalizer", help="jsonl task: LABEL=WORD, once per class, in class order."),
]
"""``--verbalizer LABEL=WORD``, repeatable (eval, train, port, compare, bench)."""

Template = Annotated[
    Optional[str],
    typer.Option("--template", help="jsonl task: prompt template, e.g. 'Review: {text}\\nSentiment:'."),
]
"""``--template`` of the jsonl task (eval, train, port, compare, bench)."""

DeviceMap = Annotated[
    Optional[str],
    typer.Option(
        "--device-map",
        help="auto: layers that do not fit --max-memory go to CPU RAM, then disk (accelerate).",
    ),
]
"""``--device-map auto`` (eval, port); see :func:`portllm_edge.porting.offload.offload_request`."""

MaxMemory = Annotated[
    Optional[str],
    typer.Option(
        "--max-memory",
        help="Budget for --device-map auto: a size for the load device (e.g. 2GiB) or DEVICE=SIZE pairs "
        "(0=20GiB,cpu=64GiB). Implies --device-map auto; needs --precision bf16, fp16 or fp32.",
    ),
]
"""``--max-memory`` (eval, port); see :func:`portllm_edge.porting.offload.offload_request`."""


def dest_path(value: str | Path) -> Path:
    """Typer ``parser=`` of every destination (``--out``, ``--merge-to``, ``--predictions``, ...).

    Raises:
        typer.BadParameter: the value is empty or blank (:func:`portllm_edge.fsutil.empty_path_reason`);
            the CLI prints it naming the option and exits 2.
    """
    from portllm_edge.fsutil import empty_path_reason

    reason = empty_path_reason(value)
    if reason is not None:
        raise typer.BadParameter(reason)
    return Path(value)


def dest_option(*names: str, help: str) -> Any:
    """A destination option (``--out``, ``--merge-to``, ...): parsed by :func:`dest_path`, shown as ``<path>``."""
    return typer.Option(*names, parser=dest_path, metavar="<path>", help=help)


def dest_argument(*, help: str) -> Any:
    """A destination argument, parsed by :func:`dest_path` (see :func:`dest_option`)."""
    return typer.Argument(parser=dest_path, help=help)


def verbalizer_map(values: Optional[list[str]]) -> Optional[dict[str, str]]:
    """``--verbalizer`` values -> ``{"0": "negative", "1": "positive"}`` (class order kept), or None.

    Raises:
        ConfigError: a value without ``=`` or a repeated label (:func:`portllm_edge.evaluation.tasks.parse_verbalizers`).
    """
    from portllm_edge.evaluation.tasks import parse_verbalizers

    return parse_verbalizers(values) if values else None


__all__ = [
    "DeviceMap",
    "MaxMemory",
    "OldBaseAlias",
    "OldOpt",
    "Template",
    "Verbalizers",
    "dest_argument",
    "dest_option",
    "dest_path",
    "verbalizer_map",
]
