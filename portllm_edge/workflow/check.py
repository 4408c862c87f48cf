"""Check a patch against a base without loading weights: resolve -> preflight (-> drift table).

The old base is the one given, else the one found in the model store from the patch's
records (see :mod:`portllm_edge.workflow.resolve`), so the tokenizer comparison and the
drift table need no ``--old`` for a patch whose base is in the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from portllm_edge.workflow.types import Resolved

if TYPE_CHECKING:
    from portllm_edge.forecast import Forecast
    from portllm_edge.porting.drift import DriftReport
    from portllm_edge.porting.preflight import PreflightReport


@dataclass(frozen=True)
class CheckOutcome:
    """A preflight and, when the old base is known, the weight-drift table.

    Attributes:
        resolved: the patch, the new base and the old base (with how it was found).
        preflight: the compatibility report.
        drift: per-module drift vs patch size (None without an old base, with ``drift=False``,
            when the target modules do not match, or when an old base found in the store
            belongs to a patch that does not fit).
        forecast: the calibrated forecast of the recovered gain from the drift table
            (:func:`portllm_edge.workflow.forecast.forecast_from_drift`), or None without a drift
            table or when the calibrated feature needs forward passes (``portllm-edge forecast``).
    """

    resolved: Resolved
    preflight: PreflightReport
    drift: DriftReport | None = None
    forecast: Forecast | None = None


def check(patch: str, base: str, *, old: str | None = None, drift: bool = True) -> CheckOutcome:
    """Preflight ``patch`` against ``base`` (configs, tokenizers, safetensors headers) and measure drift.

    Args:
        patch: a store name or adapter folder.
        base: the new base.
        old: the base the patch was trained on (default: looked up in the model store).
        drift: also compute the drift table when the old base is known (streams weights).

    Raises:
        StoreError, PatchError, BaseModelError: a reference that resolves to nothing.
    """
    from portllm_edge.porting.preflight import run_preflight
    from portllm_edge.workflow.resolve import resolve

    r = resolve(patch, base, old=old, validate=False)
    old_dir = r.old_base.path if r.old_base is not None else None
    report = run_preflight(r.patch.adapter_dir, r.base.path, old_base_dir=old_dir)
    table = None
    # a given --old is measured unless the modules don't match; a looked-up one only when the patch fits
    fits = report.get("target_modules").status != "fail" and (r.old_base_source == "given" or report.ok)
    if old_dir is not None and drift and fits:
        from portllm_edge.porting.drift import compute_drift

        table = compute_drift(r.patch.adapter_dir, old_dir, r.base.path)
    if table is None:
        return CheckOutcome(r, report, None)
    from portllm_edge.workflow.forecast import forecast_from_drift

    return CheckOutcome(r, report, table, forecast_from_drift(table))
