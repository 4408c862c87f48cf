"""`forecast` and `check` apply the calibration to a patch between two tiny real bases."""

from __future__ import annotations

import json
import math

import pytest

from portllm_edge.cli import main
from portllm_edge.forecast import calibrate


def _calibration(tmp_path, monkeypatch, feature: str, lo: float, hi: float):
    cal = {
        "feature": feature,
        "transform": calibrate.CANDIDATES[feature],
        "intercept": 0.9,
        "slope": -0.2,
        "half_width": 0.15,
        "feature_min": lo,
        "feature_max": hi,
        "scores": {},
        "provenance": {"benchmark": "test"},
        "points": [],
    }
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps(cal))
    monkeypatch.setattr(calibrate, "CALIBRATION_FILE", path)


def test_forecast_applies_the_calibration_to_the_projected_ratio(
    tiny_pairs, tiny_adapters, tmp_path, monkeypatch, capsys
):
    pair = tiny_pairs["llama"]
    args = [str(tiny_adapters["llama"]), "--base", str(pair.new), "--old", str(pair.old)]
    assert main(["drift", *args, "--json"]) == 0
    ratio = json.loads(capsys.readouterr().out)["median_projected_ratio"]
    _calibration(tmp_path, monkeypatch, "projected_ratio", ratio / 10, ratio * 10)
    assert main(["forecast", *args, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    expected = 0.9 - 0.2 * math.log10(ratio)
    assert data["forecast"]["predicted"] == pytest.approx(expected)
    assert (data["forecast"]["low"], data["forecast"]["high"]) == pytest.approx(
        (expected - 0.15, expected + 0.15)
    )
    assert data["forecast"]["extrapolating"] is False
    assert data["features"]["effect_cosine"] is None  # weights-only feature: no forward passes
    assert main(["check", *args]) == 0
    out = capsys.readouterr().out
    assert f"forecast recovered gain {expected:.0%}" in out and "EXTRAPOLATING" not in out


def test_forecast_says_when_it_extrapolates(tiny_pairs, tiny_adapters, tmp_path, monkeypatch, capsys):
    pair = tiny_pairs["llama"]
    _calibration(tmp_path, monkeypatch, "effect_cosine", 0.98, 0.999)
    args = [str(tiny_adapters["llama"]), "--base", str(pair.new), "--old", str(pair.old)]
    assert main(["forecast", *args]) == 0
    out = capsys.readouterr().out
    assert "EXTRAPOLATING: effect_cosine lies outside the calibrated range" in out
    assert main(["check", *args]) == 0  # a text feature: check points to `forecast` instead
    assert "run `portllm-edge forecast`" in capsys.readouterr().out
