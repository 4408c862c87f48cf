"""Patches: the local patch store as a table, a details pane, and verify / export / remove.

Removing asks for confirmation. Export asks for a format -- ``peft`` (the adapter folder
with its manifest), ``vllm`` (a folder for ``vllm serve --enable-lora``) or ``gguf-lora``
(a llama.cpp LoRA ``.gguf``), as ``patch export --format`` -- and a destination. Verify
(sha256 of every file), export and remove run in thread workers; their outcome is a
notification and a refreshed table.
"""

from __future__ import annotations

from typing import Any, ClassVar

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Input, Label, Select, Static

from ..common import BaseScreen, ConfirmModal, fill_table, human, notify_error_from_thread
from ..messages import PatchesLoaded

PATCH_COLUMNS = ("name", "source base", "lineage", "task", "r", "size")
"""The patch table's columns; names and bases show in full (``…-demo-v2`` keeps its "2")."""


def lineage_text(manifest: Any) -> str:
    """``import → port``: each lineage step's kind (the bases are in the details pane and the
    ``source base`` column, which is the last port's base)."""
    return " → ".join(entry.kind for entry in manifest.lineage) or "-"


def render_details(manifest: Any, size: int | None) -> Group:
    """Everything the manifest says: source base, adapter shape, files, lineage."""
    head = Text()
    head.append(manifest.name, style="bold")
    head.append(f"   task {manifest.task or '-'}   created {manifest.created_at:%Y-%m-%d %H:%M} UTC")
    head.append(f"   {human(size)}\n" if size is not None else "\n")
    sb = manifest.source_base
    head.append("source base: ", style="bold")
    head.append(f"{sb.id or 'unknown'} ({sb.model_type or '?'}), fingerprint {sb.fingerprint or 'n/a'}\n")
    ad = manifest.adapter
    targets = ad.target_modules if isinstance(ad.target_modules, str) else ", ".join(ad.target_modules)
    head.append("adapter: ", style="bold")
    head.append(
        f"{ad.peft_type} r={ad.r} alpha={ad.lora_alpha:g} (scale {ad.lora_alpha / ad.r:g}) on {targets}"
        + (f"; modules_to_save {', '.join(ad.modules_to_save)}" if ad.modules_to_save else "")
        + ("; DoRA" if ad.use_dora else "")
    )
    files = Table(box=None, padding=(0, 1), show_header=True, header_style="bold")
    files.add_column("file")
    files.add_column("sha256")
    for rel, digest in sorted(manifest.files.items()):
        files.add_row(rel, digest[:16] + "…")
    lin = Table(box=None, padding=(0, 1), show_header=True, header_style="bold")
    lin.add_column("step")
    lin.add_column("when (UTC)")
    lin.add_column("base")
    lin.add_column("precision")
    lin.add_column("note", overflow="fold")
    for e in manifest.lineage:
        lin.add_row(
            e.kind,
            f"{e.at:%Y-%m-%d %H:%M}",
            (e.base_id or "-")[-40:],
            e.precision or "-",
            e.note or (e.run_id or ""),
        )
    return Group(head, Text(""), files, Text(""), lin)


def export_destination(name: str, fmt: str) -> str:
    """The destination the Export dialog offers: a folder, or a ``.gguf`` file for ``gguf-lora``."""
    stem = f"./{name.replace('@', '-')}"
    return f"{stem}.gguf" if fmt == "gguf-lora" else f"{stem}-{fmt}"


