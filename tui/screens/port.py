"""Port: choose a patch, a target base and a precision, run the preflight, port, read the summary.

The precision selector is empty ("auto") until a base is chosen; then it shows the one
precision decision for that base on this machine (:func:`~portllm_edge.planning.decide_precision`,
job ``port``, as ``plan``, ``pick`` and ``port --precision auto``). A precision the user
picked is never overridden: the decision then only shows in the note. "Check" runs the
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
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, DataTable, Input, Label, ProgressBar, Select, Static

from portllm_edge.workflow import RunCancelled

from ..common import BaseScreen, human, notify_error_from_thread
from ..messages import (
    BaselineMeasured,
    FleetFinished,
    FleetProgress,
    ForecastDone,
    PortFinished,
    PortOptionsLoaded,
    PortPhase,
    PortStopped,
    PrecisionPicked,
    PreflightDone,
)

if TYPE_CHECKING:
    from portllm_edge.workflow import FleetOutcome, PortOutcome

PORT_PRECISIONS = ("nf4", "int8", "bf16", "fp32")
"""Precisions a port loads a base at (and the planner is asked about)."""

PHASES = ("check", "load", "attach", "evaluate", "save")

NO_BASE_NOTE = "auto: the planner decides once a base is chosen"
"""The precision note before a base is chosen (the selector shows ``auto``)."""


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
        baseline_source: ``measured`` (a fine-tune measured in its own worker), ``estimate``
            (the planner's), or ``None`` without a baseline.
        metric: The measured peak's metric (``peak_anon_rss`` ...), or ``None`` when not measured.
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
    baseline_source: str | None = None
    metric: str | None = None

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
    from portllm_edge.workflow.queries import job_label

    a, mem, saving = result.attach, result.memory, result.saving
    notes: list[str] = []
    if saving is not None and saving.baseline_source == "estimate":
        notes.append(
            "the baseline is the planner's estimate: ctrl+r measures a LoRA fine-tune of this base now "
            "(in a worker process; `portllm-edge bench` does the same)"
        )
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
        peak_metric=(
            f"{job_label('port', result.precision, evaluated=result.evaluation is not None)}: "
            f"{mem.metric}, measured in a worker process"
            if mem
            else "not measured"
        ),
        port_estimate_bytes=saving.port_estimate_bytes if saving else None,
        baseline_bytes=saving.baseline_bytes if saving else None,
        baseline_label=(
            f"LoRA fine-tune baseline ({saving.baseline_source}: {saving.baseline_label})"
            if saving
            else "no baseline"
        ),
        notes=tuple(notes),
        baseline_source=saving.baseline_source if saving else None,
        metric=mem.metric if mem else None,
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
        what = (
            "saving against the ESTIMATED baseline"
            if s.baseline_source == "estimate"
            else "saving (measured)"
        )
        mem.add_row(
            Text(what, style=style),
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


def render_fleet(o: FleetOutcome) -> Group:
    """The fleet's one table: patch, result, accuracy before/after, seconds; then why rows failed."""
    head = Text(f"Fleet {o.old_id} → {o.base_id}: ", style="bold")
    head.append(", ".join(f"{v} {k}" for k, v in o.counts().items() if v), style="bold green")
    if o.load_seconds is not None:
        head.append(
            f"   (base loaded once at {o.precision} in {o.load_seconds:.1f}s; {o.seconds:.1f}s in all)"
        )
    table = Table(box=None, padding=(0, 1))
    table.add_column("patch")
    table.add_column("result")
    for col in ("acc before", "acc after", "seconds"):
        table.add_column(col, justify="right")
    style = {"ported": "green", "already ported": "dim", "skipped": "yellow", "failed": "bold red"}
    for i in o.items:
        acc = ["-" if v is None else f"{v:.3f}" for v in (i.accuracy_before, i.accuracy_after)]
        table.add_row(i.patch, Text(i.result, style=style[i.result]), *acc, f"{i.seconds:.1f}")
    tail = Text()
    for i in o.items:
        if i.result in ("skipped", "failed") and i.reason:
            tail.append(f"{i.patch}: {i.reason}\n", style="dim")
    if o.no_fingerprint:
        tail.append(f"not matched (no base fingerprint recorded): {', '.join(o.no_fingerprint)}", style="dim")
    return Group(head, table, tail)


