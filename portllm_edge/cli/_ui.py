"""Small CLI presentation helpers (rich): progress bars, the list commands' console and table, human byte sizes. No core logic here."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


LIST_WIDTH = 100
"""Columns the ``list`` tables (``runs list``, ``patch list``) fit in (a terminal's own width when narrower)."""


def list_console(width: int = LIST_WIDTH, *, at_least: int = 0) -> Console:
    """A console ``width`` columns wide, or the terminal's width where that is narrower (off a
    terminal rich would otherwise use 80 columns), but never under ``at_least`` columns (what a
    table needs to show its unbreakable cells whole)."""
    import sys

    terminal = Console().width if sys.stdout.isatty() else width
    return Console(highlight=False, width=max(min(width, terminal), at_least))


def list_table(title: str) -> Table:
    """The borderless ``rich`` table of the list commands (``runs list``, ``patch list``): no box
    or edge padding, so every column's width goes to text and the list fits :data:`LIST_WIDTH`."""
    return Table(title=title, box=None, pad_edge=False, header_style="bold", title_justify="left")


def human_bytes(n: float | None) -> str:
    """Binary units: ``1.50 GiB``; ``n/a`` for None."""
    if n is None:
        return "n/a"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    return f"{value:.2f} TiB"


@contextlib.contextmanager
def step_progress(label: str) -> Iterator[Callable[[int, int, float], None]]:
    """Progress for training loops; yields ``update(step, total, loss)``.

    A live bar in a terminal; elsewhere (CI logs, pipes) one plain line per ~10 % of the steps,
    with the rate, so that progress is visible in any log.
    """
    if not console.is_terminal:
        import time

        start = time.perf_counter()
        shown = {"last": 0}

        def plain(step: int, total: int, loss: float) -> None:
            every = max(1, total // 10)
            if step == total or step - shown["last"] >= every:
                shown["last"] = step
                rate = (time.perf_counter() - start) / step
                console.print(f"    {label}: step {step}/{total}, loss {loss:.4f}, {rate:.1f} s/step")

        yield plain
        return
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task(label, total=None, loss="-")

        def update(step: int, total: int, loss: float) -> None:
            progress.update(task, completed=step, total=total, loss=f"{loss:.4f}")

        yield update


def phase_printer(prefix: str = "") -> Callable[[str], None]:
    """A callback that prints each phase name as it starts."""

    def show(name: str) -> None:
        console.print(f"{prefix}[cyan]›[/cyan] {name}")

    return show
