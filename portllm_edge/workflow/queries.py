"""What the clients read and manage besides the jobs: hardware, plans, stores, runs, reports.

The app (``tui/``) imports the core only through :mod:`portllm_edge.workflow` (a test
enforces it), so every lookup it needs is here, as a thin call into the module that owns
it. Each import happens at call time: importing this module stays cheap (no torch).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from portllm_edge.errors import PortllmError as PortllmError

if TYPE_CHECKING:
    from portllm_edge import paths as paths
    from portllm_edge.evaluation.paired import PortStatistics as PortStatistics
    from portllm_edge.evaluation.tasks import check_template as check_template
    from portllm_edge.evaluation.tasks import list_tasks as list_tasks
    from portllm_edge.evaluation.tasks import parse_verbalizers as parse_verbalizers
    from portllm_edge.export import EXPORT_FORMATS as EXPORT_FORMATS
    from portllm_edge.export import ExportResult
    from portllm_edge.hardware import HardwareReport as HardwareReport
    from portllm_edge.hardware import probe as probe
    from portllm_edge.hardware.sizes import format_size as format_size
    from portllm_edge.history import RunRecord as RunRecord
    from portllm_edge.history import get_run as get_run
    from portllm_edge.history import list_runs as list_runs
    from portllm_edge.history.health import PatchHealth as PatchHealth
    from portllm_edge.history.health import patch_health as patch_health
    from portllm_edge.models.gguf import import_gguf as import_gguf
    from portllm_edge.models.store import import_model_folder as import_model_folder
    from portllm_edge.patches import PatchStore as PatchStore
    from portllm_edge.patches.store import validate_name as validate_name
    from portllm_edge.planning import Budget as Budget
    from portllm_edge.planning import Precision as Precision
    from portllm_edge.planning import memory_budget as memory_budget
    from portllm_edge.planning import pick_models as pick_models
    from portllm_edge.planning import plan_model as plan_model
    from portllm_edge.planning.decide import PrecisionDecision as PrecisionDecision
    from portllm_edge.planning.decide import decide_precision as decide_precision
    from portllm_edge.planning.pick import RankedChoice
    from portllm_edge.porting.port import ported_patch_name as ported_patch_name
    from portllm_edge.porting.preflight import PreflightReport as PreflightReport
    from portllm_edge.porting.preflight import run_preflight as run_preflight
    from portllm_edge.reports import REPORT_KINDS as REPORT_KINDS
    from portllm_edge.reports import Report as Report
    from portllm_edge.reports import build_report as build_report
    from portllm_edge.reports import describe_run as describe_run
    from portllm_edge.reports import job_label as job_label
    from portllm_edge.reports import latest_savings as latest_savings
    from portllm_edge.reports import report_runs as report_runs
    from portllm_edge.reports import select_report_runs as select_report_runs
    from portllm_edge.reports import task_label as task_label
    from portllm_edge.reports import write_report as write_report

_LAZY = {
    "memory_budget": ("portllm_edge.planning", "memory_budget"),
    "pick_models": ("portllm_edge.planning", "pick_models"),
    "plan_model": ("portllm_edge.planning", "plan_model"),
    "decide_precision": ("portllm_edge.planning.decide", "decide_precision"),
    "PrecisionDecision": ("portllm_edge.planning.decide", "PrecisionDecision"),
    "Precision": ("portllm_edge.planning", "Precision"),
    "import_model_folder": ("portllm_edge.models.store", "import_model_folder"),
    "import_gguf": ("portllm_edge.models.gguf", "import_gguf"),
    "list_runs": ("portllm_edge.history", "list_runs"),
    "get_run": ("portllm_edge.history", "get_run"),
    "patch_health": ("portllm_edge.history.health", "patch_health"),
    "PatchHealth": ("portllm_edge.history.health", "PatchHealth"),
    "describe_run": ("portllm_edge.reports", "describe_run"),
    "job_label": ("portllm_edge.reports", "job_label"),
    "build_report": ("portllm_edge.reports", "build_report"),
    "write_report": ("portllm_edge.reports", "write_report"),
    "format_size": ("portllm_edge.hardware.sizes", "format_size"),
    "paths": ("portllm_edge", "paths"),
    "check_template": ("portllm_edge.evaluation.tasks", "check_template"),
    "EXPORT_FORMATS": ("portllm_edge.export", "EXPORT_FORMATS"),
    "list_tasks": ("portllm_edge.evaluation.tasks", "list_tasks"),
    "parse_verbalizers": ("portllm_edge.evaluation.tasks", "parse_verbalizers"),
    "HardwareReport": ("portllm_edge.hardware", "HardwareReport"),
    "probe": ("portllm_edge.hardware", "probe"),
    "RunRecord": ("portllm_edge.history", "RunRecord"),
    "PatchStore": ("portllm_edge.patches", "PatchStore"),
    "validate_name": ("portllm_edge.patches.store", "validate_name"),
    "Budget": ("portllm_edge.planning", "Budget"),
    "ported_patch_name": ("portllm_edge.porting.port", "ported_patch_name"),
    "PreflightReport": ("portllm_edge.porting.preflight", "PreflightReport"),
    "run_preflight": ("portllm_edge.porting.preflight", "run_preflight"),
    "REPORT_KINDS": ("portllm_edge.reports", "REPORT_KINDS"),
    "Report": ("portllm_edge.reports", "Report"),
    "latest_savings": ("portllm_edge.reports", "latest_savings"),
    "report_runs": ("portllm_edge.reports", "report_runs"),
    "select_report_runs": ("portllm_edge.reports", "select_report_runs"),
    "task_label": ("portllm_edge.reports", "task_label"),
    "PortStatistics": ("portllm_edge.evaluation.paired", "PortStatistics"),
}
"""Names passed through unchanged from the module that owns them, imported on first use."""


def __getattr__(name: str) -> Any:
    """Import a :data:`_LAZY` name from its owner on first use (PEP 562), so importing this stays cheap."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    module, attr = _LAZY[name]
    return getattr(importlib.import_module(module), attr)


