"""Models: the profile catalog and the local model store, each judged against this machine's budget.

Each row is one model with fit / no fit per precision (the planner's estimates) and
the estimated decode speed at its best precision (bandwidth-bound: the device's memory
bandwidth ÷ bytes read per token; ``-`` when the bandwidth is unknown), ranked as
``portllm-edge pick`` ranks them (one ranking: the workflow's ``rank_models``). The pane
below shows the selected model's memory breakdown at its best precision, the
LoRA/QLoRA fine-tuning estimates and the planner's reason. Actions import a GGUF
file or a local Hugging Face folder into the model store.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.widgets import DataTable, Static

from ..common import BaseScreen, PathModal, fill_table, notify_error_from_thread, short_human
from ..messages import ModelsPlanned

MODEL_COLUMNS = ("model", "src", "params", "nf4", "int8", "16-bit", "fp32", "best", "tok/s")
"""The Models table's columns; each is as wide as its widest cell (names are never cut)."""


@dataclass(frozen=True)
class ModelRow:
    """One model on the Models screen.

    Attributes:
        key: ``<kind>:<name>`` (unique across profiles and the store).
        choices: Precision value -> the ranked choice (fit, estimate) for it.
        best: ``pick``'s choice (its decided precision) when a port fits, or ``None`` when nothing fits.
        plan: The planner's :class:`~portllm_edge.planning.Plan` (breakdowns, fine-tune options).
    """

    key: str
    spec: Any
    choices: dict[str, Any]
    best: Any
    plan: Any


def plan_models(budget: Any) -> list[ModelRow]:
    """Every profile and store model in ``portllm-edge pick``'s order, each at nf4, int8, 16-bit and fp32.

    The order and each model's best precision are the workflow's ``rank_models`` (the one
    ranking ``pick`` prints); the models that fit nowhere follow. Pure math, no weights.
    """
    from portllm_edge.workflow.queries import plan_model, rank_models

    half = "bf16" if budget.bf16 else "fp16"
    precs = ("nf4", "int8", half, "fp32")
    rows = []
    for ranked in rank_models(budget, precisions=precs):
        spec = ranked.choice.model
        key = f"{spec.kind}:{spec.name}"
        plan = plan_model(spec, budget=budget, precisions=precs)
        rows.append(ModelRow(key, spec, ranked.by_precision, ranked.best, plan))
    return rows


def _params(n: int) -> str:
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"


def render_breakdown(row: ModelRow) -> Group:
    """The selected model: terms of its best (or smallest) estimate, fine-tune options, the reason."""
    plan = row.plan
    chosen = row.best
    if chosen is None:
        chosen = min(row.choices.values(), key=lambda c: c.inference.total_bytes)
    est = chosen.inference
    title = Text()
    title.append(f"{row.spec.name}", style="bold")
    title.append(f"  {row.spec.kind}, {row.spec.family or '?'}, {_params(row.spec.params)} parameters\n")
    verdict = "fits" if chosen.fits else "does NOT fit"
    title.append(
        f"inference at {est.precision.value} (context {est.context}): {est.total_human()} — {verdict} "
        f"in {plan.budget.usable_human()} usable",
        style="green" if chosen.fits else "red",
    )
    terms = Table(show_header=True, header_style="bold", box=None, padding=(0, 1), expand=True)
    terms.add_column("term", no_wrap=True, overflow="ellipsis", ratio=2)
    terms.add_column("bytes", justify="right", no_wrap=True, min_width=10)
    terms.add_column("formula", overflow="ellipsis", no_wrap=True, ratio=3)
    for term in est.terms:
        terms.add_row(term.label, term.human(), term.formula)
    ft = Table(show_header=True, header_style="bold", box=None, padding=(0, 1))
    ft.add_column("fine-tune (r=16, q/v, 512 tokens)")
    ft.add_column("peak", justify="right")
    ft.add_column("fits")
    for opt in plan.finetune:
        ft.add_row(opt.label, opt.breakdown.total_human(), "yes" if opt.fits else "no")
    port = Text(f"port a patch onto it: about {chosen.port_human()} peak\n", style="bold")
    if chosen.tokens_per_s:
        port.append(
            f"decode: about {chosen.tokens_per_s:,.1f} tokens/s at {chosen.precision.value} "
            "(bandwidth ÷ bytes read per token, an estimate)\n",
            style="",
        )
    return Group(title, Text(""), terms, Text(""), ft, Text(""), port, Text(chosen.reason, style="dim"))


def import_model_folder(src: str, name: str | None = None) -> Path:
    """Copy a local model folder into the model store (see :func:`portllm_edge.models.store.import_model_folder`)."""
    from portllm_edge.workflow.queries import import_model_folder as core_import

    return core_import(src, name)


