"""Runs and reports: the run history, one run's details, a terminal chart, and "write report".

The chart is drawn with block characters in a Static (see :func:`render_chart`):
accuracy per configuration for eval/compare runs, measured memory peaks
for bench runs, and wall time per phase for port and train runs. A compare run against a
version of an update chain also gets its patch-health chart (:func:`health_chart`: recovered
gain per version with its interval, from :func:`portllm_edge.history.health.patch_health`,
the function the report's ``patch_health.png`` is drawn from); ``h`` shows every lineage's. "Write report"
calls :func:`portllm_edge.reports.report_runs` on the listed runs (Markdown, JSON,
PNG charts: the same files as the CLI's ``report``) in a thread worker.
"""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any, ClassVar

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, Static

from ..common import BaseScreen, PathModal, fill_table, human, notify_error_from_thread
from ..messages import RunsLoaded

RUN_COLUMNS = ("run", "kind", "status", "started (UTC)", "what")


def chart_series(run: Any) -> list[tuple[str, list[str], list[float]]]:
    """(title, labels, values) of each chart for a run: accuracy, measured peaks, seconds per phase.

    Accuracy and peaks come from :func:`portllm_edge.reports.build_report`, so the charts show
    the same numbers as a written report; phase times from the run's ``results["phases"]``.
    """
    from portllm_edge.workflow.queries import build_report

    rep = build_report([run], generated_at="-")
    out: list[tuple[str, list[str], list[float]]] = []
    if rep.accuracy:
        out.append(
            (
                "accuracy",
                [f"{a.task} {a.config}"[:28] for a in rep.accuracy],
                [round(a.accuracy, 4) for a in rep.accuracy],
            )
        )
    if rep.memory:
        out.append(
            (
                "measured peak, MiB",
                [m.label[:28] for m in rep.memory],
                [round(m.peak_bytes / 2**20, 1) for m in rep.memory],
            )
        )
    phases = run.results.get("phases") if isinstance(run.results, dict) else None
    if isinstance(phases, dict) and phases:
        known = ("check", "load", "attach", "evaluate", "save", "merge")
        keys = sorted(phases, key=lambda k: (known.index(k) if k in known else len(known), str(k)))
        items = [(str(k), float(phases[k])) for k in keys if isinstance(phases[k], (int, float))]
        out.append(("seconds per phase", [k for k, _ in items], [round(v, 2) for _, v in items]))
    return out


