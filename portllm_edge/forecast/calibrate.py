"""Calibrate a data-free feature against measured recovered gains; forecast with the stored calibration.

Why this module exists: a feature of the weights is only a forecast once it has been
fitted to measured outcomes and its error measured on outcomes it was not fitted on.
Given points (one per version × task: the feature values and the measured recovered gain
with its paired bootstrap interval, from ``benchmarks/successive_updates.py``), this module

* scores every candidate: the Spearman rank correlation with the measured gain, and the
  mean absolute error under leave-one-task-out (fit on the other tasks, predict the left-out
  one) of two curves in the (transformed) feature: a straight line, and a logistic curve
  from 0 to 1 (a patch that keeps its gain up to some drift and loses it past it);
* scores the constant forecasts a candidate has to beat (:data:`BASELINES`);
* fits the best candidate and curve on all points and stores the fit in ``calibration.json``
  beside this file, with its provenance: the curve, the calibrated feature range, and the interval
  half-width (the 90th percentile of the absolute leave-one-task-out errors);
* turns a new feature value into a :class:`Forecast`, saying when the value lies outside the
  calibrated range (an extrapolation).

It must not import torch (numpy does the arithmetic).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

CALIBRATION_FILE = Path(__file__).with_name("calibration.json")
CANDIDATES: dict[str, str] = {
    "projected_ratio": "log10",
    "effect_cosine": "identity",
    "effect_kept": "identity",
    "drift_ratio": "log10",
}
"""Candidate feature -> the transform the curve is fitted on (ratios span decades)."""
LINKS = ("line", "logistic")
"""The fitted curves: ``line`` predicts ``a + b·t``; ``logistic`` predicts ``1 / (1 + exp(−(a + b·t)))``
(``t``: the transformed feature)."""
LOGISTIC_MIN_WIDTH = 0.01
"""The logistic fit's steepest transition, as a share of the fitted feature span (no infinite slope)."""
OPTIONAL_FIELDS = ("baselines", "link")
"""Calibration fields a file written by an earlier version may lack (their defaults apply)."""
INTERVAL_QUANTILE = 0.9
MIN_GAIN = 0.05
"""Points whose patch gains less than this over the new base's zero-shot accuracy (old + patch −
zero-shot, a fraction) are left out: their recovered gain is a ratio of two noisy small numbers
(a negative gain even flips its sign)."""


