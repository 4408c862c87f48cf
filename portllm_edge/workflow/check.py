"""Check a patch against a base without loading weights: resolve -> preflight (-> drift table) -> forecast.

The old base is the one given, else the one found in the model store from the patch's
records (see :mod:`portllm_edge.workflow.resolve`), so the tokenizer comparison and the
drift table need no ``--old`` for a patch whose base is in the store.

The forecast of the recovered gain comes from the drift table when the calibrated feature
reads weights only; else it is the one recorded in the run history for exactly this patch,
these bases and this calibration (``portllm-edge forecast`` records each one it computes),
or, with ``compute_forecast``, it is computed now (forward passes over generic text) and
recorded. Without any of these, :attr:`CheckOutcome.forecast_note` says why.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from portllm_edge.workflow.types import Resolved

if TYPE_CHECKING:
    from portllm_edge.forecast import Forecast
    from portllm_edge.models.refs import ResolvedBase
    from portllm_edge.porting.drift import DriftReport
    from portllm_edge.porting.preflight import CheckResult, PreflightReport
    from portllm_edge.workflow.types import PatchRef

ForecastSource = Literal["drift table", "recorded", "computed"]


@dataclass(frozen=True)
class CheckOutcome:
    """A preflight and, when the old base is known, the weight-drift table and the forecast.

    Attributes:
        resolved: the patch, the new base and the old base (with how it was found).
        preflight: the compatibility report; with ``--old`` naming another base than the one the
            adapter config names, it ends with an ``old_base`` warning (see :func:`old_base_check`).
        drift: per-module drift vs patch size (None without an old base, with ``drift=False``,
            when the target modules do not match, or when an old base found in the store
            belongs to a patch that does not fit).
        forecast: the calibrated forecast of the recovered gain, or None (see ``forecast_note``).
        forecast_source: ``drift table`` (a weights-only feature, from the table above),
            ``recorded`` (a ``forecast`` run of this exact patch, bases and calibration) or
            ``computed`` (now, with ``compute_forecast``; recorded as run ``forecast_run``).
        forecast_run: the ``forecast`` run that holds it (recorded or computed).
        forecast_at: when that run started (ISO 8601 UTC).
        forecast_note: without a forecast, why (one line; :attr:`can_compute_forecast` says whether
            computing it now would work).
    """

    resolved: Resolved
    preflight: PreflightReport
    drift: DriftReport | None = None
    forecast: Forecast | None = None
    forecast_source: ForecastSource | None = None
    forecast_run: str | None = None
    forecast_at: str | None = None
    forecast_note: str | None = None

    @property
    def can_compute_forecast(self) -> bool:
        """True when a forecast could be computed now (the old base is known and the preflight passed)."""
        return self.resolved.old_base is not None and self.preflight.ok

    def forecast_line(self) -> str:
        """One line: the forecast with where it came from, or :attr:`forecast_note`."""
        if self.forecast is None:
            return self.forecast_note or ""
        line = self.forecast.summary()
        if self.forecast_source == "recorded":
            when = (self.forecast_at or "")[:16].replace("T", " ")
            line += f" [recorded by run {self.forecast_run} at {when} UTC for this patch, these bases and calibration]"
        elif self.forecast_source == "computed":
            line += f" [computed now; recorded as run {self.forecast_run}]"
        return line


def _named_base(patch: PatchRef) -> tuple[str, Path, ResolvedBase] | None:
    """``(name, adapter_config.json, the local base it names)`` from ``base_model_name_or_path``, or None.

    Looked up without a download: a folder, a model-store name (or a path's last part), or a
    hub id in the local Hugging Face cache. None when the name is empty or found nowhere here.
    """
    import json

    from portllm_edge.errors import BaseModelError
    from portllm_edge.models.refs import find_store_base, resolve_base

    cfg_path = patch.adapter_dir / "adapter_config.json"
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # the preflight reports an unreadable config
    name = cfg.get("base_model_name_or_path") if isinstance(cfg, dict) else None
    if not isinstance(name, str) or not name.strip() or name.lower().endswith(".gguf"):
        return None
    try:
        if Path(name).expanduser().is_dir():
            return name, cfg_path, resolve_base(name)
        found = find_store_base(name)
        if found is not None:
            return name, cfg_path, found[0]
        return name, cfg_path, resolve_base(name)  # a hub id in the local cache; never downloads
    except BaseModelError:
        return None


def old_base_check(patch: PatchRef, old: ResolvedBase, *, old_flag: str = "--old") -> CheckResult | None:
    """A warning when ``old`` holds other weights than the base the adapter config names, else None.

    The named base (``adapter_config.json`` ``base_model_name_or_path``) is compared by weight
    fingerprint when it is found here (:func:`_named_base`); a name found nowhere here is not
    evidence either way, so it gives no warning.
    """
    from portllm_edge.porting.preflight import CheckResult

    named = _named_base(patch)
    if named is None:
        return None
    name, cfg_path, base = named
    if base.path.resolve() == old.path.resolve():
        return None
    named_fp, old_fp = base.fingerprint(), old.fingerprint()
    if named_fp == old_fp:
        return None
    return CheckResult(
        "old_base",
        "warn",
        f"{old_flag} {old.ref} is not the base the patch names: {cfg_path.name} `base_model_name_or_path` is "
        f"{name!r} ({base.path}), whose weights differ; the tokenizer and drift checks compare against "
        f"{old.ref}",
        {
            "named": name,
            "named_path": str(base.path),
            "named_fingerprint": named_fp,
            "old_fingerprint": old_fp,
        },
        hint=f"pass {old_flag} {name} if the patch was trained on it; if it was trained on {old.ref}, "
        f"set `base_model_name_or_path` in {cfg_path} to {old.ref}",
    )


def _forecast_fields(
    r: Resolved, report: PreflightReport, table: DriftReport | None, compute: bool
) -> dict[str, object]:
    """The ``forecast*`` fields of :class:`CheckOutcome` (see the module docstring)."""
    from portllm_edge.errors import ConfigError
    from portllm_edge.forecast import Calibration
    from portllm_edge.workflow.forecast import (
        forecast_from_drift,
        forecast_key,
        forecast_resolved,
        recorded_forecast,
    )
    from portllm_edge.workflow.resolve import own_base_error

    if r.old_base is None:
        own = own_base_error(r)
        if own is not None:
            return {"forecast_note": f"forecast: {own.one_line()}"}
        return {
            "forecast_note": "forecast: needs the base the patch was trained on, which is not in the model "
            "store; import it, or name it with --old"
        }
    if compute:
        if not report.ok:
            return {"forecast_note": "forecast: not computed, the preflight failed (see above)"}
        done = forecast_resolved(r)
        return {"forecast": done.forecast, "forecast_source": "computed", "forecast_run": done.run_id}
    if table is not None:
        from_table = forecast_from_drift(table)
        if from_table is not None:
            return {"forecast": from_table, "forecast_source": "drift table"}
    try:
        key = forecast_key(r, Calibration.load())
    except ConfigError as exc:  # an unreadable calibration: `forecast` reports it in full
        return {"forecast_note": f"forecast: unavailable ({exc.message})"}
    found = recorded_forecast(key)
    if found is None:
        return {
            "forecast_note": "forecast of the recovered gain: none recorded for this patch and these bases"
        }
    return {
        "forecast": found.forecast,
        "forecast_source": "recorded",
        "forecast_run": found.run_id,
        "forecast_at": found.started_at,
    }


def check(
    patch: str, base: str, *, old: str | None = None, drift: bool = True, compute_forecast: bool = False
) -> CheckOutcome:
    """Preflight ``patch`` against ``base`` (configs, tokenizers, safetensors headers), drift and forecast.

    Args:
        patch: a store name or adapter folder.
        base: the new base.
        old: the base the patch was trained on (default: looked up in the model store).
        drift: also compute the drift table when the old base is known (streams weights).
        compute_forecast: compute the forecast now (forward passes over generic text; seconds to
            minutes) and record it, instead of looking up a recorded one.

    Raises:
        ConfigError: ``old`` holds the same weights as ``base`` (no update to port across).
        StoreError, PatchError, BaseModelError: a reference that resolves to nothing.
    """
    from portllm_edge.porting.preflight import run_preflight
    from portllm_edge.workflow.resolve import distinct_weights, resolve

    r = resolve(patch, base, old=old, validate=False)
    extra = []
    if old is not None and r.old_base is not None:
        distinct_weights(r.old_base, r.base, old_flag="--old")
        mismatch = old_base_check(r.patch, r.old_base)
        if mismatch is not None:
            extra.append(mismatch)
    old_dir = r.old_base.path if r.old_base is not None else None
    report = run_preflight(r.patch.adapter_dir, r.base.path, old_base_dir=old_dir)
    if extra:
        report = dataclasses.replace(report, checks=[*report.checks, *extra])
    table = None
    # a given --old is measured unless the modules don't match; a looked-up one only when the patch fits
    fits = report.get("target_modules").status != "fail" and (r.old_base_source == "given" or report.ok)
    if old_dir is not None and drift and fits:
        from portllm_edge.porting.drift import compute_drift

        table = compute_drift(r.patch.adapter_dir, old_dir, r.base.path)
    fields = _forecast_fields(r, report, table, compute_forecast)
    return CheckOutcome(r, report, table, **fields)  # type: ignore[arg-type]
