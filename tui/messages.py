"""Domain messages that thread workers post back to the UI thread.

Why this module exists: workers run the core off the UI thread and must not touch
widgets; they post one of these small records instead, and the screen updates
itself in the handler. Tests observe them with ``App.run_test(message_hook=...)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.message import Message


@dataclass
class HardwareRead(Message):
    """A fresh hardware reading and the budget derived from it."""

    report: Any
    """:class:`portllm_edge.hardware.HardwareReport`."""
    budget: Any
    """:class:`portllm_edge.planning.Budget`, or ``None`` when it could not be built."""


@dataclass
class RunsLoaded(Message):
    """The run history's most recent records (``RunRecord`` list, newest first)."""

    runs: list[Any]


@dataclass
class SavingsLoaded(Message):
    """The latest measured saving per base (:class:`portllm_edge.reports.MeasuredSaving` list)."""

    savings: list[Any]


@dataclass
class ModelsPlanned(Message):
    """The Models screen's rows: one per model, ranked, with every precision planned."""

    budget: Any
    rows: list[Any]


@dataclass
class PatchesLoaded(Message):
    """The patch store's manifests, with each entry's size in bytes."""

    patches: list[Any]
    sizes: dict[str, int]


@dataclass
class PortOptionsLoaded(Message):
    """What the Port screen can offer: stored patch names and local-store model names."""

    patches: list[str]
    models: list[str]


@dataclass
class PrecisionPicked(Message):
    """The one precision decision for a base on this machine (``None`` when the base can't be sized)."""

    base: str
    precision: str | None
    note: str
    fits: bool = True
    """The decided precision's estimated port peak fits the budget (else it is the smallest)."""


@dataclass
class PreflightDone(Message):
    """The preflight report of the chosen patch against the chosen base."""

    report: Any
    """:class:`portllm_edge.porting.preflight.PreflightReport`."""
    then_port: bool = False
    """Continue with the port when the report has no failure."""
    default_name: str | None = None
    """The store name the port gets without a typed name (``<patch>@<base id>``)."""
    check: Any = None
    """The :class:`portllm_edge.workflow.CheckOutcome` the report came from (its recorded forecast)."""


@dataclass
class ForecastDone(Message):
    """A forecast computed on demand on the Port screen (``ctrl+f``)."""

    patch: str
    base: str
    outcome: Any
    """:class:`portllm_edge.workflow.ForecastOutcome`."""


@dataclass
class PortPhase(Message):
    """A port phase started (``check``, ``load``, ``attach``, ``evaluate``, ``save``)."""

    phase: str
    elapsed: float
    """Seconds since the port started."""


@dataclass
class PortFinished(Message):
    """A port completed; ``summary`` is a :class:`tui.screens.port.PortSummary`."""

    summary: Any


@dataclass
class FleetProgress(Message):
    """A fleet port ("all patches of this lineage") starts patch ``index`` of ``total``."""

    index: int
    total: int
    patch: str


@dataclass
class FleetFinished(Message):
    """A fleet port completed; ``outcome`` is a :class:`portllm_edge.workflow.FleetOutcome`."""

    outcome: Any


@dataclass
class PortStopped(Message):
    """A port ended without a result: cancelled, or a core error (already notified)."""

    reason: str
    cancelled: bool


@dataclass
class BaselineMeasured(Message):
    """The fine-tune baseline was measured (ctrl+r): the summary with it, or ``None`` when it failed."""

    summary: Any