class ExportModal(ModalScreen[tuple[str, str] | None]):
    """Ask for the export format and destination; dismisses with ``(format, path)`` or ``None``."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, name: str, formats: tuple[str, ...]) -> None:
        super().__init__()
        self.patch = name
        self.formats = formats

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog"):
            yield Label(
                f"Export '{self.patch}' for serving: peft (adapter + manifest), vllm (a folder for "
                "`vllm serve --enable-lora`) or gguf-lora (a llama.cpp LoRA .gguf)",
                id="question",
                markup=False,
            )
            yield Select(
                [(f, f) for f in self.formats], value=self.formats[0], allow_blank=False, id="export-format"
            )
            yield Input(value=export_destination(self.patch, self.formats[0]), id="path")
            with Horizontal(classes="buttons"):
                yield Button("Export (enter)", variant="primary", id="ok")
                yield Button("Cancel (esc)", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#path", Input).focus()

    def on_select_changed(self, event: Select.Changed) -> None:
        path = self.query_one("#path", Input)
        offered = {export_destination(self.patch, f) for f in self.formats}
        if path.value in offered:  # the user has not typed a destination of their own
            path.value = export_destination(self.patch, str(event.value))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._finish()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "ok":
            self._finish()
        else:
            self.dismiss(None)

    def _finish(self) -> None:
        dest = self.query_one("#path", Input).value.strip()
        if not dest:
            self.notify("type a destination first, or press esc to cancel", severity="warning")
            return
        self.dismiss((str(self.query_one("#export-format", Select).value), dest))

    def action_cancel(self) -> None:
        self.dismiss(None)


def _entry_size(path: Any) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


class PatchesScreen(BaseScreen):
    """The patch store."""

    MODE = "patches"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("v", "verify", "Verify"),
        Binding("e", "export", "Export"),
        Binding("x,delete", "remove", "Remove"),
        Binding("g", "refresh", "Refresh"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.manifests: dict[str, Any] = {}
        self.sizes: dict[str, int] = {}

    def compose_body(self) -> ComposeResult:
        with Vertical(id="patches-body"):
            table: DataTable[Any] = DataTable(
                id="patches", classes="panel main", cursor_type="row", zebra_stripes=True
            )
            table.border_title = "Patch store"
            yield table
            with VerticalScroll(id="patch-details-box", classes="panel") as box:
                box.border_title = "Details"
                yield Static("no patch selected", id="patch-details")

    def on_mount(self) -> None:
        fill_table(self.query_one("#patches", DataTable), PATCH_COLUMNS, [])

    def on_screen_resume(self) -> None:
        self.action_refresh()

    def palette_commands(self) -> list[tuple[str, str, Any]]:
        return [
            ("Verify patch", "Check every file's sha256 against the manifest", self.action_verify),
            ("Export patch", "Export the selected patch as peft, vllm or gguf-lora", self.action_export),
            ("Remove patch", "Delete the selected patch (asks first)", self.action_remove),
            ("Refresh patches", "Re-read the patch store", self.action_refresh),
        ]

    @property
    def selected(self) -> str | None:
        """Name of the highlighted patch, or ``None``."""
        table = self.query_one("#patches", DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        return key.value if key is not None else None

    def action_refresh(self) -> None:
        self.load()

    @work(thread=True, exclusive=True, group="patches")
    def load(self) -> None:
        """Read the store's manifests and sizes; posts :class:`PatchesLoaded`."""
        from portllm_edge.workflow.queries import PatchStore

        try:
            store = PatchStore()
            manifests = store.list()
            sizes = {m.name: _entry_size(store.path_of(m.name)) for m in manifests}
        except Exception as exc:
            notify_error_from_thread(self.app, exc)
            return
        self.post_message(PatchesLoaded(manifests, sizes))

    def on_patches_loaded(self, message: PatchesLoaded) -> None:
        table: DataTable[Any] = self.query_one("#patches", DataTable)
        previous = self.selected
        self.manifests = {m.name: m for m in message.patches}
        self.sizes = message.sizes
        lines: list[tuple[str, list[Any]]] = []
        for m in message.patches:
            base = (m.source_base.id or "unknown").rstrip("/").rsplit("/", 1)[-1]
            lines.append(
                (
                    m.name,
                    [
                        m.name,
                        base,
                        lineage_text(m),
                        m.task or "-",
                        str(m.adapter.r),
                        human(message.sizes.get(m.name)),
                    ],
                )
            )
        fill_table(table, PATCH_COLUMNS, lines)
        table.border_subtitle = (
            (f"{len(message.patches)} patch" + ("es" if len(message.patches) != 1 else ""))
            if message.patches
            else "empty: `portllm-edge patch import DIR`"
        )
        if previous in self.manifests:
            table.move_cursor(row=table.get_row_index(previous))
        self._show(self.selected)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is not None:
            self._show(event.row_key.value)

    def _show(self, name: str | None) -> None:
        details = self.query_one("#patch-details", Static)
        if not self.manifests:
            details.update(
                "The patch store is empty. Add a LoRA adapter folder with "
                "`portllm-edge patch import DIR --name NAME`, then press g to refresh."
            )
            return
        if name is None or name not in self.manifests:
            details.update("no patch selected")
            return
        details.update(render_details(self.manifests[name], self.sizes.get(name)))

    def _need_selection(self) -> str | None:
        name = self.selected
        if name is None:
            self.notify("the store is empty: nothing selected", severity="warning")
        return name

    def action_verify(self) -> None:
        name = self._need_selection()
        if name:
            self.verify(name)

    @work(thread=True, exclusive=True, group="patches-action")
    def verify(self, name: str) -> None:
        """Check every file's sha256; a notification says ok or lists the problems."""
        from portllm_edge.workflow.queries import PatchStore

        try:
            results = PatchStore().verify(name)
        except Exception as exc:
            notify_error_from_thread(self.app, exc)
            return
        res = results[0]
        if res.ok:
            self.app.call_from_thread(
                self.notify, f"{name}: every checksum matches", title="Verified", markup=False
            )
        else:
            self.app.call_from_thread(
                self.notify,
                f"{name}: " + "; ".join(res.problems),
                title="Verify failed",
                severity="error",
                timeout=12,
                markup=False,
            )

    def action_export(self) -> None:
        name = self._need_selection()
        if not name:
            return
        from portllm_edge.workflow.queries import EXPORT_FORMATS

        def done(answer: tuple[str, str] | None) -> None:
            if answer:
                self.export(name, *answer)

        self.app.push_screen(ExportModal(name, tuple(EXPORT_FORMATS)), done)

    @work(thread=True, exclusive=True, group="patches-action")
    def export(self, name: str, fmt: str, dest: str) -> None:
        """Export the patch as ``fmt`` to ``dest`` (the serving check runs first), as ``patch export``."""
        from portllm_edge.workflow.queries import export_for_serving

        try:
            res = export_for_serving(name, fmt, dest)
        except Exception as exc:
            notify_error_from_thread(self.app, exc)
            return
        self.app.call_from_thread(
            self.notify,
            f"{name} exported as {fmt} to {res.out.resolve()}\nserve with: {res.serve_command}",
            title="Exported",
            markup=False,
        )

    def action_remove(self) -> None:
        name = self._need_selection()
        if not name:
            return

        def done(yes: bool | None) -> None:
            if yes:
                self.remove_patch(name)

        self.app.push_screen(
            ConfirmModal(f"Remove the patch '{name}' from the store? This cannot be undone."), done
        )

    @work(thread=True, exclusive=True, group="patches-action")
    def remove_patch(self, name: str) -> None:
        """Delete the patch, then refresh the table."""
        from portllm_edge.workflow.queries import PatchStore

        try:
            PatchStore().remove(name)
        except Exception as exc:
            notify_error_from_thread(self.app, exc)
            return
        self.app.call_from_thread(self.notify, f"removed {name}", title="Patch store", markup=False)
        self.app.call_from_thread(self.load)