def _transform(name: str, x: float) -> float:
    return math.log10(max(x, 1e-12)) if CANDIDATES[name] == "log10" else x


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); ``nan`` for fewer than 3 points or a constant input."""
    import numpy as np

    if len(x) != len(y) or len(x) < 3:
        return math.nan

    def ranks(v: Sequence[float]) -> Any:
        a = np.asarray(v, dtype=np.float64)
        order = a.argsort(kind="mergesort")
        r = np.empty(len(a))
        r[order] = np.arange(len(a), dtype=np.float64)
        for value in np.unique(a):  # ties share their mean rank
            tied = a == value
            r[tied] = r[tied].mean()
        return r

    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def fit_line(t: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Least-squares ``y ≈ a + b·t``; returns ``(a, b)`` (``b = 0`` for a constant ``t``)."""
    import numpy as np

    ta, ya = np.asarray(t, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if ta.std() == 0:
        return float(ya.mean()), 0.0
    b, a = np.polyfit(ta, ya, 1)
    return float(a), float(b)


def predict(link: str, a: float, b: float, t: float) -> float:
    """The curve ``link`` (:data:`LINKS`) with coefficients ``(a, b)`` at the transformed feature ``t``."""
    z = a + b * t
    if link == "line":
        return z
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


def fit_logistic(t: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Least-squares ``y ≈ 1 / (1 + exp(−(a + b·t)))``; returns ``(a, b)``.

    A grid search over the curve's centre (401 points across the range of ``t``), its width
    (61 values from :data:`LOGISTIC_MIN_WIDTH` of the span to the whole span, geometric) and
    its direction; the recovered gain runs from 1 (all kept) to 0 (all lost), so the curve
    is not scaled. A constant ``t`` gives ``b = 0`` and ``a`` the logit of the clipped mean.
    """
    import numpy as np

    ta, ya = np.asarray(t, dtype=np.float64), np.asarray(y, dtype=np.float64)
    span = float(ta.max() - ta.min()) if len(ta) else 0.0
    if span == 0:
        m = min(max(float(ya.mean()), 1e-6), 1 - 1e-6)
        return math.log(m / (1 - m)), 0.0
    centres = np.linspace(ta.min(), ta.max(), 401)[:, None]
    best = (math.inf, 0.0, 0.0)
    for width in span * np.geomspace(LOGISTIC_MIN_WIDTH, 1.0, 61):
        for sign in (1.0, -1.0):
            b = sign / width
            z = np.clip(b * (ta[None, :] - centres), -50, 50)
            sse = ((1 / (1 + np.exp(-z)) - ya[None, :]) ** 2).sum(axis=1)
            i = int(sse.argmin())
            if float(sse[i]) < best[0]:
                best = (float(sse[i]), float(-b * centres[i, 0]), float(b))
    return best[1], best[2]


def fit_curve(link: str, t: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """:func:`fit_line` or :func:`fit_logistic`, by ``link``."""
    return fit_line(t, y) if link == "line" else fit_logistic(t, y)


def _usable(points: Sequence[Mapping[str, Any]], name: str) -> list[Mapping[str, Any]]:
    """Points with a measured gain (at least :data:`MIN_GAIN` when ``gain`` is given) and a finite feature."""
    return [
        p
        for p in points
        if p.get("recovered_gain") is not None
        and (p.get("gain") is None or p["gain"] >= MIN_GAIN)
        and (p.get("features") or {}).get(name) is not None
        and math.isfinite(float(p["features"][name]))
    ]


def loto_errors(points: Sequence[Mapping[str, Any]], name: str, link: str = "line") -> list[float]:
    """Signed errors (predicted − measured) of each point, predicted by a curve fitted on the other tasks."""
    pts = _usable(points, name)
    errors = []
    for task in sorted({p["task"] for p in pts}):
        train = [p for p in pts if p["task"] != task]
        if len(train) < 2:
            continue
        a, b = fit_curve(
            link,
            [_transform(name, p["features"][name]) for p in train],
            [p["recovered_gain"] for p in train],
        )
        errors += [
            predict(link, a, b, _transform(name, p["features"][name])) - p["recovered_gain"]
            for p in pts
            if p["task"] == task
        ]
    return errors


def score_candidates(points: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """``{candidate: {"spearman", "loto_mae", "loto_mae_logistic", "n"}}`` against the measured recovered gain.

    ``loto_mae`` is the straight line's leave-one-task-out mean absolute error, ``loto_mae_logistic``
    the logistic curve's (:data:`LINKS`).

    Args:
        points: dicts with ``task``, ``recovered_gain`` (a fraction), ``features`` (a
            :class:`~portllm_edge.forecast.features.ForecastFeatures` dict) and optionally
            ``gain`` (old + patch − zero-shot; points under :data:`MIN_GAIN` are left out).
    """
    out = {}
    for name in CANDIDATES:
        pts = _usable(points, name)
        errors = loto_errors(points, name)
        logistic = loto_errors(points, name, "logistic")
        out[name] = {
            "spearman": spearman([p["features"][name] for p in pts], [p["recovered_gain"] for p in pts]),
            "loto_mae": sum(abs(e) for e in errors) / len(errors) if errors else math.nan,
            "loto_mae_logistic": sum(abs(e) for e in logistic) / len(logistic) if logistic else math.nan,
            "n": len(pts),
        }
    return out


BASELINES = {
    "all_kept": "always 1.0: every port keeps all of the patch's gain",
    "other_tasks_mean": "the mean recovered gain of the other tasks' points (leave-one-task-out)",
}
"""Constant forecasts a candidate has to beat, by name -> what they predict."""


def score_baselines(points: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Mean absolute error of each constant forecast in :data:`BASELINES` over the usable points.

    The points are those with a measured recovered gain (and a gain of at least :data:`MIN_GAIN`
    when ``gain`` is given), whatever their features; ``other_tasks_mean`` predicts each task's
    points by the mean of the other tasks' points, as the candidates are scored. ``nan`` when
    there are no such points (or, for ``other_tasks_mean``, fewer than 2 tasks).
    """
    pts = [
        p
        for p in points
        if p.get("recovered_gain") is not None and (p.get("gain") is None or p["gain"] >= MIN_GAIN)
    ]
    kept = [abs(1.0 - p["recovered_gain"]) for p in pts]
    loto = []
    for task in sorted({p["task"] for p in pts}):
        others = [p["recovered_gain"] for p in pts if p["task"] != task]
        if others:
            mean = sum(others) / len(others)
            loto += [abs(mean - p["recovered_gain"]) for p in pts if p["task"] == task]
    return {
        "all_kept": sum(kept) / len(kept) if kept else math.nan,
        "other_tasks_mean": sum(loto) / len(loto) if loto else math.nan,
    }


def _mae(score: Mapping[str, float], link: str) -> float:
    value = score.get("loto_mae" if link == "line" else "loto_mae_logistic", math.nan)
    return float(value) if value is not None and math.isfinite(value) else math.inf


def best_fit(scores: Mapping[str, Mapping[str, float]]) -> tuple[str, str]:
    """``(candidate, link)`` with the lowest leave-one-task-out MAE (ties: the line, then the larger |Spearman|).

    Raises:
        ValueError: no candidate has a finite leave-one-task-out error (points of fewer than 2 tasks).
    """
    pairs = [(k, link) for k in scores for link in LINKS if math.isfinite(_mae(scores[k], link))]
    if not pairs:
        raise ValueError("no candidate has a finite leave-one-task-out error; need points of 2+ tasks")
    return min(
        pairs,
        key=lambda kl: (
            _mae(scores[kl[0]], kl[1]),
            LINKS.index(kl[1]),
            -abs(scores[kl[0]]["spearman"] or 0.0),
        ),
    )


def best_candidate(scores: Mapping[str, Mapping[str, float]]) -> str:
    """The candidate of :func:`best_fit`."""
    return best_fit(scores)[0]


@dataclass(frozen=True)
class Calibration:
    """A fitted forecast: ``recovered gain ≈ curve(intercept + slope · transform(feature))``.

    Attributes:
        feature: the candidate used (a :class:`~portllm_edge.forecast.features.ForecastFeatures` field).
        transform: ``log10`` or ``identity``.
        intercept, slope: the curve's coefficients (:func:`predict`).
        half_width: the interval's half-width (90th percentile of |leave-one-task-out error|), a fraction.
        feature_min, feature_max: the calibrated range of the feature.
        scores: every candidate's Spearman and leave-one-task-out MAE.
        baselines: the mean absolute error of each constant forecast (:func:`score_baselines`),
            a fraction; empty in a calibration written before they were scored.
        link: the curve, ``line`` or ``logistic`` (:data:`LINKS`); ``line`` in a calibration
            written before the logistic curve was scored.
        provenance: how the points were made (benchmark, base, corpus, tasks, sizes).
        points: the calibration points (version, task, measured gain, features).
    """

    feature: str
    transform: str
    intercept: float
    slope: float
    half_width: float
    feature_min: float
    feature_max: float
    scores: dict[str, dict[str, float]]
    provenance: dict[str, Any]
    points: list[dict[str, Any]]
    baselines: dict[str, float] = field(default_factory=dict)
    link: str = "line"

    @classmethod
    def load(cls, path: str | Path | None = None) -> Calibration:
        """Read ``calibration.json`` (default: the one shipped in the package).

        Raises:
            ConfigError: the file is missing, lacks a field, or holds a value the forecast can't use
                (an unknown feature, a transform other than its candidate's, a number that is not
                finite, a negative half-width, an empty range).
        """
        from portllm_edge.errors import ConfigError

        src = Path(path) if path is not None else CALIBRATION_FILE
        hint = "reinstall portllm-edge, or run benchmarks/successive_updates.py calibrate"
        try:
            data = json.loads(src.read_text(encoding="utf-8"))
            cal = cls(
                **{k: data[k] for k in cls.__dataclass_fields__ if k not in OPTIONAL_FIELDS},
                **{k: data[k] for k in OPTIONAL_FIELDS if data.get(k) is not None},
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{src}: not a readable forecast calibration ({exc}).", hint=hint) from exc
        problem = cal._problem()
        if problem is not None:
            raise ConfigError(f"{src}: not a usable forecast calibration: {problem}.", hint=hint)
        return cal

    def _problem(self) -> str | None:
        """What makes this calibration unusable by :func:`forecast_from`, or None."""
        if self.feature not in CANDIDATES:
            return f"`feature` is {self.feature!r}; it must be one of {', '.join(CANDIDATES)}"
        if self.link not in LINKS:
            return f"`link` is {self.link!r}; it must be one of {', '.join(LINKS)}"
        if self.transform != CANDIDATES[self.feature]:
            return f"`transform` is {self.transform!r}; `{self.feature}` is fitted on {CANDIDATES[self.feature]!r}"
        for name in ("intercept", "slope", "half_width", "feature_min", "feature_max"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                return f"`{name}` is {value!r}; it must be a finite number"
        if self.half_width < 0:
            return f"`half_width` is {self.half_width}; it must be 0 or more"
        if self.feature_min > self.feature_max:
            return f"`feature_min` {self.feature_min} is above `feature_max` {self.feature_max}"
        return None


def fit(
    points: Sequence[Mapping[str, Any]],
    provenance: Mapping[str, Any],
    feature: str | None = None,
    link: str | None = None,
) -> Calibration:
    """Fit the best (or the named) candidate and curve on every point; the interval from its leave-one-task-out errors.

    Raises:
        ValueError: fewer than 2 tasks with usable points.
    """
    import numpy as np

    scores = score_candidates(points)
    if feature is None and link is None:
        name, chosen = best_fit(scores)
    elif feature is None:
        finite = [k for k in scores if math.isfinite(_mae(scores[k], str(link)))]
        if not finite:
            raise ValueError("no candidate has a finite leave-one-task-out error; need points of 2+ tasks")
        name, chosen = min(finite, key=lambda k: _mae(scores[k], str(link))), str(link)
    else:
        name, chosen = feature, link or min(LINKS, key=lambda lk: _mae(scores[feature], lk))
    pts = _usable(points, name)
    a, b = fit_curve(
        chosen, [_transform(name, p["features"][name]) for p in pts], [p["recovered_gain"] for p in pts]
    )
    errors = np.abs(np.asarray(loto_errors(points, name, chosen)))
    values = [float(p["features"][name]) for p in pts]
    return Calibration(
        feature=name,
        transform=CANDIDATES[name],
        intercept=a,
        slope=b,
        half_width=float(np.quantile(errors, INTERVAL_QUANTILE)),
        feature_min=min(values),
        feature_max=max(values),
        scores=scores,
        provenance=dict(provenance),
        points=[dict(p) for p in points],
        baselines=score_baselines(points),
        link=chosen,
    )


def fit_and_write(
    points: Sequence[Mapping[str, Any]], provenance: Mapping[str, Any], path: str | Path | None = None
) -> Path:
    """:func:`fit` and write the result as JSON (default: the package's ``calibration.json``); returns the path."""
    from portllm_edge.fsutil import atomic_write_json

    out = Path(path) if path is not None else CALIBRATION_FILE
    atomic_write_json(out, asdict(fit(points, provenance)))
    return out


@dataclass(frozen=True)
class Forecast:
    """A predicted recovered gain with its interval.

    Attributes:
        predicted: the predicted share of the patch's gain kept by the port (1.0 = all of it).
        low, high: the interval (``predicted ∓ half_width``; 90 % of the calibration's
            leave-one-task-out errors were smaller).
        feature: the feature used; value: its value for this patch and these bases.
        extrapolating: ``value`` lies outside the calibrated range.
        calibrated_range: ``(min, max)`` of the feature over the calibration points.
    """

    predicted: float
    low: float
    high: float
    feature: str
    value: float
    extrapolating: bool
    calibrated_range: tuple[float, float]

    def summary(self) -> str:
        """One line for the terminal, with the extrapolation warning when it applies."""
        lo, hi = self.calibrated_range
        line = (
            f"forecast recovered gain {self.predicted:.0%} (interval {self.low:.0%} to {self.high:.0%}; "
            f"{self.feature} = {self.value:.3g}, calibrated on {lo:.3g} to {hi:.3g})"
        )
        if self.extrapolating:
            line += (
                f"; EXTRAPOLATING: {self.feature} lies outside the calibrated range, so the interval is "
                "not backed by measurements -- evaluate the port on task data if you can"
            )
        return line

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def forecast_from(features: Mapping[str, Any], calibration: Calibration | None = None) -> Forecast:
    """Apply a calibration to a feature dict (:meth:`ForecastFeatures.to_dict`).

    Raises:
        ConfigError: the calibration's feature is missing or not finite in ``features``.
    """
    from portllm_edge.errors import ConfigError

    cal = calibration or Calibration.load()
    value = features.get(cal.feature)
    if value is None or not math.isfinite(float(value)):
        raise ConfigError(
            f"the forecast needs the feature `{cal.feature}`, which is {value!r} here.",
            hint="an all-zero patch, or effects not computed: pass effects=True",
        )
    t = math.log10(max(float(value), 1e-12)) if cal.transform == "log10" else float(value)
    pred = predict(cal.link, cal.intercept, cal.slope, t)
    return Forecast(
        predicted=pred,
        low=pred - cal.half_width,
        high=pred + cal.half_width,
        feature=cal.feature,
        value=float(value),
        extrapolating=not (cal.feature_min <= float(value) <= cal.feature_max),
        calibrated_range=(cal.feature_min, cal.feature_max),
    )
