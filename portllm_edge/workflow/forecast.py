"""Forecast, without task data, how much of a patch's gain survives the port onto a new base.

resolve (the old base given, or found in the model store from the patch's records) ->
features (weights; forward passes over generic text only when the calibrated feature needs
them) -> the calibration shipped with the package (:mod:`portllm_edge.forecast.calibrate`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from portllm_edge.workflow.types import Resolved

if TYPE_CHECKING:
    from portllm_edge.forecast import Forecast, ForecastFeatures

EFFECT_FEATURES = ("effect_cosine", "effect_kept")
"""Features that need forward passes over generic text (the others read weights only)."""


@dataclass(frozen=True)
class ForecastOutcome:
    """The forecast and what it rests on.

    Attributes:
        resolved: the patch, the new base and the old base (with how it was found).
        features: every feature computed (:class:`~portllm_edge.forecast.ForecastFeatures`).
        forecast: the predicted recovered gain with its interval.
        seconds: wall time, seconds.
    """

    resolved: Resolved
    features: ForecastFeatures
    forecast: Forecast
    seconds: float


def forecast(patch: str, base: str, *, old: str | None = None) -> ForecastOutcome:
    """Predict the share of ``patch``'s gain that survives porting it onto ``base``.

    Args:
        patch: a store name or adapter folder, trained on the old base.
        base: the new base.
        old: the base the patch was trained on (default: looked up in the model store).

    Raises:
        ConfigError: the old base is not known or holds the new base's weights, or the calibration
            file is unreadable.
        PatchError: an adapter folder that is not a valid LoRA adapter (non-finite factors, a rank
            that disagrees with ``r``: :func:`~portllm_edge.patches.validate_adapter_dir`).
        StoreError, BaseModelError, CompatibilityError: as ``check``.
    """
    from portllm_edge.errors import ConfigError
    from portllm_edge.forecast import Calibration, candidate_features, forecast_from
    from portllm_edge.workflow.resolve import distinct_weights, resolve

    start = time.perf_counter()
    r = resolve(patch, base, old=old)
    if r.old_base is None:
        raise ConfigError(
            "the old base is not known: the patch records no base that is in the model store.",
            hint="pass --old with the base the patch was trained on",
        )
    distinct_weights(r.old_base, r.base, old_flag="--old")
    cal = Calibration.load()
    feats = candidate_features(
        r.patch.adapter_dir, r.old_base.path, r.base.path, effects=cal.feature in EFFECT_FEATURES
    )
    result = forecast_from(feats.to_dict(), cal)
    return ForecastOutcome(r, feats, result, time.perf_counter() - start)


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