@dataclass(frozen=True)
class EvalChoice:
    """The Port form's evaluation: ``task`` is ``None`` when none is chosen.

    Attributes:
        task / data / limit: Task name, data file or folder, examples (``None``: all).
        template / verbalizers: The ``jsonl`` task's prompt template and label words, or ``None``.
    """

    task: str | None = None
    data: str | None = None
    limit: int | None = None
    template: str | None = None
    verbalizers: tuple[tuple[str, str], ...] | None = None

    def spec(self) -> Any:
        """The :class:`~portllm_edge.workflow.EvalSpec` to pass to the port, or ``None``."""
        if not self.task or not self.data:
            return None
        from pathlib import Path

        from portllm_edge.workflow import EvalSpec

        return EvalSpec(
            self.task,
            Path(self.data),
            limit=self.limit,
            template=self.template,
            verbalizers=dict(self.verbalizers) if self.verbalizers else None,
        )


def parse_prompt_fields(
    template: str, verbalizers: str
) -> tuple[str | None, tuple[tuple[str, str], ...] | None]:
    """The ``jsonl`` task's template and verbalizers from the Port form's two one-line fields.

    ``template`` is a ``str.format`` template where ``\\n`` stands for a new line (the field is
    one line); ``verbalizers`` is ``LABEL=WORD`` items separated by commas, or by spaces when
    there is no comma (``animal=animal vehicle=vehicle``). Empty fields give ``None``.

    Raises:
        ConfigError: a template ``str.format`` can't fill, an item without ``=``, a label twice
            (the core's :func:`~portllm_edge.evaluation.tasks.check_template` and
            :func:`~portllm_edge.evaluation.tasks.parse_verbalizers`).
    """
    from portllm_edge.workflow.queries import check_template, parse_verbalizers

    text = template.replace("\\n", "\n").replace("\\t", "\t") if template else None
    if text is not None:
        check_template(text)
    words = None
    if verbalizers:
        items = verbalizers.split(",") if "," in verbalizers else verbalizers.split()
        words = tuple(parse_verbalizers([x.strip() for x in items if x.strip()]).items())
    return text, words


