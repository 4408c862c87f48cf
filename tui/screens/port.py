"""Port: choose a patch, a target base and a precision, run the preflight, port, read the summary.

The precision list is preselected with the planner's best fitting precision for
the chosen base on this machine (``plan_model(...).best``). "Check" runs the
preflight (configs and safetensors headers only) and lists every check with its
reason; failed checks also raise a notification with the fix. "Port" runs
:func:`portllm_edge.workflow.port` in a thread worker; each phase
(check, load, attach, evaluate, save) shows as it starts.

Cancelling is cooperative: the worker's ``on_phase`` callback raises
:class:`PortCancelled` at the next phase boundary (a phase already running, such
as loading the base, finishes first; the load itself runs in a worker process,
which is killed). The port then removes its work folder, stores nothing, and is
recorded as interrupted.

The summary compares the peak measured in the port's worker process with a LoRA
fine-tune of the new base -- measured, when the run history has one, else the
planner's estimate, labelled so -- the baseline PortLLM saves (Khan et al., ICLR 2025).
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, DataTable, Input, Label, ProgressBar, Select, Static

from portllm_edge.history import RunCancelled

from ..common import BaseScreen, human, notify_error_from_thread
from ..messages import (
    PortFinished,
    PortOptionsLoaded,
    PortPhase,
    PortStopped,
    PrecisionPicked,
    PreflightDone,
)

if TYPE_CHECKING:
    from portllm_edge.workflow import PortOutcome

PORT_PRECISIONS = ("nf4", "int8", "bf16", "fp32")
"""Precisions a port loads a base at (and the planner is asked about)."""

PHASES = ("check", "load", "attach", "evaluate", "save")


class PortCancelled(RunCancelled):
    """Raised by the ``on_phase`` callback when the user cancelled; ends the port early (recorded as interrupted)."""


@dataclass(frozen=True)
class PortSummary:
    """What the Port screen shows after a port.

    Attributes:
        patch / base / ported_name / run_id / precision: What was ported where, and the records.
        matched_tensors / total_tensors: Patch tensors loaded into the base with equal values.
        max_abs_logit_change: max |logits(base+patch) − logits(base)| on a probe text.
        finite: Probe logits all finite.
        phases: Seconds per phase.
        evaluation: ``{"task", "n", "accuracy", "ci_low", "ci_high", ...}`` or ``None``.
        peak_bytes: Measured peak (CUDA max reserved on a GPU, else the process's peak RSS).
        peak_metric: What ``peak_bytes`` is.
        port_estimate_bytes: The planner's estimate of this port's peak, or ``None``.
        baseline_bytes: The planner's LoRA fine-tune peak of the new base (same r and targets),
            or ``None`` when the base can't be sized.
        baseline_label: How the baseline was computed.
    """

    patch: str
    base: str
    ported_name: str | None
    run_id: str | None
    precision: str
    matched_tensors: int
    total_tensors: int
    max_abs_logit_change: float
    finite: bool
    phases: dict[str, float]
    evaluation: dict[str, Any] | None
    peak_bytes: int
    peak_metric: str
    port_estimate_bytes: int | None
    baseline_bytes: int | None
    baseline_label: str
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def saving_bytes(self) -> int | None:
        """``baseline − measured peak`` (negative when the port measured more), or ``None``."""
        return None if self.baseline_bytes is None else self.baseline_bytes - self.peak_bytes

    @property
    def ratio(self) -> float | None:
        """``baseline / measured peak``: how many times less memory the port needed."""
        if self.baseline_bytes is None or self.peak_bytes <= 0:
            return None
        return self.baseline_bytes / self.peak_bytes


def summarize_port(result: PortOutcome, patch: str, base: str) -> PortSummary:
    """Turn a :class:`~portllm_edge.workflow.PortOutcome` into what the screen shows.

    The peak is the one measured in the port's own worker process (never this app's); the
    baseline is a fine-tune measured for the same base when the run history has one, else
    the planner's estimate, labelled as such (:class:`~portllm_edge.workflow.Saving`).
    """
    a, mem, saving = result.attach, result.memory, result.saving
    notes: list[str] = []
    if saving is not None and saving.baseline_source == "estimate":
        notes.append("the baseline is an estimate; `portllm-edge bench` measures a fine-tune of this base")
    return PortSummary(
        patch=patch,
        base=base,
        ported_name=result.ported_name,
        run_id=result.run_id,
        precision=result.precision,
        matched_tensors=a.matched_tensors,
        total_tensors=a.total_tensors,
        max_abs_logit_change=a.max_abs_logit_change,
        finite=a.finite,
        phases=dict(result.phases),
        evaluation=None if result.evaluation is None else asdict(result.evaluation),
        peak_bytes=mem.peak_bytes if mem else 0,
        peak_metric=f"{mem.metric}, measured in a worker process" if mem else "not measured",
        port_estimate_bytes=saving.port_estimate_bytes if saving else None,
        baseline_bytes=saving.baseline_bytes if saving else None,
        baseline_label=(
            f"LoRA fine-tune baseline ({saving.baseline_source}: {saving.baseline_label})"
            if saving
            else "no baseline"
        ),
        notes=tuple(notes),
    )


def render_summary(s: PortSummary) -> Group:
    """The end-of-port summary: tensors, accuracy, memory against the baseline, records."""
    head = Text()
    head.append("Ported ", style="bold green")
    head.append(f"{s.patch} → {s.base} at {s.precision}\n", style="bold")
    head.append(f"matched tensors {s.matched_tensors}/{s.total_tensors}", style="bold")
    head.append(f"   max |Δlogit| vs bare base {s.max_abs_logit_change:.4g}   finite: {s.finite}\n")
    if s.evaluation:
        e = s.evaluation
        head.append(f"accuracy on {e.get('task')}: {e['accuracy']:.3f}", style="bold")
        if e.get("ci_low") is not None:
            head.append(f" (95% CI {e['ci_low']:.3f}-{e['ci_high']:.3f}, n={e.get('n')})")
        head.append("\n")
    else:
        head.append("accuracy: not evaluated (choose a task and its data file)\n", style="dim")
    mem = Table(box=None, padding=(0, 1), show_header=False)
    mem.add_column("what")
    mem.add_column("bytes", justify="right")
    mem.add_row(f"measured peak ({s.peak_metric})", human(s.peak_bytes))
    if s.port_estimate_bytes is not None:
        mem.add_row("planner's port estimate", human(s.port_estimate_bytes))
    if s.baseline_bytes is not None:
        mem.add_row(s.baseline_label, human(s.baseline_bytes))
        saving = s.saving_bytes or 0
        ratio = s.ratio or 0.0
        style = "bold green" if saving > 0 else "bold yellow"
        mem.add_row(
            Text("saving against the baseline", style=style),
            Text(
                f"{human(saving)} ({ratio:.2f}× less)" if saving > 0 else f"{human(saving)} ({ratio:.2f}×)",
                style=style,
            ),
        )
    tail = Text()
    tail.append("phases: " + "  ".join(f"{k} {v:.2f}s" for k, v in s.phases.items()) + "\n")
    if s.ported_name:
        tail.append(f"stored as patch '{s.ported_name}' (run {s.run_id})")
    for note in s.notes:
        tail.append(f"\nnote: {note}", style="dim")
    return Group(head, mem, tail)


def _status_text(status: str) -> Text:
    style = {"pass": "green", "warn": "yellow", "fail": "bold red"}.get(status, "")
    return Text(status, style=style)


class PortScreen(BaseScreen):
    """The main job, step by step."""

    MODE = "port"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("c", "check", "Check"),
        Binding("g", "port", "Port"),
        Binding("x", "cancel", "Cancel port"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._cancel = threading.Event()
        self.preflight: Any = None
        self.preflight_key: tuple[str | None, str | None] | None = None
        self.running = False
        self.summary: PortSummary | None = None
        self._phase_times: dict[str, float] = {}
        self._phase_starts: dict[str, float] = {}
        self._phase_current: str | None = None
        self._phases: tuple[str, ...] = ()

    def compose_body(self) -> ComposeResult:
        with Vertical(id="port-form", classes="panel"):
            with Horizontal(classes="row"):
                yield Label("1 Patch", classes="step")
                yield Select([], prompt="choose a stored patch", id="patch", compact=True, classes="main")
            with Horizontal(classes="row"):
                yield Label("2 Base", classes="step")
                yield Select([], prompt="a store model", id="base", compact=True)
                yield Input(placeholder="or a model folder path", id="base-path", compact=True)
            with Horizontal(classes="row"):
                yield Label("3 Precision", classes="step")
                yield Select(
                    [(p, p) for p in PORT_PRECISIONS],
                    value="nf4",
                    allow_blank=False,
                    id="precision",
                    compact=True,
                )
                yield Static("", id="precision-note")
            with Horizontal(classes="row"):
                yield Label("  Evaluate", classes="step")
                yield Select([], prompt="no evaluation", id="eval-task", compact=True)
                yield Input(placeholder="data file or folder", id="eval-data", compact=True)
                yield Input(value="50", placeholder="limit", id="eval-limit", compact=True, type="integer")
            with Horizontal(classes="row buttons"):
                yield Button("4 Check (c)", id="check-btn", compact=True)
                yield Button("5 Port (g)", id="port-btn", variant="primary", compact=True)
                yield Button("Cancel (x)", id="cancel-btn", variant="error", compact=True, disabled=True)
            with Horizontal(classes="row"):
                yield Label("  Progress", classes="step")
                yield ProgressBar(total=len(PHASES), show_eta=False, id="progress")
                yield Static("", id="phases")
        with VerticalScroll(id="port-output", classes="panel") as out:
            out.border_title = "Preflight and result"
            yield Static("Choose a patch and a base, then Check (c) or Port (g).", id="port-status")
            yield DataTable(id="preflight", cursor_type="row", show_cursor=False)
            yield Static("", id="summary")

    def on_mount(self) -> None:
        table = self.query_one("#preflight", DataTable)
        table.add_columns("check", "status", "reason")
        table.display = False

    def on_screen_resume(self) -> None:
        self.load_options()

    def palette_commands(self) -> list[tuple[str, str, Any]]:
        return [
            ("Run preflight check", "Check the patch against the base (headers only)", self.action_check),
            ("Start port", "Port the chosen patch onto the chosen base", self.action_port),
            ("Cancel port", "Stop the running port at the next phase", self.action_cancel),
        ]

    # ------------------------------------------------------------------ options

    @work(thread=True, exclusive=True, group="port-options")
    def load_options(self) -> None:
        """Stored patch names, store model names, task names; posts :class:`PortOptionsLoaded`."""
        from portllm_edge import paths
        from portllm_edge.patches import PatchStore

        try:
            patches = [m.name for m in PatchStore().list()]
            root = paths.models_dir()
            models = (
                sorted(
                    p.name
                    for p in root.iterdir()
                    if p.is_dir() and not p.name.startswith(".") and (p / "config.json").is_file()
                )
                if root.is_dir()
                else []
            )
        except Exception as exc:
            notify_error_from_thread(self.app, exc)
            return
        self.post_message(PortOptionsLoaded(patches, models))

    def on_port_options_loaded(self, message: PortOptionsLoaded) -> None:
        self._set_options("#patch", message.patches)
        self._set_options("#base", message.models)
        tasks = self.query_one("#eval-task", Select)
        if not tasks._options or len(tasks._options) <= 1:
            from portllm_edge.evaluation.tasks import list_tasks

            tasks.set_options([(t.name, t.name) for t in list_tasks()])
        if not message.patches:
            self.query_one("#port-status", Static).update(
                "The patch store is empty: import one with `portllm-edge patch import DIR`."
            )

    def _set_options(self, selector: str, names: list[str]) -> None:
        select = self.query_one(selector, Select)
        current = select.value
        select.set_options([(n, n) for n in names])
        if current in names:
            select.value = current

    def patch_name(self) -> str | None:
        value = self.query_one("#patch", Select).value
        return None if value is Select.NULL else str(value)

    def base_ref(self) -> str | None:
        """The typed folder path if any, else the chosen store model."""
        typed = self.query_one("#base-path", Input).value.strip()
        if typed:
            return typed
        value = self.query_one("#base", Select).value
        return None if value is Select.NULL else str(value)

    @on(Select.Changed, "#base")
    def _base_chosen(self, event: Select.Changed) -> None:
        if event.value is not Select.NULL:
            self.query_one("#base-path", Input).value = ""
        self._base_changed()

    @on(Input.Changed, "#base-path")
    def _base_typed(self, event: Input.Changed) -> None:
        self._base_changed()

    @on(Input.Submitted, "#base-path")
    def _base_submitted(self, event: Input.Submitted) -> None:
        self.action_check()

    @on(Select.Changed, "#patch")
    def _patch_chosen(self, event: Select.Changed) -> None:
        self._stale()

    def _stale(self) -> None:
        if self.preflight_key != (self.patch_name(), self.base_ref()):
            self.preflight = None

    def _base_changed(self) -> None:
        self._stale()
        base = self.base_ref()
        if base:
            self.pick_precision(base)
        else:
            self.query_one("#precision-note", Static).update("")

    @work(thread=True, exclusive=True, group="port-plan")
    def pick_precision(self, base: str) -> None:
        """Plan the base at nf4/int8/bf16/fp32 for this budget; posts :class:`PrecisionPicked`."""
        from portllm_edge.planning import plan_model

        try:
            budget = self.papp.deps.budget()
            plan = plan_model(base, budget=budget, precisions=PORT_PRECISIONS)
        except Exception as exc:
            msg = getattr(exc, "message", str(exc))
            self.post_message(PrecisionPicked(base, None, f"planner: {msg}"))
            return
        if plan.best is None:
            smallest = min(plan.inference, key=lambda o: o.breakdown.total_bytes)
            note = (
                f"planner: nothing fits {budget.usable_human()} usable "
                f"(nf4 needs {smallest.breakdown.total_human()})"
            )
            self.post_message(PrecisionPicked(base, None, note))
            return
        opt = plan.option(plan.best)
        note = (
            f"planner's pick: {plan.best.value} ({opt.breakdown.total_human()} of "
            f"{budget.usable_human()} usable)"
        )
        self.post_message(PrecisionPicked(base, plan.best.value, note))

    def on_precision_picked(self, message: PrecisionPicked) -> None:
        if message.base != self.base_ref():
            return  # the user has typed on since
        if message.precision in PORT_PRECISIONS:
            self.query_one("#precision", Select).value = message.precision
        note = self.query_one("#precision-note", Static)
        note.update(Text(message.note, style="green" if message.precision else "yellow"))

    # ------------------------------------------------------------------ preflight

    def _inputs(self) -> tuple[str, str] | None:
        patch, base = self.patch_name(), self.base_ref()
        if not patch:
            self.notify("choose a patch first (step 1)", severity="warning")
            self.query_one("#patch", Select).focus()
            return None
        if not base:
            self.notify("choose a store model or type a model folder (step 2)", severity="warning")
            self.query_one("#base", Select).focus()
            return None
        return patch, base

    def action_check(self) -> None:
        if self.running:
            self.notify("a port is running; cancel it first (x)", severity="warning")
            return
        inputs = self._inputs()
        if inputs:
            self._checking(*inputs)
            self.run_preflight(*inputs, then_port=False)

    def _checking(self, patch: str, base: str) -> None:
        self.query_one("#port-status", Static).update(
            Text(f"Checking {patch} against {base} (configs and safetensors headers only) ...", style="bold")
        )

    @on(Button.Pressed, "#check-btn")
    def _check_pressed(self) -> None:
        self.action_check()

    @work(thread=True, exclusive=True, group="port-check")
    def run_preflight(self, patch: str, base: str, then_port: bool = False) -> None:
        """Check the patch against the base (configs and headers only); posts :class:`PreflightDone`."""
        from portllm_edge.models import resolve_base
        from portllm_edge.porting.port import resolve_patch
        from portllm_edge.porting.preflight import run_preflight

        try:
            adapter_dir, _stored = resolve_patch(patch)
            resolved = resolve_base(base)
            report = run_preflight(adapter_dir, resolved.path)
        except Exception as exc:
            notify_error_from_thread(self.app, exc)
            return
        self.post_message(PreflightDone(report, then_port=then_port))

    def on_preflight_done(self, message: PreflightDone) -> None:
        report = message.report
        self.preflight = report
        self.preflight_key = (self.patch_name(), self.base_ref())
        table = self.query_one("#preflight", DataTable)
        table.clear()
        table.display = True
        # Failures first, then warnings, then passes: what needs reading is on top.
        order = {"fail": 0, "warn": 1, "pass": 2}
        for check in sorted(report.checks, key=lambda c: order.get(c.status, 3)):
            table.add_row(check.name, _status_text(check.status), check.reason, key=check.name)
        status = self.query_one("#port-status", Static)
        counts = {s: sum(c.status == s for c in report.checks) for s in ("pass", "warn", "fail")}
        line = Text(f"Preflight: {counts['pass']} pass, {counts['warn']} warn, {counts['fail']} fail. ")
        if report.ok:
            line.append("The patch fits this base.", style="green")
            if not message.then_port:
                line.append(" Press g to port.")
        else:
            line.append("It will not port:", style="bold red")
            for c in report.failures:
                line.append(f"\n  {c.name}: {c.reason}")
                if c.hint:
                    line.append(f"\n    fix: {c.hint}", style="dim")
        status.update(line)
        if not report.ok:
            first = report.failures[0]
            more = f" (+{len(report.failures) - 1} more)" if len(report.failures) > 1 else ""
            self.notify(
                f"{first.name}: {first.reason}{more}" + (f"\nFix: {first.hint}" if first.hint else ""),
                title="Preflight failed",
                severity="error",
                timeout=12,
                markup=False,
            )
            return
        if message.then_port:
            self._start_port()

    # ------------------------------------------------------------------ port

    def action_port(self) -> None:
        if self.running:
            self.notify("a port is already running", severity="warning")
            return
        inputs = self._inputs()
        if not inputs:
            return
        if self.preflight is None or self.preflight_key != inputs:
            self._checking(*inputs)
            self.run_preflight(*inputs, then_port=True)
            return
        if not self.preflight.ok:
            self.notify(
                "the preflight failed; fix the failed checks or choose another base",
                title="Preflight failed",
                severity="error",
                markup=False,
            )
            return
        self._start_port()

    @on(Button.Pressed, "#port-btn")
    def _port_pressed(self) -> None:
        self.action_port()

    def _eval_options(self) -> tuple[str | None, str | None, int | None] | None:
        task = self.query_one("#eval-task", Select).value
        if task is Select.NULL:
            return None, None, None
        data = self.query_one("#eval-data", Input).value.strip()
        if not data:
            self.notify(
                f"evaluation on {task} needs its data file or folder",
                title="Evaluate",
                severity="warning",
                markup=False,
            )
            self.query_one("#eval-data", Input).focus()
            return None
        limit_text = self.query_one("#eval-limit", Input).value.strip()
        limit = int(limit_text) if limit_text.isdigit() and int(limit_text) > 0 else None
        return str(task), data, limit

    def _start_port(self) -> None:
        patch, base = self.patch_name(), self.base_ref()
        if not patch or not base:
            return
        ev = self._eval_options()
        if ev is None:
            return
        precision = str(self.query_one("#precision", Select).value)
        self._phases = tuple(p for p in PHASES if p != "evaluate" or ev[0])
        self._phase_times = {}
        self._phase_starts = {}
        self._phase_current = None
        self._cancel.clear()
        self.running = True
        self.summary = None
        self.query_one("#summary", Static).update("")
        bar = self.query_one("#progress", ProgressBar)
        bar.update(total=len(self._phases), progress=0)
        self._render_phases()
        self.query_one("#cancel-btn", Button).disabled = False
        self.query_one("#port-btn", Button).disabled = True
        self.query_one("#port-status", Static).update(
            Text(f"Porting {patch} → {base} at {precision} ...", style="bold")
        )
        self.run_port(patch, base, precision, *ev)

    @work(thread=True, exclusive=True, group="port")
    def run_port(
        self,
        patch: str,
        base: str,
        precision: str,
        eval_task: str | None,
        eval_data: str | None,
        eval_limit: int | None,
    ) -> None:
        """Port in this thread (torch and transformers are imported here, not at start-up).

        Posts :class:`PortPhase` per phase, then :class:`PortFinished` or :class:`PortStopped`.
        """
        from textual.worker import get_current_worker

        worker = get_current_worker()
        started = time.perf_counter()
        cancel = self._cancel

        def on_phase(name: str) -> None:
            if cancel.is_set() or worker.is_cancelled:
                raise PortCancelled(name)
            self.post_message(PortPhase(name, time.perf_counter() - started))

        try:
            from pathlib import Path

            from portllm_edge.workflow import EvalSpec, port

            spec = None
            if eval_task and eval_data:
                spec = EvalSpec(eval_task, Path(eval_data), limit=eval_limit)
            result = port(patch, base, precision=precision, on_phase=on_phase, evaluate=spec)
            summary = summarize_port(result, patch, base)
        except PortCancelled as stop:
            self.post_message(PortStopped(f"cancelled before the {stop.args[0]} phase", cancelled=True))
            return
        except Exception as exc:
            notify_error_from_thread(self.app, exc)
            self.post_message(PortStopped(getattr(exc, "message", str(exc)), cancelled=False))
            return
        self.post_message(PortFinished(summary))

    def on_port_phase(self, message: PortPhase) -> None:
        if self._phase_current is not None:
            self._phase_times[self._phase_current] = message.elapsed - self._phase_starts[self._phase_current]
        self._phase_starts[message.phase] = message.elapsed
        self._phase_current = message.phase
        done = sum(1 for p in self._phases if p in self._phase_times)
        self.query_one("#progress", ProgressBar).update(progress=done)
        self._render_phases()

    def _render_phases(self, final: dict[str, float] | None = None) -> None:
        text = Text()
        for p in self._phases:
            if final is not None and p in final:
                text.append(f"✓{p} {final[p]:.1f}s ", style="green")
            elif p in self._phase_times:
                text.append(f"✓{p} {self._phase_times[p]:.1f}s ", style="green")
            elif p == self._phase_current and final is None:
                text.append(f"▶{p} ", style="bold yellow")
            else:
                text.append(f"·{p} ", style="dim")
        self.query_one("#phases", Static).update(text)

    def _finish_running(self) -> None:
        self.running = False
        self.query_one("#cancel-btn", Button).disabled = True
        self.query_one("#port-btn", Button).disabled = False

    def on_port_finished(self, message: PortFinished) -> None:
        s: PortSummary = message.summary
        self.summary = s
        self._finish_running()
        self._phase_current = None
        bar = self.query_one("#progress", ProgressBar)
        bar.update(total=len(self._phases), progress=len(self._phases))
        self._render_phases(final=s.phases)
        self.query_one("#port-status", Static).update(Text("Port complete.", style="bold green"))
        self.query_one("#summary", Static).update(render_summary(s))
        self.query_one("#port-output", VerticalScroll).scroll_end(animate=False)
        self.notify(
            f"{s.matched_tensors}/{s.total_tensors} tensors matched; stored as {s.ported_name}",
            title="Port complete",
            markup=False,
        )
        self.load_options()

    def on_port_stopped(self, message: PortStopped) -> None:
        self._finish_running()
        self._phase_current = None
        self._render_phases()
        style = "yellow" if message.cancelled else "bold red"
        self.query_one("#port-status", Static).update(
            Text(f"Port stopped: {message.reason}. Nothing was stored.", style=style)
        )
        if message.cancelled:
            self.notify(f"port {message.reason}; nothing was stored", title="Port cancelled", markup=False)

    def action_cancel(self) -> None:
        if not self.running:
            self.notify("no port is running", severity="information")
            return
        self._cancel.set()
        self.query_one("#port-status", Static).update(
            Text("Cancelling: the port stops when the current phase ends ...", style="yellow")
        )

    @on(Button.Pressed, "#cancel-btn")
    def _cancel_pressed(self) -> None:
        self.action_cancel()
