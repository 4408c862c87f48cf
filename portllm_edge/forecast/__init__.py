"""A data-free forecast of how much of a patch's gain survives a port (issue 13).

:func:`candidate_features` reads the weights (and runs the patch over generic text);
:func:`forecast_from` applies the calibration shipped in ``calibration.json``, fitted on the
successive-update benchmark (``benchmarks/successive_updates.py``; see docs/forecast.md).
"""

from __future__ import annotations

from portllm_edge.forecast.calibrate import Calibration, Forecast, forecast_from, score_candidates, spearman
from portllm_edge.forecast.features import ForecastFeatures, candidate_features

__all__ = [
    "Calibration",
    "Forecast",
    "ForecastFeatures",
    "candidate_features",
    "forecast_from",
    "score_candidates",
    "spearman",
]
