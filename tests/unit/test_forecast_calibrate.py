"""Forecast calibration: Spearman, leave-one-task-out errors, the fitted line, extrapolation, the shipped file."""

from __future__ import annotations

import json
import math

import pytest

from portllm_edge.errors import ConfigError
from portllm_edge.forecast.calibrate import (
    CALIBRATION_FILE,
    Calibration,
    best_candidate,
    fit,
    fit_and_write,
    forecast_from,
    loto_errors,
    score_baselines,
    score_candidates,
    spearman,
)


def test_spearman_known_values():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # one swapped pair of four: 1 - 6·2 / (4·15) = 0.8
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    # ties get their mean rank (scipy.stats.spearmanr gives 0.9486832980505138 here)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486832980505138)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))


def _points(noise: dict[str, float]) -> list[dict]:
    """Three tasks × four versions: gain = 1 − 0.5·log10(projected_ratio) exactly; drift_ratio noisy."""
    out = []
    for task, offset in noise.items():
        for k, ratio in enumerate([0.1, 1.0, 10.0, 100.0]):
            out.append(
                {
                    "task": task,
                    "version": f"v{k + 2}",
                    "recovered_gain": 1 - 0.5 * math.log10(ratio),
                    "features": {
                        "projected_ratio": ratio,
                        "drift_ratio": ratio * (1 + offset) if k % 2 else ratio / (1 + offset),
                        "effect_cosine": None,
                        "effect_kept": None,
                    },
                }
            )
    return out


def test_an_exact_feature_has_zero_loto_error_and_is_chosen():
    points = _points({"a": 5.0, "b": 20.0, "c": 50.0})
    scores = score_candidates(points)
    assert scores["projected_ratio"]["spearman"] == pytest.approx(-1.0)
    assert scores["projected_ratio"]["loto_mae"] == pytest.approx(0.0, abs=1e-9)
    assert scores["drift_ratio"]["loto_mae"] > 0.05
    assert scores["effect_cosine"]["n"] == 0 and math.isnan(scores["effect_cosine"]["loto_mae"])
    assert best_candidate(scores) == "projected_ratio"
    cal = fit(points, {"benchmark": "test"})
    assert (cal.feature, cal.transform) == ("projected_ratio", "log10")
    assert (cal.intercept, cal.slope) == pytest.approx((1.0, -0.5))
    assert (cal.feature_min, cal.feature_max) == (0.1, 100.0)


def test_loto_errors_predict_each_task_from_the_others_only():
    points = _points({"a": 0.0, "b": 0.0, "c": 0.0})
    points[0]["recovered_gain"] += 0.3  # one outlier in task a, version v2
    errors = loto_errors(points, "projected_ratio")
    # task a is predicted from b and c (exact): its own outlier shows as −0.3, its other points exactly
    assert errors[:4] == pytest.approx([-0.3, 0.0, 0.0, 0.0], abs=1e-9)
    # tasks b and c are predicted with a's outlier in the fit: small non-zero errors
    assert all(abs(e) > 1e-6 for e in errors[4:])


def test_forecast_interval_and_extrapolation(tmp_path):
    points = _points({"a": 5.0, "b": 20.0, "c": 50.0})
    points[5]["recovered_gain"] += 0.2
    path = fit_and_write(points, {"benchmark": "test"}, tmp_path / "cal.json")
    cal = Calibration.load(path)
    assert cal.half_width > 0
    inside = forecast_from({"projected_ratio": 1.0}, cal)
    assert inside.predicted == pytest.approx(cal.intercept)
    assert (inside.low, inside.high) == pytest.approx(
        (cal.intercept - cal.half_width, cal.intercept + cal.half_width)
    )
    assert not inside.extrapolating and "EXTRAPOLATING" not in inside.summary()
    outside = forecast_from({"projected_ratio": 1000.0}, cal)
    assert outside.extrapolating and "EXTRAPOLATING" in outside.summary()
    with pytest.raises(ConfigError, match="projected_ratio"):
        forecast_from({"projected_ratio": None}, cal)


def test_unreadable_calibration_names_the_file(tmp_path):
    bad = tmp_path / "cal.json"
    bad.write_text(json.dumps({"feature": "drift_ratio"}))
    with pytest.raises(ConfigError, match=r"cal\.json"):
        Calibration.load(bad)


def test_points_where_the_patch_gains_too_little_are_left_out():
    points = _points({"a": 5.0, "b": 20.0, "c": 50.0})
    for p in points:
        p["gain"] = 0.2
    points[0]["gain"], points[0]["recovered_gain"] = 0.01, -7.0  # a ratio of noise
    scores = score_candidates(points)
    assert scores["projected_ratio"]["n"] == 11 and scores["projected_ratio"]["loto_mae"] < 1e-9