def patch_store() -> PatchStore:
    """The patch store (list, verify, export, remove)."""
    from portllm_edge.patches import PatchStore

    return PatchStore()


def export_for_serving(name: str, fmt: str, out: str | Path, *, force: bool = False) -> ExportResult:
    """Export a stored patch as ``patch export NAME --format FMT --out OUT`` does (serving check first).

    Args:
        name: Store name.
        fmt: ``peft``, ``vllm`` or ``gguf-lora`` (:data:`~portllm_edge.export.EXPORT_FORMATS`).
        out: Destination folder (``peft``, ``vllm``; a ``.tar``/``.tgz`` for ``peft``) or ``.gguf`` file.
        force: Replace ``out``.

    Raises:
        ExportError, StoreError: an unknown format, the runtime's blockers, a bad destination.
    """
    from portllm_edge.export import export_patch, resolve_target

    return export_patch(resolve_target(name), fmt, Path(out).expanduser(), force=force)


def store_model_names() -> list[str]:
    """Names of the models in the model store, sorted."""
    from portllm_edge.models.refs import store_models

    return [p.name for p in store_models()]


def task_names() -> list[str]:
    """Names of the evaluation tasks."""
    from portllm_edge.evaluation.tasks import list_tasks

    return [t.name for t in list_tasks()]


def preflight(patch: str, base: str) -> PreflightReport:
    """The compatibility preflight of ``patch`` on ``base``, with the old base from the model store when known."""
    from portllm_edge.workflow.check import check

    return check(patch, base, drift=False).preflight


def home_dir() -> Path:
    """The data folder (stores, run history)."""
    from portllm_edge import paths

    return paths.home()


@dataclass(frozen=True)
class RankedModel:
    """One model in ``pick``'s order, with its other precisions for a table.

    Attributes:
        choice: ``pick``'s row for the model: its decided precision when a port fits there
            (:func:`~portllm_edge.planning.decide_precision`, job ``port``), else the smallest.
        by_precision: Precision value -> the model's row at that precision (each asked precision).
    """

    choice: RankedChoice
    by_precision: dict[str, RankedChoice] = field(default_factory=dict)

    @property
    def best(self) -> RankedChoice | None:
        """``pick``'s choice when a port fits it, else ``None``."""
        return self.choice if self.choice.fits else None


def rank_models(
    budget: Budget,
    *,
    precisions: tuple[str, ...] | None = None,
    context: int = 2048,
    family: str | None = None,
    include_unfit: bool = True,
) -> list[RankedModel]:
    """Every profile and store model in ``portllm-edge pick``'s order, one entry per model.

    The order and each model's precision are :func:`~portllm_edge.planning.pick_models`'s with
    ``pick``'s own arguments (every precision, one row per model), so the CLI's ``pick`` and the
    app's Models screen show one ranking; models that fit nowhere follow when ``include_unfit``.
    ``by_precision`` adds each of ``precisions`` (default: all) for the table's columns.

    Raises:
        ConfigError: unknown family.
    """
    from portllm_edge.planning import ALL_PRECISIONS, pick_models

    order = pick_models(budget=budget, context=context, family=family, include_unfit=include_unfit)
    every = pick_models(
        budget=budget,
        context=context,
        family=family,
        precisions=ALL_PRECISIONS if precisions is None else precisions,
        all_precisions=True,
        include_unfit=True,
    )
    cells: dict[tuple[str, str], dict[str, RankedChoice]] = {}
    for c in every:
        cells.setdefault((c.model.kind, c.model.name), {})[c.precision.value] = c
    return [RankedModel(c, cells.get((c.model.kind, c.model.name), {})) for c in order]