class NameTakenModal(ModalScreen[tuple[str, str] | None]):
    """The ported patch's name is taken: overwrite it, or store under a new name (edited here).

    Dismisses with ``("overwrite", name)``, ``("rename", new name)`` or ``None`` (cancel).
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+o", "overwrite", "Overwrite", priority=True),
        Binding("escape", "cancel", "Cancel"),
    ]

    def __init__(self, name: str, suggestion: str) -> None:
        super().__init__()
        self.taken = name
        self.suggestion = suggestion

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog"):
            yield Label(
                f"The patch store already has '{self.taken}'. Nothing has been loaded yet.\n"
                "Store the port under a new name, or overwrite the stored patch.",
                id="question",
                markup=False,
            )
            yield Input(value=self.suggestion, id="new-name")
            with Horizontal(classes="buttons"):
                yield Button("New name (enter)", variant="primary", id="rename")
                yield Button("Overwrite (^o)", variant="error", id="overwrite")
                yield Button("Cancel (esc)", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#new-name", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._rename(event.value)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "rename":
            self._rename(self.query_one("#new-name", Input).value)
        elif event.button.id == "overwrite":
            self.action_overwrite()
        else:
            self.action_cancel()

    def _rename(self, value: str) -> None:
        value = value.strip()
        if not value or value == self.taken:
            self.notify("type a new name, or overwrite (ctrl+o)", severity="warning")
            return
        self.dismiss(("rename", value))

    def action_overwrite(self) -> None:
        self.dismiss(("overwrite", self.taken))

    def action_cancel(self) -> None:
        self.dismiss(None)


def _forecast_style(forecast: Any) -> str:
    """Yellow when the forecast extrapolates beyond its calibration, else green."""
    return "yellow" if forecast.extrapolating else "green"


def _status_text(status: str) -> Text:
    style = {"pass": "green", "warn": "yellow", "fail": "bold red"}.get(status, "")
    return Text(status, style=style)


class PortScreen(BaseScreen):
    """The main job, step by step."""

    MODE = "port"
    # Modifier keys with priority, as posting and harlequin do for their "send"/"run" keys: they
    # work while a text field has focus, and no printable key is taken from the fields
    # (Input itself binds ctrl+a/e/d/k/u/w/x/c/v; ctrl+t, ctrl+g and ctrl+b are free).
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+t", "check", "Check", priority=True),
        Binding("ctrl+g", "port", "Port", priority=True),
        Binding("ctrl+b", "cancel", "Cancel port", priority=True),
        Binding("ctrl+r", "measure_baseline", "Measure baseline", priority=True),
        Binding("ctrl+f", "forecast", "Forecast", priority=True),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._cancel = threading.Event()
        self.preflight: Any = None
        self.preflight_key: tuple[str | None, str | None] | None = None
        self.checked: Any = None
        """The last check's :class:`~portllm_edge.workflow.check.CheckOutcome` (with ``preflight``)."""
        self.running = False
        self.summary: PortSummary | None = None
        self._phase_times: dict[str, float] = {}
        self._phase_starts: dict[str, float] = {}
        self._phase_current: str | None = None
        self._phases: tuple[str, ...] = ()
        self._auto_precision: str | None = None
        """The precision this screen last put in the selector itself (the planner's pick)."""
        self.precision_chosen = False
        """True once the user picked a precision: the planner then only advises, never overrides."""
        self._preflight_eval: EvalChoice | None = None
        self._checked_eval: EvalChoice | None = None
        """The evaluation the last preflight validated (its data file loaded with its options)."""
        self.measuring = False
        """A baseline measurement (ctrl+r) is running."""
        self.default_name: str | None = None
        """The store name a port gets when the name field is empty (``<patch>@<base id>``)."""
        self.forecasting = False
        """A forecast (ctrl+f) is being computed."""

    def compose_body(self) -> ComposeResult:
        with Vertical(id="port-form", classes="panel"):
            with Horizontal(classes="row"):
                yield Label("1 Patch", classes="step")
                yield Select([], prompt="choose a stored patch", id="patch", compact=True, classes="main")
                yield Checkbox("all patches of this lineage", id="all-lineage", compact=True)
            with Horizontal(classes="row"):
                yield Label("2 Base", classes="step")
                yield Select([], prompt="a store model", id="base", compact=True)
                yield Input(placeholder="or a model folder path", id="base-path", compact=True)
            with Horizontal(classes="row"):
                yield Label("3 Precision", classes="step")
                yield Select(
                    [(p, p) for p in PORT_PRECISIONS],
                    prompt="auto",
                    id="precision",
                    compact=True,
                )
                yield Static(NO_BASE_NOTE, id="precision-note")
            with Horizontal(classes="row"):
                yield Label("  Evaluate", classes="step")
                yield Select([], prompt="no evaluation", id="eval-task", compact=True)
                yield Input(placeholder="data file or folder", id="eval-data", compact=True)
                yield Input(value="50", placeholder="limit", id="eval-limit", compact=True, type="integer")
            with Horizontal(classes="row"):
                yield Label("  Prompt", classes="step")
                yield Input(
                    placeholder="jsonl template, e.g. {text}\\nAnswer:", id="eval-template", compact=True
                )
                yield Input(
                    placeholder="verbalizers LABEL=WORD ..., e.g. 0=no 1=yes",
                    id="eval-verbalizers",
                    compact=True,
                )
            with Horizontal(classes="row"):
                yield Label("  Save as", classes="step")
                yield Input(
                    placeholder="ported patch name (default <patch>@<base>)", id="ported-name", compact=True
                )
            with Horizontal(classes="row buttons"):
                yield Button("4 Check (^t)", id="check-btn", compact=True)
                yield Button("5 Port (^g)", id="port-btn", variant="primary", compact=True)
                yield Button("Forecast (^f)", id="forecast-btn", compact=True)
                yield Button("Cancel (^b)", id="cancel-btn", variant="error", compact=True, disabled=True)
            with Horizontal(classes="row"):
                yield Label("  Progress", classes="step")
                yield ProgressBar(total=len(PHASES), show_eta=False, id="progress")
                yield Static("", id="phases")
        with VerticalScroll(id="port-output", classes="panel") as out:
            out.border_title = "Preflight and result"
            yield Static("Choose a patch and a base, then Check (ctrl+t) or Port (ctrl+g).", id="port-status")
            yield Static("", id="forecast")
            yield DataTable(id="preflight", cursor_type="row", show_cursor=False)
            yield Static("", id="summary")

    def on_mount(self) -> None:
        table = self.query_one("#preflight", DataTable)
        table.add_columns("check", "status", "reason")
        table.display = False
        self.query_one("#forecast", Static).display = False

    def on_screen_resume(self) -> None:
        self.load_options()

    def palette_commands(self) -> list[tuple[str, str, Any]]:
        return [
            ("Run preflight check", "Check the patch against the base (headers only)", self.action_check),
            ("Start port", "Port the chosen patch onto the chosen base", self.action_port),
            (
                "Forecast the recovered gain",
                "Predict, without task data, the share of the patch's gain the port keeps (recorded)",
                self.action_forecast,
            ),
            ("Cancel port", "Stop the running port at the next phase", self.action_cancel),
            (
                "Measure fine-tune baseline",
                "Measure a LoRA fine-tune of the ported base in a worker process (replaces the estimate)",
                self.action_measure_baseline,
            ),
        ]

    # ------------------------------------------------------------------ options

    @work(thread=True, exclusive=True, group="port-options")
    def load_options(self) -> None:
        """Stored patch names, store model names, task names; posts :class:`PortOptionsLoaded`."""
        from portllm_edge.workflow.queries import PatchStore, paths

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
            from portllm_edge.workflow.queries import list_tasks

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
            self.checked = None
            if not self.forecasting:  # a forecast of other inputs would mislead
                self.query_one("#forecast", Static).display = False

    def _base_changed(self) -> None:
        self._stale()
        base = self.base_ref()
        if base:
            self.pick_precision(base)
        else:
            self.query_one("#precision-note", Static).update(NO_BASE_NOTE)

    @work(thread=True, exclusive=True, group="port-plan")
    def pick_precision(self, base: str) -> None:
        """The one precision decision for ``base`` (job ``port``) on this budget; posts :class:`PrecisionPicked`.

        The same :func:`~portllm_edge.planning.decide_precision` call as ``plan``, ``pick`` and
        ``port --precision auto``, limited to the selector's precisions.
        """
        from portllm_edge.workflow.queries import decide_precision

        try:
            budget = self.papp.deps.budget()
            decision = decide_precision(base, budget=budget, job="port", allowed=self._allowed())
        except Exception as exc:
            msg = getattr(exc, "message", str(exc))
            self.post_message(PrecisionPicked(base, None, f"planner: {msg}"))
            return
        note = f"planner's pick: {decision.reason}"
        self.post_message(PrecisionPicked(base, decision.precision.value, note, fits=decision.fits))

    @staticmethod
    def _allowed() -> tuple[Any, ...]:
        from portllm_edge.workflow.queries import Precision

        return tuple(Precision(p) for p in PORT_PRECISIONS)

    @on(Select.Changed, "#precision")
    def _precision_changed(self, event: Select.Changed) -> None:
        if event.value is not Select.NULL and event.value != self._auto_precision:
            self.precision_chosen = True  # the user's choice; the planner no longer sets it

    def on_precision_picked(self, message: PrecisionPicked) -> None:
        if message.base != self.base_ref():
            return  # the user has typed on since
        select = self.query_one("#precision", Select)
        note_text = message.note
        if message.precision in PORT_PRECISIONS:
            if not self.precision_chosen:
                self._auto_precision = message.precision
                select.value = message.precision
            elif select.value != message.precision:
                note_text += f" Your {select.value} is kept."
        note = self.query_one("#precision-note", Static)
        good = message.precision is not None and message.fits
        note.update(Text(note_text, style="green" if good else "yellow"))

    def chosen_precision(self) -> str:
        """The selector's precision, or ``auto`` (the decision, made by the port) before one is shown."""
        value = self.query_one("#precision", Select).value
        return "auto" if value is Select.NULL else str(value)

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
            self.notify("a port is running; cancel it first (ctrl+b)", severity="warning")
            return
        inputs = self._inputs()
        if not inputs:
            return
        ev = self._eval_options(quiet=True)
        self._checking(*inputs)
        self._preflight_eval = ev
        self.run_preflight(*inputs, then_port=False, evaluation=ev)

    def _checking(self, patch: str, base: str) -> None:
        self.query_one("#port-status", Static).update(
            Text(f"Checking {patch} against {base} (configs and safetensors headers only) ...", style="bold")
        )

    @on(Button.Pressed, "#check-btn")
    def _check_pressed(self) -> None:
        self.action_check()

    @work(thread=True, exclusive=True, group="port-check")
    def run_preflight(self, patch: str, base: str, then_port: bool = False, evaluation: Any = None) -> None:
        """Check the patch against the base (configs and headers only); posts :class:`PreflightDone`.

        With ``evaluation`` (the :class:`EvalChoice` of the form) the task's data file is also
        loaded with its template and verbalizers, so a bad file or template fails here, before
        any weights are loaded.
        """
        from portllm_edge.workflow import check
        from portllm_edge.workflow.queries import ported_patch_name

        try:
            # The workflow's check, as the CLI's: the old base is looked up in the model store, so
            # the tokenizer check runs without asking for it, and a recorded forecast is found.
            outcome = check(patch, base, drift=False)
            r, report = outcome.resolved, outcome.preflight
            default_name = ported_patch_name(r.patch.name, r.base.model_id)
            if evaluation is not None and evaluation.spec() is not None:
                from portllm_edge.workflow.checks import check_eval_spec

                check_eval_spec(evaluation.spec())
        except Exception as exc:
            notify_error_from_thread(self.app, exc)
            return
        self.post_message(
            PreflightDone(report, then_port=then_port, default_name=default_name, check=outcome)
        )

    def on_preflight_done(self, message: PreflightDone) -> None:
        report = message.report
        self.preflight = report
        self.checked = message.check
        self.preflight_key = (self.patch_name(), self.base_ref())
        self._checked_eval = self._preflight_eval
        self.default_name = message.default_name
        name_field = self.query_one("#ported-name", Input)
        if message.default_name:
            name_field.placeholder = f"ported patch name (default {message.default_name})"
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
                line.append(" Press ctrl+g to port.")
        else:
            line.append("It will not port:", style="bold red")
            for c in report.failures:
                line.append(f"\n  {c.name}: {c.reason}")
                if c.hint:
                    line.append(f"\n    fix: {c.hint}", style="dim")
        status.update(line)
        if message.check is not None:
            self._show_forecast(message.check)
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

    # ------------------------------------------------------------------ forecast

    def _show_forecast(self, outcome: Any) -> None:
        """The check's forecast line (recorded, or why there is none and the key that computes it)."""
        box = self.query_one("#forecast", Static)
        box.display = True
        if outcome.forecast is not None:
            box.update(Text(outcome.forecast_line(), style=_forecast_style(outcome.forecast)))
            return
        line = Text(outcome.forecast_line(), style="dim")
        if outcome.can_compute_forecast:
            line.append(". Press ctrl+f to compute and record it (forward passes over generic text).")
        box.update(line)

    def action_forecast(self) -> None:
        if self.running or self.forecasting:
            self.notify("a port or a forecast is running; wait for it", severity="warning")
            return
        inputs = self._inputs()
        if not inputs:
            return
        checked = self.checked if self.preflight is not None and self.preflight_key == inputs else None
        if checked is not None and checked.forecast is None and not checked.can_compute_forecast:
            # the check of these inputs already knows a forecast can't be computed: say why, run nothing
            self.notify(checked.forecast_line(), title="No forecast", severity="warning", markup=False)
            return
        self.forecasting = True
        self.query_one("#forecast-btn", Button).disabled = True
        box = self.query_one("#forecast", Static)
        box.display = True
        box.update(
            Text(
                f"Forecasting {inputs[0]} on {inputs[1]}: the patch over generic text on both bases ...",
                style="bold",
            )
        )
        self.run_forecast(*inputs)

    @on(Button.Pressed, "#forecast-btn")
    def _forecast_pressed(self) -> None:
        self.action_forecast()

    @work(thread=True, exclusive=True, group="port-forecast")
    def run_forecast(self, patch: str, base: str) -> None:
        """:func:`portllm_edge.workflow.forecast` (records the run); posts :class:`ForecastDone`."""
        from portllm_edge.workflow import forecast

        try:
            outcome = forecast(patch, base)
        except Exception as exc:
            notify_error_from_thread(self.app, exc)
            self.post_message(ForecastDone(patch, base, None))
            return
        self.post_message(ForecastDone(patch, base, outcome))

    def on_forecast_done(self, message: ForecastDone) -> None:
        self.forecasting = False
        self.query_one("#forecast-btn", Button).disabled = False
        box = self.query_one("#forecast", Static)
        o = message.outcome
        if o is None:
            box.update(
                Text(
                    f"forecast of {message.patch} on {message.base}: failed (see the notification)",
                    style="red",
                )
            )
            return
        box.update(
            Text(
                f"{message.patch} on {message.base}: {o.forecast.summary()} "
                f"[computed in {o.seconds:.1f} s; recorded as run {o.run_id}]",
                style=_forecast_style(o.forecast),
            )
        )

    # ------------------------------------------------------------------ port

    def action_port(self) -> None:
        if self.running:
            self.notify("a port is already running", severity="warning")
            return
        inputs = self._inputs()
        if not inputs:
            return
        if self.query_one("#all-lineage", Checkbox).value:
            self._start_fleet(*inputs)
            return
        ev = self._eval_options()
        if ev is None:
            return
        if self.preflight is None or self.preflight_key != inputs or self._checked_eval != ev:
            self._checking(*inputs)
            self._preflight_eval = ev
            self.run_preflight(*inputs, then_port=True, evaluation=ev)
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

    def _eval_options(self, *, quiet: bool = False) -> EvalChoice | None:
        """The form's evaluation: task, data, limit, and the jsonl template and verbalizers.

        Returns ``None`` (after a notification, unless ``quiet``) when the form is incomplete or a
        field is invalid; ``EvalChoice()`` (no task) when no evaluation is chosen.
        """
        task = self.query_one("#eval-task", Select).value
        if task is Select.NULL:
            return EvalChoice()
        data = self.query_one("#eval-data", Input).value.strip()
        if not data:
            if not quiet:
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
        template_text = self.query_one("#eval-template", Input).value.strip()
        verbal_text = self.query_one("#eval-verbalizers", Input).value.strip()
        try:
            template, verbalizers = parse_prompt_fields(template_text, verbal_text)
        except Exception as exc:
            from ..common import notify_error

            notify_error(self.app, exc)
            self.query_one("#eval-template" if "template" in str(exc) else "#eval-verbalizers", Input).focus()
            return None
        if (template or verbalizers) and str(task) != "jsonl":
            if not quiet:
                self.notify(
                    f"the template and verbalizers apply to the jsonl task only; {task} uses its own prompt",
                    title="Evaluate",
                    severity="warning",
                    markup=False,
                )
            template = verbalizers = None
        return EvalChoice(str(task), data, limit, template, verbalizers)

    def target_name(self) -> str | None:
        """The store name the port writes: the typed name, else ``<patch>@<base id>``."""
        typed = self.query_one("#ported-name", Input).value.strip()
        return typed or self.default_name

    def _start_port(self, *, overwrite: bool = False) -> None:
        patch, base = self.patch_name(), self.base_ref()
        if not patch or not base:
            return
        ev = self._checked_eval or EvalChoice()
        name = self.target_name()
        if name is not None:
            from portllm_edge.workflow.queries import PatchStore, validate_name

            try:
                validate_name(name)
                taken = name in PatchStore().names()
            except Exception as exc:
                from ..common import notify_error

                notify_error(self.app, exc)
                self.query_one("#ported-name", Input).focus()
                return
            if taken and not overwrite:
                self._ask_name(name)
                return
        precision = self.chosen_precision()
        self._phases = tuple(p for p in PHASES if p != "evaluate" or ev.task)
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
        self.run_port(patch, base, precision, ev, name, overwrite)

    def _ask_name(self, name: str) -> None:
        """The name is taken: offer overwrite, a new name, or cancel (before any work)."""
        from portllm_edge.workflow.queries import PatchStore

        names = set(PatchStore().names())
        suggestion = next(f"{name}-{i}" for i in range(2, 1000) if f"{name}-{i}" not in names)

        def done(answer: tuple[str, str] | None) -> None:
            if answer is None:
                self.query_one("#port-status", Static).update(
                    Text(f"Not ported: the store already has '{name}'. Nothing was loaded.", style="yellow")
                )
                return
            action, new_name = answer
            if action == "overwrite":
                self._start_port(overwrite=True)
            else:
                self.query_one("#ported-name", Input).value = new_name
                self._start_port()

        self.query_one("#port-status", Static).update(
            Text(f"The store already has '{name}': overwrite it or choose a new name.", style="yellow")
        )
        self.app.push_screen(NameTakenModal(name, suggestion), done)

    @work(thread=True, exclusive=True, group="port")
    def run_port(
        self,
        patch: str,
        base: str,
        precision: str,
        evaluation: EvalChoice,
        name: str | None = None,
        overwrite: bool = False,
    ) -> None:
        """Port in this thread (torch and transformers are imported here, not at start-up).

        Posts :class:`PortPhase` per phase, then :class:`PortFinished` or :class:`PortStopped`.
        """
        from textual.worker import get_current_worker

        worker = get_current_worker()
        started = time.perf_counter()
        cancel = self._cancel

        def on_phase(phase: str) -> None:
            if cancel.is_set() or worker.is_cancelled:
                raise PortCancelled(phase)
            self.post_message(PortPhase(phase, time.perf_counter() - started))

        try:
            from portllm_edge.workflow import port

            result = port(
                patch,
                base,
                precision=precision,
                name=name,
                overwrite=overwrite,
                on_phase=on_phase,
                evaluate=evaluation.spec(),
            )
            summary = summarize_port(result, patch, base)
            if summary.evaluation and evaluation.task:
                from portllm_edge.workflow.queries import task_label

                # The task's real name: a jsonl task is named after its data file, as in reports.
                name = task_label(evaluation.task, {"data": evaluation.data})
                summary = replace(summary, evaluation={**summary.evaluation, "task": name})
        except PortCancelled as stop:
            self.post_message(PortStopped(f"cancelled before the {stop.args[0]} phase", cancelled=True))
            return
        except Exception as exc:
            notify_error_from_thread(self.app, exc)
            self.post_message(PortStopped(getattr(exc, "message", str(exc)), cancelled=False))
            return
        self.post_message(PortFinished(summary))

    def _start_fleet(self, patch: str, base: str) -> None:
        """Every stored patch whose base is this patch's base, onto ``base``, loading it once."""
        precision = self.chosen_precision()
        self._cancel.clear()
        self.running = True
        self.summary = None
        self.query_one("#summary", Static).update("")
        self.query_one("#preflight", DataTable).display = False
        self.query_one("#cancel-btn", Button).disabled = False
        self.query_one("#port-btn", Button).disabled = True
        self.query_one("#port-status", Static).update(
            Text(f"Porting every patch of {patch}'s base → {base} at {precision} ...", style="bold")
        )
        self.run_fleet(patch, base, precision)

    @work(thread=True, exclusive=True, group="port")
    def run_fleet(self, patch: str, base: str, precision: str) -> None:
        """:func:`portllm_edge.workflow.port_fleet` in this thread; each patch's own preflight runs there.

        Posts :class:`FleetProgress` per patch, then :class:`FleetFinished` or :class:`PortStopped`.
        """
        from textual.worker import get_current_worker

        worker = get_current_worker()
        cancel = self._cancel

        def on_patch(index: int, total: int, name: str) -> None:
            if cancel.is_set() or worker.is_cancelled:
                raise PortCancelled(f"patch {name}")
            self.post_message(FleetProgress(index, total, name))

        try:
            from portllm_edge.workflow.fleet import lineage_base, port_fleet

            outcome = port_fleet(lineage_base(patch), base, precision=precision, on_patch=on_patch)
        except PortCancelled as stop:
            self.post_message(PortStopped(f"cancelled before {stop.args[0]}", cancelled=True))
            return
        except Exception as exc:
            notify_error_from_thread(self.app, exc)
            self.post_message(PortStopped(getattr(exc, "message", str(exc)), cancelled=False))
            return
        self.post_message(FleetFinished(outcome))

    def on_fleet_progress(self, message: FleetProgress) -> None:
        self.query_one("#progress", ProgressBar).update(total=message.total, progress=message.index - 1)
        self.query_one("#phases", Static).update(Text(f"▶ {message.patch} ({message.index}/{message.total})"))

    def on_fleet_finished(self, message: FleetFinished) -> None:
        o = message.outcome
        self._finish_running()
        bar = self.query_one("#progress", ProgressBar)
        bar.update(total=len(o.items), progress=len(o.items))
        self.query_one("#phases", Static).update("")
        counts = o.counts()
        ok = not counts["failed"] and not counts["skipped"]
        self.query_one("#port-status", Static).update(
            Text(
                "Fleet port complete." if ok else "Fleet port done; some patches did not port.", style="bold"
            )
        )
        self.query_one("#summary", Static).update(render_fleet(o))
        self.notify(
            ", ".join(f"{v} {k}" for k, v in counts.items() if v),
            title="Fleet port complete",
            severity="information" if ok else "warning",
            markup=False,
        )
        self.load_options()

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

    # ------------------------------------------------------------------ baseline

    def action_measure_baseline(self) -> None:
        """Measure the LoRA fine-tune baseline of the last port's base now (``bench``, in workers)."""
        s = self.summary
        if self.running or self.measuring:
            self.notify("a job is running; wait for it or cancel it (ctrl+b)", severity="warning")
            return
        if s is None:
            self.notify("port a patch first: the baseline is measured for the base it was ported onto")
            return
        ev = self._checked_eval or EvalChoice()
        if not ev.task or not ev.data:
            self.notify(
                "the fine-tune needs training data: choose an evaluation task and its data file "
                "(it trains a few steps on it), then press ctrl+r",
                title="Measure baseline",
                severity="warning",
                markup=False,
            )
            self.query_one("#eval-task", Select).focus()
            return
        self.measuring = True
        self.query_one("#port-status", Static).update(
            Text(
                f"Measuring a LoRA fine-tune of {s.base} and the port, each in a worker process ...",
                style="bold",
            )
        )
        self.measure_baseline(s, ev)

    @work(thread=True, exclusive=True, group="port-baseline")
    def measure_baseline(self, s: PortSummary, ev: EvalChoice) -> None:
        """Run :func:`portllm_edge.workflow.bench` (recorded as a ``bench`` run) and take its
        fine-tune peak as the baseline of ``s``; posts :class:`BaselineMeasured`."""
        from portllm_edge.workflow import bench
        from portllm_edge.workflow.resolve import resolve
        from portllm_edge.workflow.savings import measured_finetune_baseline

        try:
            r = resolve(s.ported_name or s.patch, s.base)
            base_dir = r.base.path
            spec = ev.spec()
            bench(
                r.patch.ref,
                str(base_dir),
                task=spec.task,
                train_data=spec.data,
                eval_data=spec.data,
                precision=s.precision,
                template=spec.template,
                verbalizers=spec.verbalizers,
            )
            found = measured_finetune_baseline(base_dir, s.metric or "peak_anon_rss")
        except Exception as exc:
            notify_error_from_thread(self.app, exc)
            self.post_message(BaselineMeasured(None))
            return
        if found is None:
            self.post_message(BaselineMeasured(None))
            return
        from portllm_edge.workflow.queries import job_label

        peak, name, run_id = found
        label = f"LoRA fine-tune baseline (measured: {job_label(name)} in run {run_id})"
        notes = tuple(n for n in s.notes if "planner's estimate" not in n)
        self.post_message(
            BaselineMeasured(
                replace(s, baseline_bytes=peak, baseline_label=label, baseline_source="measured", notes=notes)
            )
        )

    def on_baseline_measured(self, message: BaselineMeasured) -> None:
        self.measuring = False
        if message.summary is None:
            self.query_one("#port-status", Static).update(
                Text("The baseline was not measured (see the notification).", style="yellow")
            )
            return
        self.summary = message.summary
        self.query_one("#summary", Static).update(render_summary(message.summary))
        self.query_one("#port-status", Static).update(
            Text("Baseline measured: the saving below is measured on both sides.", style="bold green")
        )

    @on(Button.Pressed, "#cancel-btn")
    def _cancel_pressed(self) -> None:
        self.action_cancel()