def test_constant_baselines_score_all_kept_and_the_other_tasks_mean():
    points = [
        {"task": "a", "recovered_gain": 1.0, "gain": 0.2},
        {"task": "a", "recovered_gain": 0.6, "gain": 0.2},
        {"task": "b", "recovered_gain": 0.2, "gain": 0.2},
        {"task": "b", "recovered_gain": 5.0, "gain": 0.01},  # under MIN_GAIN: left out
    ]
    base = score_baselines(points)
    # all kept: |1 - 1| + |1 - 0.6| + |1 - 0.2| over 3 points
    assert base["all_kept"] == pytest.approx(1.2 / 3)
    # a's points predicted by b's mean (0.2): 0.8, 0.4; b's point by a's mean (0.8): 0.6
    assert base["other_tasks_mean"] == pytest.approx(1.8 / 3)
    cal = fit(_points({"a": 5.0, "b": 20.0, "c": 50.0}), {"benchmark": "test"})
    # gains 1.5, 1, 0.5, 0 in every task: |1 - g| is 0.5, 0, 0.5, 1
    assert cal.baselines["all_kept"] == pytest.approx(0.5)


def test_a_step_in_the_gain_is_fitted_by_the_logistic_curve():
    """Gains that stay at 1 up to a ratio of 3 and are lost past it: the logistic curve wins, the line can't."""
    points = [
        {
            "task": task,
            "version": f"v{k}",
            "recovered_gain": 1.0 if ratio < 3 else 0.0,
            "features": {"drift_ratio": ratio * (1 + 0.01 * j), "projected_ratio": None},
        }
        for j, task in enumerate("abc")
        for k, ratio in enumerate([0.1, 0.3, 1.0, 2.0, 5.0, 10.0, 30.0])
    ]
    scores = score_candidates(points)
    assert scores["drift_ratio"]["loto_mae_logistic"] < 0.02 < 0.1 < scores["drift_ratio"]["loto_mae"]
    cal = fit(points, {"benchmark": "test"})
    assert (cal.feature, cal.link) == ("drift_ratio", "logistic")
    assert forecast_from({"drift_ratio": 0.5}, cal).predicted == pytest.approx(1.0, abs=0.01)
    assert forecast_from({"drift_ratio": 20.0}, cal).predicted == pytest.approx(0.0, abs=0.01)
    # the step lies between the last kept (2.0) and the first lost (5.0) ratio
    assert 2.0 < 10 ** (-cal.intercept / cal.slope) < 5.0


def test_the_shipped_calibration_is_readable_and_has_provenance():
    cal = Calibration.load()
    assert CALIBRATION_FILE.is_file()
    assert cal.feature in cal.scores and cal.provenance["benchmark"] == "benchmarks/successive_updates.py"
    tasks = {p["task"] for p in cal.points}
    versions = {p["version"] for p in cal.points}
    assert len(tasks) >= 3 and len(versions) >= 6
    assert cal.feature_min < cal.feature_max and cal.half_width > 0
    assert set(cal.baselines) == {"all_kept", "other_tasks_mean"} and cal.link in ("line", "logistic")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"intercept": "0.9"}, "`intercept` is '0.9'; it must be a finite number"),
        ({"half_width": None}, "`half_width` is None"),
        ({"slope": True}, "`slope` is True"),
        ({"half_width": -0.1}, "`half_width` is -0.1; it must be 0 or more"),
        ({"feature": "perplexity"}, "`feature` is 'perplexity'"),
        ({"transform": "exp"}, "`transform` is 'exp'; `projected_ratio` is fitted on 'log10'"),
        ({"feature_min": 5.0, "feature_max": 1.0}, "`feature_min` 5.0 is above `feature_max` 1.0"),
        ({"link": "cubic"}, "`link` is 'cubic'; it must be one of line, logistic"),
    ],
)
def test_a_calibration_with_an_unusable_value_is_refused_on_load(tmp_path, change, message):
    """A hand-edited or damaged calibration is refused naming the field, not crashed on or silently misapplied."""
    path = fit_and_write(
        _points({"a": 5.0, "b": 20.0, "c": 50.0}), {"benchmark": "test"}, tmp_path / "cal.json"
    )
    data = json.loads(path.read_text())
    assert data["feature"] == "projected_ratio"
    path.write_text(json.dumps({**data, **change}))
    with pytest.raises(ConfigError, match=r"cal\.json: not a usable forecast calibration") as err:
        Calibration.load(path)
    assert message in str(err.value)
