"""Dashboard: live memory bars (host RAM, each GPU, disk at the store), the budget, the memory
saved by porting (measured, latest per base) and recent runs.

The bars refresh on a timer while the screen is shown. Each refresh reads the
hardware in a thread worker through the injected reader (psutil, cgroup files and
NVML; never torch), so the UI thread never waits on a driver call.
"""

from __future__ import annotations

from typing import Any, ClassVar

from rich.console import Group
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.timer import Timer
from textual.widgets import DataTable, Static

from ..common import BaseScreen, fill_table, human, notify_error_from_thread
from ..messages import HardwareRead, RunsLoaded, SavingsLoaded

RECENT_COLUMNS = ("run", "kind", "status", "what")


def _bar_row(table: Table, label: str, used: int | None, total: int | None, note: str) -> None:
    if used is None or total is None or total <= 0:
        table.add_row(label, Text("n/a", style="dim"), note)
        return
    frac = used / total
    style = "red" if frac > 0.9 else "yellow" if frac > 0.7 else "green"
    bar = ProgressBar(total=float(total), completed=float(used), complete_style=style, finished_style=style)
    table.add_row(label, bar, f"{human(used)} / {human(total)}  {note}".rstrip())


def render_hardware(report: Any) -> Group:
    """Bars for host RAM, each GPU (or MIG slice) and the disk at the model store."""
    table = Table.grid(padding=(0, 1), expand=True)
    table.add_column("what", no_wrap=True, width=16)
    table.add_column("bar", ratio=1, min_width=10)
    table.add_column("numbers", no_wrap=True)
    host = report.host
    limit = f"(limit {host.limit_human()})" if host.limit_bytes is not None else ""
    _bar_row(table, "host RAM", host.total_bytes - host.available_bytes, host.total_bytes, limit)
    for gpu in report.gpus:
        label = f"GPU {gpu.nvml_index}" + (f" MIG {gpu.mig_index}" if gpu.is_mig else "")
        note = (gpu.name or "")[:22]
        _bar_row(table, label, gpu.used_bytes, gpu.total_bytes, note)
    disk = report.disk
    used_disk = (
        None if disk.total_bytes is None or disk.free_bytes is None else disk.total_bytes - disk.free_bytes
    )
    _bar_row(table, "disk (store)", used_disk, disk.total_bytes, "")
    parts: list[Any] = [table]
    if not report.gpus:
        why = report.nvml_status if report.nvml_status != "ok" else "no GPU found"
        parts.append(Text(f"No NVIDIA GPU: {why}. Plans use host RAM.", style="dim"))
    for note in report.notes:
        parts.append(Text(note, style="dim"))
    return Group(*parts)


def render_savings(savings: list[Any]) -> Text:
    """One line per base: the latest port peak against a LoRA fine-tune, both measured in workers.

    ``SmolLM2-135M-Instruct-demo-v2  port + eval (bf16) 1.05 GiB vs LoRA fine-tune (bf16) 1.14 GiB: saved …``;
    the run is in the Recent runs table and on the Runs screen.
    """
    if not savings:
        return Text(
            "No measured saving yet. Port a patch, then measure its fine-tune baseline "
            "(ctrl+r on the Port screen, or `portllm-edge bench`).",
            style="dim",
        )
    width = max(len(m.base) for m in savings)
    text = Text()
    for i, m in enumerate(savings):
        style = "bold green" if m.saved_bytes > 0 else "bold yellow"
        ratio = f" ({m.ratio:.2f}× less)" if m.ratio and m.saved_bytes > 0 else ""
        text.append(("\n" if i else "") + f"{m.base:<{width}}  ", style="bold")
        text.append(f"{m.port_label} {human(m.port_bytes)} vs {m.finetune_label} {human(m.finetune_bytes)}: ")
        text.append(f"saved {human(m.saved_bytes)}{ratio}", style=style)
    return text


def render_budget(budget: Any) -> Text:
    """The budget a job may use: device, available, usable after headroom."""
    if budget is None:
        return Text("no budget (see the error notification)", style="dim")
    kept = budget.available_bytes - budget.usable_bytes
    text = Text()
    text.append(f"{budget.name}", style="bold")
    text.append(f"  [{budget.device}, {budget.source}]\n")
    text.append(f"total {human(budget.total_bytes)}   available {human(budget.available_bytes)}   ")
    text.append(f"usable {human(budget.usable_bytes)}", style="bold green")
    text.append(f"   headroom {budget.headroom_fraction:.0%} ({human(kept)})")
    return text


