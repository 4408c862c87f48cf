"""The app shows the forecast on the Port screen (recorded, or computed with ctrl+f) and a patch-health chart on Runs."""

from __future__ import annotations

from tui_helpers import (  # type: ignore[import-not-found]
    fake_cpu_report,
    make_app,
    notifications,
    plain,
    run,
    settle,
    wait_for,
)


def _effect_calibration(tmp_path, monkeypatch) -> None:
    """A calibration on a feature that needs forward passes (whatever the shipped one reads): check can't compute it."""
    import json

    from portllm_edge.forecast import calibrate

    cal = {
        "feature": "effect_cosine",
        "transform": "identity",
        "intercept": 0.9,
        "slope": -0.2,
        "half_width": 0.15,
        "feature_min": 0.5,
        "feature_max": 0.99,
        "scores": {},
        "provenance": {"benchmark": "test"},
        "points": [],
    }
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps(cal))
    monkeypatch.setattr(calibrate, "CALIBRATION_FILE", path)


def test_port_screen_forecast_on_demand_then_recorded(
    stored_llama_patch: str, tiny_pairs, tmp_path, monkeypatch
) -> None:
    from portllm_edge.history import list_runs

    _effect_calibration(tmp_path, monkeypatch)

    new_base = str(tiny_pairs["llama"].new)

    async def body() -> None:
        app = make_app(start_screen="port", read_hardware=fake_cpu_report)
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            screen = app.screen
            assert not screen.query_one("#forecast").display  # nothing checked yet
            screen.query_one("#patch").value = stored_llama_patch
            screen.query_one("#base-path").value = new_base
            await settle(pilot)
            await pilot.press("ctrl+t")
            await wait_for(pilot, lambda: screen.preflight is not None, 60)
            await settle(pilot)
            box = screen.query_one("#forecast")
            text = plain(box, width=400)
            assert "none recorded for this patch and these bases" in text and "Press ctrl+f" in text
            await pilot.press("ctrl+f")  # forward passes over generic text, in a worker
            await wait_for(pilot, lambda: not screen.forecasting, 120)
            await settle(pilot)
            (rec,) = list_runs("forecast")
            fc = rec.results["forecast"]
            text = plain(box, width=400)
            assert (
                f"{stored_llama_patch} on {new_base}: forecast recovered gain {fc['predicted']:.0%}" in text
            )
            assert (
                f"(interval {fc['low']:.0%} to {fc['high']:.0%}" in text
                and f"recorded as run {rec.id}" in text
            )
            assert fc["low"] <= fc["predicted"] <= fc["high"]
            assert ("EXTRAPOLATING" in text) is fc["extrapolating"]
            assert not screen.query_one("#forecast-btn").disabled
            await pilot.press("ctrl+t")  # a new check shows the recorded forecast, computing nothing
            await wait_for(pilot, lambda: "recorded by run" in plain(box, width=400), 60)
            assert f"recorded by run {rec.id}" in plain(box, width=400)
            assert len(list_runs("forecast")) == 1
            assert not [n for n in notifications(app) if n.severity == "error"]

    run(body)


def _compare(version: str, gain: float, low: float, high: float, patch: str = "p") -> dict:
    return {
        "task": "sst2",
        "rows": [
            {"config": "new base zero-shot", "accuracy": 0.5, "n": 64},
            {"config": "old base + patch", "accuracy": 0.75, "n": 64},
            {"config": "new base + ported patch", "accuracy": 0.5 + 0.25 * gain, "n": 64},
        ],
        "recovered_gain": gain,
        "paired": {"recovered_gain": {"estimate": gain, "low": low, "high": high}},
        "extras": {"lineage": {"root": "/models/chain-v1", "version": version}},
    }


def test_runs_screen_draws_the_patch_health_chart() -> None:
    from portllm_edge.history import record_run
    from portllm_edge.history.health import lineage_health

    record_run("compare", {"patch": "p"}, _compare("v3", 0.75, 0.5, 0.95))
    record_run("compare", {"patch": "q"}, _compare("v2", 0.5, 0.25, 0.75, patch="q"))
    newest = record_run("compare", {"patch": "p"}, _compare("v2", 1.0, 0.875, 1.0))
    record_run("eval", {"task": "sst2", "base": "b"}, {"task": "sst2", "n": 8, "accuracy": 0.5})
    (p_health,) = [h for h in lineage_health() if h.patch == "p"]
    assert [(x.version, x.recovered_gain) for x in p_health.points] == [("v2", 1.0), ("v3", 0.75)]

    async def body() -> None:
        app = make_app(start_screen="runs")
        async with app.run_test(size=(140, 40)) as pilot:
            await settle(pilot)
            screen = app.screen
            assert "patch health" not in plain(screen.query_one("#run-chart"))  # the eval run
            await pilot.press("down")  # the newest compare run: p against v2
            await settle(pilot)
            assert screen.selected == newest
            chart = plain(screen.query_one("#run-chart"), width=200).splitlines()
            head = chart.index("patch health: p on sst2 (chain-v1)")
            rows = [line for line in chart[head:] if line.startswith(("v2 ", "v3 "))]
            assert [r.split()[0] for r in rows] == ["v2", "v3"]  # versions in order, one row each
            assert rows[0].endswith("100% [88%, 100%]") and rows[1].endswith("75% [50%, 95%]")
            assert "●" in rows[1] and "├" in rows[1] and "┤" in rows[1]
            assert "q on sst2" not in "\n".join(chart)  # only the selected run's lineage
            await pilot.press("h")  # every lineage
            await settle(pilot)
            every = plain(screen.query_one("#run-chart"), width=200)
            assert (
                "patch health: p on sst2 (chain-v1)" in every
                and "patch health: q on sst2 (chain-v1)" in every
            )
            assert "50% [25%, 75%]" in every

    run(body)


def test_port_screen_forecast_without_the_old_base_says_why_and_runs_nothing(
    tiny_adapters, tiny_pairs, tmp_path
) -> None:
    """ctrl+f after a check that found no old base: a warning with the check's reason, no worker, no error."""
    import json
    import shutil

    from portllm_edge.history import list_runs
    from portllm_edge.patches import PatchStore

    folder = shutil.copytree(tiny_adapters["llama"], tmp_path / "orphan")
    cfg = json.loads((folder / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "nowhere/model"  # a base found nowhere here
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    PatchStore().import_dir(folder, name="orphan", task="sst2")

    async def body() -> None:
        app = make_app(start_screen="port", read_hardware=fake_cpu_report)
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            screen = app.screen
            screen.query_one("#patch").value = "orphan"
            screen.query_one("#base-path").value = str(tiny_pairs["llama"].new)
            await settle(pilot)
            await pilot.press("ctrl+t")
            await wait_for(pilot, lambda: screen.preflight is not None, 60)
            await settle(pilot)
            box = screen.query_one("#forecast")
            before = plain(box, width=400)
            assert "needs the base the patch was trained on" in before and "ctrl+f" not in before
            await pilot.press("ctrl+f")
            await settle(pilot)
            assert not screen.forecasting and plain(box, width=400) == before
            notes = notifications(app)
            assert [n.severity for n in notes] == ["warning"]
            assert "needs the base the patch was trained on" in notes[0].message
            assert list_runs("forecast") == []

    run(body)
