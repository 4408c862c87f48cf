"""Forecast, without task data, how much of a patch's gain survives the port onto a new base.

resolve (the old base given, or found in the model store from the patch's records) ->
features (weights; forward passes over generic text only when the calibrated feature needs
them) -> the calibration shipped with the package (:mod:`portllm_edge.forecast.calibrate`)
-> record (a ``forecast`` run in the history, keyed by :class:`ForecastKey`).

The record is what lets ``check``, which loads no weights, show a forecast: it looks up the
newest ``forecast`` run of the same patch, bases and calibration (:func:`recorded_forecast`).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from portllm_edge.workflow.types import Resolved

if TYPE_CHECKING:
    from portllm_edge.forecast import Calibration, Forecast, ForecastFeatures
    from portllm_edge.workflow.types import PatchRef

EFFECT_FEATURES = ("effect_cosine", "effect_kept")
"""Features that need forward passes over generic text (the others read weights only)."""

RECORD_KIND = "forecast"
"""The run kind a forecast is recorded as."""
LOOKUP_LIMIT = 500
"""How many of the newest ``forecast`` runs :func:`recorded_forecast` searches."""
_PATCH_FILES = ("adapter_config.json", "adapter_model.safetensors")


@dataclass(frozen=True)
class ForecastKey:
    """What a forecast is a function of: the patch, both bases and the calibration.

    Attributes:
        patch: :func:`patch_fingerprint` of the adapter files.
        old_base: the weight fingerprint (``w1:…``) of the base the patch was trained on.
        base: the weight fingerprint of the new base.
        calibration: :func:`calibration_id` of the calibration applied.
    """

    patch: str
    old_base: str
    base: str
    calibration: str

    def to_dict(self) -> dict[str, str]:
        """JSON-ready form (the ``key`` of a ``forecast`` run's inputs)."""
        return asdict(self)


@dataclass(frozen=True)
class ForecastOutcome:
    """The forecast and what it rests on.

    Attributes:
        resolved: the patch, the new base and the old base (with how it was found).
        features: every feature computed (:class:`~portllm_edge.forecast.ForecastFeatures`).
        forecast: the predicted recovered gain with its interval.
        seconds: wall time, seconds.
        key: what the forecast is a function of (the record's key).
        run_id: the ``forecast`` run that records it.
    """

    resolved: Resolved
    features: ForecastFeatures
    forecast: Forecast
    seconds: float
    key: ForecastKey | None = None
    run_id: str | None = None


@dataclass(frozen=True)
class RecordedForecast:
    """A forecast found in the run history.

    Attributes:
        forecast: the forecast as it was recorded.
        run_id: the ``forecast`` run.
        started_at: when it ran (ISO 8601 UTC).
        features: the features recorded with it.
    """

    forecast: Forecast
    run_id: str
    started_at: str
    features: dict[str, Any]


def patch_fingerprint(patch: PatchRef) -> str:
    """``"p1:<sha256 hex, 32 chars>"`` over the adapter's config and weights files.

    A stored patch's digests come from its manifest (verified when the store read it); an adapter
    folder's are hashed here. The same files give the same value either way.

    Raises:
        PatchError: a file is missing from the adapter folder.
    """
    from portllm_edge.errors import PatchError
    from portllm_edge.patches.manifest import files_checksum
    from portllm_edge.patches.store import sha256_file

    recorded = patch.stored.manifest.files if patch.stored is not None else {}
    digests = {}
    for name in _PATCH_FILES:
        digest = recorded.get(name)
        if digest is None:
            path = patch.adapter_dir / name
            try:
                digest = sha256_file(path)
            except OSError as exc:
                raise PatchError(
                    f"{path}: cannot read ({exc}).", hint="point to a folder holding a LoRA adapter"
                ) from exc
        digests[name] = digest
    return "p1:" + files_checksum(digests)[:32]


def calibration_id(cal: Calibration) -> str:
    """``"c1:<sha256 hex, 12 chars>"`` of the fitted values a forecast depends on (feature, curve, interval, range)."""
    fitted = {
        k: getattr(cal, k)
        for k in (
            "feature",
            "transform",
            "link",
            "intercept",
            "slope",
            "half_width",
            "feature_min",
            "feature_max",
        )
    }
    return "c1:" + hashlib.sha256(json.dumps(fitted, sort_keys=True).encode()).hexdigest()[:12]


def forecast_key(r: Resolved, cal: Calibration, *, old_flag: str = "--old") -> ForecastKey:
    """The key of a forecast of ``r``'s patch from its old base onto its new base.

    Raises:
        ConfigError: the old base is not known, or it holds the new base's weights.
    """
    from portllm_edge.workflow.resolve import distinct_weights, unknown_old_base

    if r.old_base is None:
        raise unknown_old_base(r, old_flag=old_flag)
    old_fp, new_fp = distinct_weights(r.old_base, r.base, old_flag=old_flag)
    return ForecastKey(patch_fingerprint(r.patch), old_fp, new_fp, calibration_id(cal))


def _forecast_of(record: Any) -> Forecast | None:
    from portllm_edge.forecast import Forecast

    raw = (record.results or {}).get("forecast")
    if not isinstance(raw, dict):
        return None
    try:
        return Forecast(**{**raw, "calibrated_range": tuple(raw["calibrated_range"])})
    except (TypeError, KeyError):
        return None


def recorded_forecast(key: ForecastKey, *, limit: int = LOOKUP_LIMIT) -> RecordedForecast | None:
    """The newest ``forecast`` run recorded for exactly ``key``, or None.

    Raises:
        StoreError: the run history cannot be read.
    """
    from portllm_edge.history import list_runs

    want = key.to_dict()
    for run in list_runs(RECORD_KIND, limit=limit):
        if run.status != "ok" or (run.inputs or {}).get("key") != want:
            continue
        fc = _forecast_of(run)
        if fc is not None:
            return RecordedForecast(fc, run.id, run.started_at, dict(run.results.get("features") or {}))
    return None


def forecast_resolved(r: Resolved, *, cal: Calibration | None = None) -> ForecastOutcome:
    """:func:`forecast` of an already resolved patch and bases (``check --forecast`` calls this)."""
    from portllm_edge.forecast import Calibration, candidate_features, forecast_from
    from portllm_edge.patches import validate_adapter_dir
    from portllm_edge.workflow.record import recorded

    start = time.perf_counter()
    cal = cal or Calibration.load()
    key = forecast_key(r, cal)
    assert r.old_base is not None  # forecast_key refuses an unknown old base
    validate_adapter_dir(r.patch.adapter_dir)
    inputs = {
        "patch": r.patch.ref,
        "base": r.base.ref,
        "old": str(r.old_base.path),
        "old_base_source": r.old_base_source,
        "key": key.to_dict(),
    }
    with recorded(RECORD_KIND, inputs) as run:
        feats = candidate_features(
            r.patch.adapter_dir, r.old_base.path, r.base.path, effects=cal.feature in EFFECT_FEATURES
        )
        result = forecast_from(feats.to_dict(), cal)
        seconds = time.perf_counter() - start
        run.results = {"forecast": result.to_dict(), "features": feats.to_dict(), "seconds": seconds}
    return ForecastOutcome(r, feats, result, seconds, key, run.id)


def forecast(patch: str, base: str, *, old: str | None = None) -> ForecastOutcome:
    """Predict the share of ``patch``'s gain that survives porting it onto ``base``, and record it.

    The forecast is recorded as a ``forecast`` run whose inputs hold its :class:`ForecastKey`,
    so ``check`` shows it later without loading weights (:func:`recorded_forecast`).

    Args:
        patch: a store name or adapter folder, trained on the old base.
        base: the new base.
        old: the base the patch was trained on (default: looked up in the model store).

    Raises:
        ConfigError: the old base is not known or holds the new base's weights, or the calibration
            file is unreadable.
        PatchError: an adapter folder that is not a valid LoRA adapter (non-finite factors, a rank
            that disagrees with ``r``: :func:`~portllm_edge.patches.validate_adapter_dir`).
        StoreError, BaseModelError, CompatibilityError: as ``check``; StoreError also when the run
            history cannot be written.
    """
    from portllm_edge.workflow.resolve import resolve

    return forecast_resolved(resolve(patch, base, old=old, validate=False))  # validated there


def forecast_from_drift(drift: object) -> Forecast | None:
    """The calibrated forecast from a drift table alone, or ``None`` when the calibrated feature needs text.

    Args:
        drift: a :class:`~portllm_edge.porting.drift.DriftReport`.
    """
    from portllm_edge.errors import ConfigError
    from portllm_edge.forecast import Calibration, forecast_from

    try:
        cal = Calibration.load()
    except ConfigError:  # check must not fail for the forecast it adds; `forecast` reports the error
        return None
    if cal.feature in EFFECT_FEATURES:
        return None
    feats = {
        "drift_ratio": getattr(drift, "median_ratio", None),
        "projected_ratio": getattr(drift, "median_projected_ratio", None),
    }
    try:
        return forecast_from(feats, cal)
    except ConfigError:
        return None