class ModelsScreen(BaseScreen):
    """Which models fit this machine, at which precision, and why."""

    MODE = "models"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("i", "import_gguf", "Import GGUF"),
        Binding("f", "import_folder", "Import folder"),
        Binding("g", "refresh", "Refresh"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, ModelRow] = {}
        self._select_after: str | None = None

    def compose_body(self) -> ComposeResult:
        with Vertical(id="models-body"):
            budget = Static("planning for this machine ...", id="models-budget")
            yield budget
            table: DataTable[Any] = DataTable(
                id="models", classes="panel main", cursor_type="row", zebra_stripes=True
            )
            table.border_title = "Models (ranked as `pick`: fits, decodes at a usable speed, then largest)"
            yield table
            with VerticalScroll(id="breakdown-box", classes="panel") as box:
                box.border_title = "Memory breakdown"
                yield Static("select a model", id="breakdown")

    def on_mount(self) -> None:
        self.action_refresh()

    def palette_commands(self) -> list[tuple[str, str, Any]]:
        return [
            ("Import GGUF", "Convert a .gguf file into the local model store", self.action_import_gguf),
            (
                "Import model folder",
                "Copy a Hugging Face folder into the model store",
                self.action_import_folder,
            ),
            ("Refresh models", "Re-plan every model against the budget", self.action_refresh),
        ]

    def action_refresh(self) -> None:
        self.plan()

    @work(thread=True, exclusive=True, group="models")
    def plan(self) -> None:
        """Build the budget and rank every model; posts :class:`ModelsPlanned`."""
        try:
            budget = self.papp.deps.budget(measure_bandwidth=True)  # for the decode-speed column
            rows = plan_models(budget)
        except Exception as exc:
            notify_error_from_thread(self.app, exc)
            return
        self.post_message(ModelsPlanned(budget, rows))

    def on_models_planned(self, message: ModelsPlanned) -> None:
        budget = message.budget
        self.query_one("#models-budget", Static).update(
            Text.assemble(
                ("Budget ", "bold"),
                f"{budget.name} [{budget.device}]: {budget.usable_human()} usable "
                f"({budget.headroom_fraction:.0%} headroom)",
            )
        )
        table = self.query_one("#models", DataTable)
        self.rows = {r.key: r for r in message.rows}
        half = "bf16" if budget.bf16 else "fp16"
        lines: list[tuple[str, list[Any]]] = []
        for row in message.rows:
            cells: list[Any] = [row.spec.name, row.spec.kind, _params(row.spec.params)]
            for prec in ("nf4", "int8", half, "fp32"):
                c = row.choices.get(prec)
                if c is None:
                    cells.append(Text("-", style="dim"))
                else:
                    mark = "✓" if c.fits else "✗"
                    cells.append(
                        Text(
                            f"{mark} {short_human(c.inference.total_bytes)}",
                            style="green" if c.fits else "red",
                        )
                    )
            cells.append(row.best.precision.value if row.best else Text("none", style="red"))
            tps = row.best.tokens_per_s if row.best else None
            cells.append(
                Text(
                    f"{tps:,.0f}" if tps and tps >= 10 else f"{tps:.1f}" if tps else "-",
                    style="dim" if not tps else "",
                )
            )
            lines.append((row.key, cells))
        fill_table(table, MODEL_COLUMNS, lines)
        if self._select_after in self.rows:
            table.move_cursor(row=table.get_row_index(self._select_after))
            self._show(self._select_after)
            self._select_after = None
        elif message.rows:
            self._show(message.rows[0].key)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is not None and event.row_key.value is not None:
            self._show(event.row_key.value)

    def _show(self, key: str) -> None:
        row = self.rows.get(key)
        if row is not None:
            self.query_one("#breakdown", Static).update(render_breakdown(row))

    def action_import_gguf(self) -> None:
        def done(path: str | None) -> None:
            if path:
                self.import_gguf(path)

        self.app.push_screen(
            PathModal("Import a GGUF file into the model store", placeholder="/path/to/model.gguf"), done
        )

    def action_import_folder(self) -> None:
        def done(path: str | None) -> None:
            if path:
                self.import_folder(path)

        self.app.push_screen(
            PathModal(
                "Import a Hugging Face model folder (config.json + safetensors)",
                placeholder="/path/to/model-folder",
            ),
            done,
        )

    @work(thread=True, exclusive=True, group="models-import")
    def import_gguf(self, path: str) -> None:
        """Convert a GGUF file (transformers, dequantized to fp32) into the store."""
        from portllm_edge.workflow.queries import import_gguf

        self.app.call_from_thread(self.notify, f"importing {path} (this can take minutes)", markup=False)
        try:
            folder = import_gguf(path)
        except Exception as exc:
            notify_error_from_thread(self.app, exc)
            return
        self.app.call_from_thread(self.notify, f"imported {folder.name}", title="Model store", markup=False)
        self._select_after = f"store:{folder.name}"
        self.app.call_from_thread(self.plan)

    @work(thread=True, exclusive=True, group="models-import")
    def import_folder(self, path: str) -> None:
        """Copy a local model folder into the store."""
        try:
            folder = import_model_folder(path)
        except Exception as exc:
            notify_error_from_thread(self.app, exc)
            return
        self.app.call_from_thread(
            self.notify, f"imported {folder.name} into {folder.parent}", title="Model store", markup=False
        )
        self._select_after = f"store:{folder.name}"
        self.app.call_from_thread(self.plan)