class DashboardScreen(BaseScreen):
    """Memory, budget and the most recent runs."""

    MODE = "dashboard"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("g", "refresh", "Refresh"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._timer: Timer | None = None
        self.report: Any = None
        self.budget: Any = None
        self._recent_lines: list[tuple[str, list[Any]]] = []

    def compose_body(self) -> ComposeResult:
        with Vertical(id="dash"):
            hw = Static("reading memory ...", id="hardware", classes="panel")
            hw.border_title = "Memory"
            yield hw
            bud = Static("computing budget ...", id="budget", classes="panel")
            bud.border_title = "Budget"
            yield bud
            sav = Static("reading the run history ...", id="savings", classes="panel")
            sav.border_title = "Memory saved by porting (measured, latest per base)"
            yield sav
            runs: DataTable[Any] = DataTable(
                id="recent", classes="panel main", cursor_type="row", zebra_stripes=True
            )
            runs.border_title = "Recent runs"
            yield runs

    def on_mount(self) -> None:
        fill_table(self.query_one("#recent", DataTable), RECENT_COLUMNS, [])
        refresh = self.papp.deps.refresh_seconds
        if refresh:
            self._timer = self.set_interval(refresh, self.read_hardware, pause=False)

    def on_screen_resume(self) -> None:
        self.action_refresh()
        if self._timer is not None:
            self._timer.resume()

    def on_screen_suspend(self) -> None:
        if self._timer is not None:
            self._timer.pause()

    def action_refresh(self) -> None:
        """Re-read memory and the run history."""
        self.read_hardware()
        self.load_runs()

    def palette_commands(self) -> list[tuple[str, str, Any]]:
        return [("Refresh dashboard", "Re-read memory and recent runs", self.action_refresh)]

    @work(thread=True, exclusive=True, group="hardware")
    def read_hardware(self) -> None:
        """Read memory (no torch) and derive the budget; posts :class:`HardwareRead`."""
        deps = self.papp.deps
        try:
            report = deps.read_hardware()
        except Exception as exc:
            notify_error_from_thread(self.app, exc)
            return
        try:
            budget = deps.budget(report)
        except Exception as exc:
            notify_error_from_thread(self.app, exc)
            budget = None
        self.post_message(HardwareRead(report, budget))

    @work(thread=True, exclusive=True, group="dashboard-runs")
    def load_runs(self) -> None:
        """Read the ten most recent runs and the latest measured saving per base.

        Posts :class:`RunsLoaded` and :class:`SavingsLoaded`.
        """
        from portllm_edge.workflow.queries import latest_savings, list_runs

        try:
            runs = list_runs(limit=200)
            savings = latest_savings([r for r in runs if r.kind in ("bench", "port")])
        except Exception as exc:
            notify_error_from_thread(self.app, exc)
            return
        self.post_message(RunsLoaded(runs[:10]))
        self.post_message(SavingsLoaded(savings))

    def _fill_recent(self) -> None:
        """Fill Recent runs with the "what" column cut ("…") to the width left by the others.

        The table then never scrolls sideways: a horizontal scrollbar's partial thumb cell
        showed as a stray block glyph (``▌``) under the table.
        """
        table = self.query_one("#recent", DataTable)
        if not self._recent_lines:
            return
        from ..common import cell_width

        others = [
            max(cell_width(label), *(cell_width(cells[i]) for _key, cells in self._recent_lines))
            for i, label in enumerate(RECENT_COLUMNS[:-1])
        ]
        pad = 2 * table.cell_padding
        # the content width without a vertical scrollbar, which more rows than fit will add
        bar = table.styles.scrollbar_size_vertical if not table.show_vertical_scrollbar else 0
        room = table.scrollable_content_region.width - bar - sum(w + pad for w in others) - pad
        fill_table(table, RECENT_COLUMNS, self._recent_lines, max_widths={"what": max(12, min(room, 70))})

    def on_resize(self) -> None:
        self._fill_recent()

    def on_savings_loaded(self, message: SavingsLoaded) -> None:
        self.query_one("#savings", Static).update(render_savings(message.savings))

    def on_hardware_read(self, message: HardwareRead) -> None:
        self.report, self.budget = message.report, message.budget
        self.query_one("#hardware", Static).update(render_hardware(message.report))
        self.query_one("#budget", Static).update(render_budget(message.budget))

    def on_runs_loaded(self, message: RunsLoaded) -> None:
        from portllm_edge.workflow.queries import describe_run

        lines: list[tuple[str, list[Any]]] = []
        for run in message.runs:
            try:
                what = describe_run(run.kind, run.inputs, run.results)
            except Exception:
                what = ""
            lines.append((run.id, [run.id, run.kind, run.status, what]))
        if not message.runs:
            lines.append(("-", ["no runs yet", "", "", "port a patch (key 4) and it shows here"]))
        self._recent_lines = lines
        self._fill_recent()
        table = self.query_one("#recent", DataTable)
        if not message.runs:
            table.border_subtitle = "no runs yet"
        else:
            table.border_subtitle = f"{len(message.runs)} most recent (5 for all)"