def bar_chart(title: str, labels: list[str], values: list[float], width: int) -> Text:
    """Horizontal bars drawn with block characters, scaled to the largest value, ``width`` cells wide."""
    text = Text(title + "\n", style="bold")
    label_w = min(max(len(x) for x in labels), max(8, width // 2))  # "LoRA fine-tune (bf16)" whole
    value_strs = [f"{v:g}" for v in values]
    value_w = max(len(v) for v in value_strs)
    bar_w = max(4, width - label_w - value_w - 3)
    top = max(values) if values and max(values) > 0 else 1.0
    for label, value, vs in zip(labels, values, value_strs, strict=True):
        cells = value / top * bar_w
        full = int(cells)
        part = " ▏▎▍▌▋▊▉"[int((cells - full) * 8)] if full < bar_w else ""
        text.append(f"{label[:label_w]:<{label_w}} ")
        text.append(("█" * full + part.strip()).ljust(bar_w), style="cyan")
        text.append(f" {vs:>{value_w}}\n")
    return text


def render_chart(run: Any, width: int) -> Text:
    """Bar charts of :func:`chart_series` for ``run``, ``width`` cells wide.

    Drawn with rich text rather than plotext: plotext 6 dropped the module-level ``bar``/``build``
    API, and block characters need no global plotting state (workers and tests stay independent).
    """
    series = chart_series(run)
    if not series:
        return Text("nothing to chart for this run", style="dim")
    text = Text()
    for title, labels, values in series:
        text.append_text(bar_chart(title, labels, values, width))
    return text


HEALTH_AXIS = (-0.5, 2.0)
"""The health chart's axis is clipped to -50 % .. 200 %, as the report's chart is."""


def health_chart(series: Any, width: int) -> Text:
    """One lineage's recovered gain per version (``●``) with its 95 % paired interval (``├──┤``).

    Args:
        series: a :class:`~portllm_edge.history.health.PatchHealth`.
        width: cells available.

    The axis spans 0 % to 100 % at least (``┆`` marks 100 %: the whole gain kept), widened to the
    intervals within :data:`HEALTH_AXIS`; a value beyond it is drawn at the edge.
    """
    text = Text(f"patch health: {series.label}\n", style="bold")
    text.append("recovered gain per version, 95% paired bootstrap interval\n", style="dim")
    values = [v for p in series.points for v in (p.recovered_gain, p.low, p.high) if v is not None]
    lo = max(HEALTH_AXIS[0], min([0.0, *values]))
    hi = min(HEALTH_AXIS[1], max([1.0, *values]))
    label_w = max(len(p.version) for p in series.points)
    cols = [
        f"{p.recovered_gain:.0%}"
        + (f" [{p.low:.0%}, {p.high:.0%}]" if p.low is not None and p.high is not None else "")
        for p in series.points
    ]
    value_w = max(len(c) for c in cols)
    axis_w = max(10, width - label_w - value_w - 3)

    def cell(v: float) -> int:
        return round((min(max(v, lo), hi) - lo) / (hi - lo) * (axis_w - 1))

    for p, col in zip(series.points, cols, strict=True):
        row = [" "] * axis_w
        row[cell(1.0)] = "┆"
        if p.low is not None and p.high is not None:
            a, b = cell(p.low), cell(p.high)
            for i in range(a, b + 1):
                row[i] = "─"
            row[a], row[b] = "├", "┤"
        row[cell(p.recovered_gain)] = "●"
        text.append(f"{p.version:<{label_w}} ")
        text.append("".join(row), style="cyan")
        text.append(f" {col:>{value_w}}\n")
    scale = [" "] * axis_w
    for v, mark in ((0.0, "0%"), (1.0, "100%")):
        at = min(cell(v), axis_w - len(mark))
        scale[at : at + len(mark)] = list(mark)
    text.append(" " * (label_w + 1) + "".join(scale) + "\n", style="dim")
    return text


def run_health(run: Any, runs: Any) -> list[Any]:
    """The patch-health series ``run`` is a point of (a compare run against a chain version), or none."""
    from portllm_edge.workflow.queries import patch_health

    if run.kind != "compare":
        return []
    lineage = ((run.results or {}).get("extras") or {}).get("lineage")
    if not isinstance(lineage, dict):
        return []
    return [s for s in patch_health(runs) if any(p.run_id == run.id for p in s.points)]


def paired_lines(results: dict[str, Any]) -> list[str]:
    """A compare run's paired statistics (recovered gain interval, McNemar, paired differences), or none."""
    from portllm_edge.workflow.queries import PortStatistics

    raw = results.get("paired")
    if not isinstance(raw, dict):
        return []
    try:
        return PortStatistics.from_dict(raw).lines()
    except (KeyError, TypeError):
        return []


def render_run(run: Any) -> Group:
    """A run's details: id, status, time, inputs, the key results, versions."""
    from portllm_edge.workflow.queries import describe_run

    head = Text()
    head.append(run.id, style="bold")
    head.append(f"  {run.kind}  {run.status}")
    secs = run.seconds
    head.append(f"  started {run.started_at[:19]}" + (f"  {secs:.1f} s" if secs is not None else "") + "\n")
    what = describe_run(run.kind, run.inputs, run.results)
    if what:
        head.append(what + "\n", style="dim")
    table = Table(box=None, padding=(0, 1), show_header=False)
    table.add_column("key", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for key, value in run.inputs.items():
        if value not in (None, "", [], {}):
            table.add_row(key, str(value))
    results = run.results or {}
    attach = results.get("attach")
    if isinstance(attach, dict) and "matched_tensors" in attach:
        table.add_row("tensors", f"{attach['matched_tensors']}/{attach['total_tensors']} matched")
    for key in ("accuracy", "n", "ported_name", "precision"):
        if results.get(key) is not None and results.get(key) != run.inputs.get(key):
            table.add_row(key, str(results[key]))
    if results.get("peak_bytes") and results.get("metric"):  # measured in a worker process
        table.add_row(f"peak ({results['metric']})", human(results["peak_bytes"]))
    for key in ("peak_rss_bytes", "cuda_max_reserved_bytes"):  # records made before the workflow layer
        if results.get(key):
            table.add_row(key.replace("_bytes", ""), human(results[key]))
    if isinstance(results.get("evaluation"), dict):
        e = results["evaluation"]
        table.add_row("evaluation", f"{e.get('task')}: accuracy {e.get('accuracy')} (n={e.get('n')})")
    for line in paired_lines(results):
        table.add_row("paired", line)
    versions = ", ".join(f"{k} {v}" for k, v in (run.versions or {}).items() if v)
    if versions:
        table.add_row("versions", versions)
    return Group(head, table)


class RunsScreen(BaseScreen):
    """Run history, details, chart, report."""

    MODE = "runs"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("w", "write_report", "Write report"),
        Binding("j", "show_json", "JSON"),
        Binding("g", "refresh", "Refresh"),
        Binding("h", "show_health", "Patch health"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.runs: dict[str, Any] = {}
        self.order: list[str] = []

    def compose_body(self) -> ComposeResult:
        with Vertical(id="runs-body"):
            table: DataTable[Any] = DataTable(
                id="runs", classes="panel main", cursor_type="row", zebra_stripes=True
            )
            table.border_title = "Run history"
            yield table
            with Horizontal(id="runs-lower"):
                with VerticalScroll(id="run-details-box", classes="panel") as box:
                    box.border_title = "Details"
                    yield Static("no run selected", id="run-details")
                chart = Static("", id="run-chart", classes="panel")
                chart.border_title = "Chart"
                yield chart

    def on_mount(self) -> None:
        fill_table(self.query_one("#runs", DataTable), RUN_COLUMNS, [])

    def on_screen_resume(self) -> None:
        self.action_refresh()

    def palette_commands(self) -> list[tuple[str, str, Any]]:
        return [
            ("Write report", "Markdown, JSON and PNG charts of the listed runs", self.action_write_report),
            ("Show run JSON", "The selected run's full record", self.action_show_json),
            ("Refresh runs", "Re-read the run history", self.action_refresh),
            (
                "Show patch health",
                "Recovered gain per version of every update chain a patch was compared on",
                self.action_show_health,
            ),
        ]

    def action_refresh(self) -> None:
        self.load()

    @work(thread=True, exclusive=True, group="runs")
    def load(self) -> None:
        """Read the 100 most recent runs; posts :class:`RunsLoaded`."""
        from portllm_edge.workflow.queries import list_runs

        try:
            runs = list_runs(limit=100)
        except Exception as exc:
            notify_error_from_thread(self.app, exc)
            return
        self.post_message(RunsLoaded(runs))

    def on_runs_loaded(self, message: RunsLoaded) -> None:
        from portllm_edge.workflow.queries import describe_run

        table = self.query_one("#runs", DataTable)
        self.runs = {r.id: r for r in message.runs}
        self.order = [r.id for r in message.runs]
        lines: list[tuple[str, list[Any]]] = []
        for r in message.runs:
            try:
                what = describe_run(r.kind, r.inputs, r.results)
            except Exception:
                what = ""
            lines.append((r.id, [r.id, r.kind, r.status, r.started_at[:19].replace("T", " "), what]))
        fill_table(table, RUN_COLUMNS, lines, max_widths={"what": 70})
        n = len(message.runs)
        table.border_subtitle = (f"{n} run" + ("s" if n != 1 else "")) if n else "no runs yet"
        if not message.runs:
            self.query_one("#run-details", Static).update(
                "No runs recorded yet. Port a patch (4) or run `portllm-edge eval` to record one."
            )
            self.query_one("#run-chart", Static).update("")
        else:
            self._show(self.order[0])

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is not None and event.row_key.value is not None:
            self._show(event.row_key.value)

    @property
    def selected(self) -> str | None:
        table = self.query_one("#runs", DataTable)
        if table.row_count == 0:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    def _show(self, run_id: str) -> None:
        run = self.runs.get(run_id)
        if run is None:
            return
        self.query_one("#run-details", Static).update(render_run(run))
        chart = self.query_one("#run-chart", Static)
        size = chart.content_size
        try:
            text = render_chart(run, size.width or 40)
            for series in run_health(run, self.runs.values()):
                text.append_text(health_chart(series, size.width or 40))
            chart.update(text)
        except Exception as exc:  # a chart is a nicety; a bad record must not break the screen
            chart.update(Text(f"no chart: {exc}", style="dim"))

    def action_show_health(self) -> None:
        """Every patch-health series of the listed runs in the chart panel (``h``)."""
        from portllm_edge.workflow.queries import patch_health

        chart = self.query_one("#run-chart", Static)
        series = patch_health(self.runs.values())
        if not series:
            chart.update(
                Text(
                    "No patch health yet: compare a patch against the versions of an update chain "
                    "(`simulate-update --chain`, then `compare` per version).",
                    style="dim",
                )
            )
            return
        text = Text()
        for s in series:
            text.append_text(health_chart(s, chart.content_size.width or 40))
        chart.update(text)

    def on_resize(self) -> None:
        if self.selected:
            self._show(self.selected)

    def action_show_json(self) -> None:
        run_id = self.selected
        if run_id is None:
            self.notify("no run selected", severity="warning")
            return
        text = json.dumps(self.runs[run_id].to_dict(), indent=2, default=str)
        self.query_one("#run-details", Static).update(Text(text))

    def action_write_report(self) -> None:
        if not self.order:
            self.notify("no runs to report on yet", severity="warning")
            return
        default = self.papp.deps.report_dir
        if default is None:
            from datetime import datetime

            from portllm_edge.workflow.queries import paths

            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
            default = str(paths.home() / "reports" / f"report-{stamp}")

        def done(dest: str | None) -> None:
            if dest:
                from portllm_edge.workflow.queries import select_report_runs

                runs, left_out = select_report_runs([self.runs[i] for i in self.order])
                self.write_report([r.id for r in runs], dest, left_out)

        self.app.push_screen(
            PathModal("Write a report of the listed runs to this folder", value=default, ok_label="Write"),
            done,
        )

    @work(thread=True, exclusive=True, group="runs-report")
    def write_report(self, run_ids: list[str], dest: str, left_out: list[str] | None = None) -> None:
        """Write the report through :func:`portllm_edge.reports.report_runs`, as the CLI's ``report`` does.

        The same files as the CLI (planner estimates, the budget section with this machine's row
        first, every chart); matplotlib is imported here, in the worker.
        """
        from portllm_edge.workflow.queries import report_runs

        try:
            runs = [self.runs[i] for i in run_ids]
            try:
                machine = self.papp.deps.budget()
            except Exception:  # the budget section then lists the catalogue's profiles only
                machine = None
            written = report_runs(runs, dest, machine=machine, left_out=left_out or ())
        except Exception as exc:
            notify_error_from_thread(self.app, exc)
            return
        self.app.call_from_thread(
            self.notify,
            f"{len(runs)} runs, {len(written.paths)} files in {dest}"
            + "".join(f"\n{w}" for w in (*(left_out or ()), *written.warnings)),
            title="Report written",
            markup=False,
        )
