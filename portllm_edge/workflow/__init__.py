"""The workflow layer: each user-facing job as one function that composes the core's steps.

resolve -> preflight -> load -> attach -> evaluate -> save -> record. The CLI commands,
the app (``tui/``) and the demo call these functions and read the typed results in
:mod:`portllm_edge.workflow.types`; they call nothing below. The measurement worker runs
the measured jobs of :mod:`portllm_edge.workflow.jobs` (a port's load -> attach -> evaluate,
the LoRA fine-tune baseline), which use the same steps (:mod:`portllm_edge.workflow.steps`).

=============  ==============================================================
``port``       port a patch onto an updated base (load/attach/evaluate measured in a worker)
``port_fleet`` port every stored patch of one base onto its update, loading it once (resumable)
``evaluate``   accuracy of a base, optionally with a patch (same preflight + rewrite as port)
``compare``    the PortLLM table for one task
``bench``      peak memory of LoRA fine-tuning vs porting, each in its own worker
``train``      LoRA fine-tune a patch, with a held-out before/after check
``update``     make an updated base by continued pretraining (``update_chain``: v1 -> v2 -> ... -> vK)
``experiment`` all of the above, cached: v1 -> v2, patch, baseline, port, compare, measure
``check``      the preflight (and drift table) without loading weights
``forecast``   the share of a patch's gain that survives a port, from weights and generic text
=============  ==============================================================

Every run is recorded through :func:`portllm_edge.workflow.record.recorded`, also when it
fails or is interrupted.
"""

from __future__ import annotations

from portllm_edge.history.store import RunCancelled
from portllm_edge.workflow.bench import bench
from portllm_edge.workflow.check import CheckOutcome, check
from portllm_edge.workflow.compare import CompareRequest, compare
from portllm_edge.workflow.evaluate import EvalOutcome, EvalRequest, evaluate
from portllm_edge.workflow.experiment import (
    ExperimentResult,
    ExperimentSettings,
    ExperimentTask,
    UpdateSummary,
    experiment,
)
from portllm_edge.workflow.fleet import FleetItem, FleetOutcome, port_fleet
from portllm_edge.workflow.forecast import ForecastOutcome, forecast
from portllm_edge.workflow.port import LoraShape, PortRequest, port
from portllm_edge.workflow.train import (
    TrainSpec,
    UpdateChainRequest,
    UpdateRequest,
    no_gain_hint,
    train,
    update,
    update_chain,
)
from portllm_edge.workflow.types import (
    EvalSpec,
    EvalSummary,
    Memory,
    PatchRef,
    PortOutcome,
    Resolved,
    Saving,
    TrainOutcome,
)

__all__ = [
    "CheckOutcome",
    "CompareRequest",
    "EvalOutcome",
    "EvalRequest",
    "EvalSpec",
    "EvalSummary",
    "ExperimentResult",
    "ExperimentSettings",
    "ExperimentTask",
    "FleetItem",
    "FleetOutcome",
    "ForecastOutcome",
    "LoraShape",
    "Memory",
    "PatchRef",
    "PortOutcome",
    "PortRequest",
    "Resolved",
    "RunCancelled",
    "Saving",
    "TrainOutcome",
    "TrainSpec",
    "UpdateChainRequest",
    "UpdateRequest",
    "UpdateSummary",
    "bench",
    "check",
    "compare",
    "evaluate",
    "experiment",
    "forecast",
    "no_gain_hint",
    "port",
    "port_fleet",
    "train",
    "update",
    "update_chain",
]
