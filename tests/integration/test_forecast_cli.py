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


def test_forecast_says_when_it_extrapolates_and_check_shows_the_recorded_one(
    tiny_pairs, tiny_adapters, tmp_path, monkeypatch, capsys
):
    from portllm_edge.history import list_runs

    pair = tiny_pairs["llama"]
    _calibration(tmp_path, monkeypatch, "effect_cosine", 0.98, 0.999)
    args = [str(tiny_adapters["llama"]), "--base", str(pair.new), "--old", str(pair.old)]
    assert main(["check", *args, "--no-drift"]) == 0  # nothing recorded yet: one line says how
    out = capsys.readouterr().out
    assert "none recorded for this patch and these bases; add --forecast to compute and record it" in out
    assert main(["forecast", *args, "--json"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert "EXTRAPOLATING" in calibrate.Forecast(**made["forecast"]).summary()
    (run,) = list_runs("forecast")
    assert run.id == made["run_id"] and run.inputs["key"] == made["key"]
    assert made["key"]["patch"].startswith("p1:") and made["key"]["base"] != made["key"]["old_base"]
    assert main(["runs", "list", "--kind", "forecast"]) == 0
    assert f"forecast recovered gain {made['forecast']['predicted']:.0%}" in capsys.readouterr().out
    assert main(["check", *args, "--no-drift"]) == 0  # the recorded forecast of this exact pair
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("forecast recovered gain"))
    assert f"{made['forecast']['predicted']:.0%}" in line and f"recorded by run {run.id}" in line
    assert "EXTRAPOLATING: effect_cosine lies outside the calibrated range" in line
    # the reverse port (old and new swapped) is another pair: nothing recorded for it
    swapped = [str(tiny_adapters["llama"]), "--base", str(pair.old), "--old", str(pair.new), "--no-drift"]
    assert main(["check", *swapped]) == 0
    assert "none recorded" in capsys.readouterr().out
    # a new calibration is another key: check --forecast computes it now and records it
    _calibration(tmp_path, monkeypatch, "effect_cosine", 0.5, 0.99)
    assert main(["check", *args, "--no-drift", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["forecast"] is None
    assert main(["check", *args, "--no-drift", "--forecast", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["forecast_source"] == "computed" and len(list_runs("forecast")) == 2
    assert data["forecast"]["value"] == pytest.approx(made["forecast"]["value"], abs=1e-6)  # same feature
    assert data["forecast"]["low"] <= data["forecast"]["predicted"] <= data["forecast"]["high"]
    assert main(["check", *args, "--no-drift", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["forecast_source"] == "recorded" and again["forecast_run"] == data["forecast_run"]


def test_check_refuses_an_old_base_with_the_new_base_weights(tiny_pairs, tiny_adapters, tmp_path, capsys):
    import shutil

    pair = tiny_pairs["llama"]
    copy = shutil.copytree(pair.new, tmp_path / "same-as-new")  # another folder, the same weights
    assert main(["check", str(tiny_adapters["llama"]), "--base", str(pair.new), "--old", str(copy)]) == 2
    err = capsys.readouterr().err
    assert (
        f"--old {copy} and --base {pair.new} hold the same weights" in err
        and "no update to port across" in err
    )
    assert "pass the updated base with --base and the base the patch was trained on with --old" in err


def test_check_warns_when_old_is_not_the_base_the_adapter_config_names(
    tiny_pairs, tiny_adapters, tmp_path, capsys
):
    import shutil

    pair = tiny_pairs["llama"]
    patch = shutil.copytree(tiny_adapters["llama"], tmp_path / "patch")
    cfg = json.loads((patch / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(pair.old)
    args = [str(patch), "--base", str(pair.new), "--old", str(pair.old), "--no-drift"]
    assert main(["check", *args, "--json"]) == 0
    assert "old_base" not in [c["name"] for c in json.loads(capsys.readouterr().out)["checks"]]
    cfg["base_model_name_or_path"] = str(pair.new)  # the config now names another base than --old
    (patch / "adapter_config.json").write_text(json.dumps(cfg))
    assert main(["check", *args]) == 0  # a warning: the user may know better than the config
    out = capsys.readouterr().out
    warn = next(x for x in out.splitlines() if "old_base" in x)
    assert warn.split()[0] == "WARN"
    assert f"--old {pair.old} is not the base the patch names" in warn
    assert f"`base_model_name_or_path` is '{pair.new}'" in warn and "weights differ" in warn
    assert f"fix: pass --old {pair.new} if the patch was trained on it" in out
    assert f"set `base_model_name_or_path` in {patch / 'adapter_config.json'} to {pair.old}" in out
    assert "result: compatible (" in out


def test_the_patchs_own_base_as_base_says_there_is_no_update_not_that_the_old_base_is_missing(
    tiny_pairs, tiny_adapters, capsys
):
    """--base = the base the adapter config names: check's note, forecast and drift say so (exit 2), not 'not in the store'."""
    args = [str(tiny_adapters["llama"]), "--base", str(tiny_pairs["llama"].old)]
    assert main(["check", *args]) == 0
    note = capsys.readouterr().out.strip().splitlines()[-1]
    assert note.startswith("forecast: --base ") and "there is no update to port across" in note
    for command in ("forecast", "drift"):
        assert main([command, *args]) == 2
        err = capsys.readouterr().err
        assert "is the base the patch records" in err and "the old base is not known" not in err
