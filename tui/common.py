"""Pieces every screen shares: the navigation bar, error notifications, modals and small formatters.

Why this module exists: each screen must show core errors the same way (a
notification with the error's title, message and fix, and the app keeps
running), offer the same navigation, and ask for confirmation the same way.

It must not import torch or transformers; the core is imported lazily inside
functions only where it is needed.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Footer, Input, Label, Static

if TYPE_CHECKING:
    from .app import PortllmApp

NAV_ITEMS: tuple[tuple[str, str, str], ...] = (
    ("dashboard", "Dashboard", "Memory, budget and recent runs"),
    ("models", "Models", "Which base models fit, at which precision"),
    ("patches", "Patches", "The local patch store: verify, export, remove"),
    ("port", "Port", "Port a stored patch onto an updated base"),
    ("runs", "Runs", "Run history, charts and reports"),
)
"""(mode, title, help) per screen, in key order 1-5."""


def error_text(exc: BaseException) -> tuple[str, str]:
    """(title, body) of a notification for ``exc``: a PortllmError's title, message and fix.

    Unexpected exceptions get the title ``Unexpected error`` and their type and text.
    """
    from portllm_edge.workflow.queries import PortllmError

    if isinstance(exc, PortllmError):
        body = exc.message + (f"\nFix: {exc.hint}" if exc.hint else "")
        return exc.title, body
    return "Unexpected error", f"{type(exc).__name__}: {exc}"


def notify_error(app: Any, exc: BaseException) -> None:
    """Show ``exc`` as an error notification (UI thread only); the app keeps running."""
    title, body = error_text(exc)
    if title == "Unexpected error":
        app.log.error("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    app.notify(body, title=title, severity="error", timeout=12, markup=False)


def notify_error_from_thread(app: Any, exc: BaseException) -> None:
    """Show ``exc`` as an error notification from a thread worker."""
    try:
        app.call_from_thread(notify_error, app, exc)
    except RuntimeError:  # the app is shutting down
        pass


class NavBar(Static):
    """One line naming the five screens and their keys, the current one highlighted."""

    DEFAULT_CSS = """
    NavBar { height: 1; background: $panel; color: $text-muted; }
    """

    def __init__(self, current: str) -> None:
        super().__init__(self._render_nav(current), id="nav")

    @staticmethod
    def _render_nav(current: str) -> Text:
        text = Text(" portllm-edge ", style="bold")
        for key, (mode, title, _help) in enumerate(NAV_ITEMS, start=1):
            style = "bold reverse" if mode == current else ""
            text.append(" ")
            text.append(f" {key} {title} ", style=style)
        text.append("   ^p palette", style="dim")
        return text


class BaseScreen(Screen[None]):
    """A top-level screen: the nav bar, the screen's body, and the footer of bindings."""

    MODE: ClassVar[str] = ""
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "focus_main", "Close keys / back", show=False),
    ]

    @property
    def papp(self) -> PortllmApp:
        """The app, typed."""
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield NavBar(self.MODE)
        yield from self.compose_body()
        yield Footer()

    def compose_body(self) -> ComposeResult:  # pragma: no cover - overridden
        yield from ()

    def palette_commands(self) -> list[tuple[str, str, Callable[[], Any]]]:
        """(title, help, callback) of this screen's actions for the command palette."""
        return []

    def action_focus_main(self) -> None:
        """Escape closes the keys panel when it is open; else it leaves a text field for the main widget."""
        if self.query("HelpPanel"):
            self.app.action_hide_help_panel()
            return
        main = self.query(".main")
        if main:
            main.first().focus()


class ConfirmModal(ModalScreen[bool]):
    """Ask a yes/no question; dismisses with ``True`` only on an explicit yes."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str, *, yes_label: str = "Remove") -> None:
        super().__init__()
        self.question = question
        self.yes_label = yes_label

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog"):
            yield Label(self.question, id="question")
            with Horizontal(classes="buttons"):
                yield Button(f"{self.yes_label} (y)", variant="error", id="yes")
                yield Button("Cancel (n)", variant="primary", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)


class PathModal(ModalScreen[str | None]):
    """Ask for a path (or a name); dismisses with the text, or ``None`` on cancel."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, *, placeholder: str = "", value: str = "", ok_label: str = "OK") -> None:
        super().__init__()
        self.title_text = title
        self.placeholder = placeholder
        self.value = value
        self.ok_label = ok_label

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog"):
            yield Label(self.title_text, id="question")
            yield Input(value=self.value, placeholder=self.placeholder, id="path")
            with Horizontal(classes="buttons"):
                yield Button(f"{self.ok_label} (enter)", variant="primary", id="ok")
                yield Button("Cancel (esc)", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#path", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._finish(event.value)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "ok":
            self._finish(self.query_one("#path", Input).value)
        else:
            self.dismiss(None)

    def _finish(self, value: str) -> None:
        value = value.strip()
        if not value:
            self.notify("type a path first, or press esc to cancel", severity="warning")
            return
        self.dismiss(value)

    def action_cancel(self) -> None:
        self.dismiss(None)


def cell_width(cell: Any) -> int:
    """Terminal cells a DataTable cell needs: a rich ``Text``'s cell length, else ``str(cell)``'s."""
    from rich.cells import cell_len

    if isinstance(cell, Text):
        return max((cell_len(line) for line in cell.plain.splitlines()), default=0)
    return max((cell_len(line) for line in str(cell).splitlines()), default=0)


def fill_table(
    table: Any,
    columns: Sequence[str],
    rows: Sequence[tuple[str, Sequence[Any]]],
    *,
    max_widths: Mapping[str, int] | None = None,
) -> None:
    """Replace a DataTable's columns and rows; each column is exactly as wide as its widest cell.

    The widths are computed here from the cells (header included), so every model and patch
    name shows in full (``SmolLM2-135M-Instruct`` and ``SmolLM2-135M-Instruct-demo-v2`` differ
    on screen) and the layout does not depend on when DataTable measures on idle (snapshots).

    Args:
        table: The ``DataTable``.
        columns: Column labels, in order.
        rows: ``(row key, cells)`` per row; ``len(cells) == len(columns)``.
        max_widths: Label -> most cells for free-text columns (longer text is cut with "…" by
            DataTable); columns not named here are never cut.
    """
    caps = dict(max_widths or {})
    widths = [cell_width(c) for c in columns]
    for _key, cells in rows:
        for i, cell in enumerate(cells):
            widths[i] = max(widths[i], cell_width(cell))
    table.clear(columns=True)
    for label, width in zip(columns, widths, strict=True):
        table.add_column(label, width=min(width, caps.get(label, width)), key=label)
    for key, cells in rows:
        table.add_row(*cells, key=key)


def human(n: int | float | None) -> str:
    """Bytes as ``1.50 GiB`` (``n/a`` for ``None``)."""
    from portllm_edge.workflow.queries import format_size

    return format_size(n)


def short_human(n: int | float | None) -> str:
    """Bytes in at most 6 characters (``1.5G``, ``820M``, ``12K``) for table cells."""
    if n is None:
        return "n/a"
    value = float(abs(n))
    sign = "-" if n < 0 else ""
    for unit in ("B", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            if unit == "B":
                return f"{sign}{int(value)}B"
            return f"{sign}{value:.1f}{unit}" if value < 10 else f"{sign}{value:.0f}{unit}"
        value /= 1024
    return f"{sign}{value:.0f}T"  # pragma: no cover
