"""Pilot tests of the app's fixes: the keys panel closes, names show in full, the Port form's
keys, jsonl prompt fields, name collisions offered before any work, and the user's precision kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from demo_state import NEW_BASE, OLD_BASE, PATCH, PORTED, build_demo_state  # type: ignore[import-not-found]
from tui_helpers import (  # type: ignore[import-not-found]
    fake_cpu_report,
    make_app,
    notifications,
    plain,
    run,
    settle,
    wait_for,
)


@pytest.fixture
def demo_home(tiny_adapters, monkeypatch) -> None:
    build_demo_state(tiny_adapters["llama"], monkeypatch)


def _cell_texts(table) -> list[list[str]]:
    """What each DataTable cell shows: its text cut to its column's width."""
    widths = [col.get_render_width(table) - 2 * table.cell_padding for col in table.ordered_columns]
    rows = []
    for r in range(table.row_count):
        cells = table.get_row_at(r)
        rows.append(
            [(c.plain if hasattr(c, "plain") else str(c))[:w] for c, w in zip(cells, widths, strict=True)]
        )
    return rows


def test_question_mark_f1_and_escape_close_the_keys_panel() -> None:
    async def body() -> None:
        app = make_app()
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            assert not app.help_panel_shown()
            await pilot.press("question_mark")
            await pilot.pause()
            assert app.help_panel_shown()
            await pilot.press("question_mark")
            await pilot.pause()
            assert not app.help_panel_shown()
            await pilot.press("f1")
            await pilot.pause()
            assert app.help_panel_shown()
            await pilot.press("f1")
            await pilot.pause()
            assert not app.help_panel_shown()
            await pilot.press("f1")
            await pilot.pause()
            await pilot.press("escape")
            await pilot.pause()
            assert not app.help_panel_shown()
            assert type(app.screen).__name__ == "DashboardScreen"  # Esc closed the panel, nothing else

    run(body)


def test_store_model_and_patch_names_show_in_full(demo_home) -> None:
    async def body() -> None:
        app = make_app(start_screen="models")
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            shown = {row[0] for row in _cell_texts(app.screen.query_one("#models"))}
            assert {OLD_BASE, NEW_BASE} <= shown  # not both "SmolLM2-135M-Ins"
            await pilot.press("3")
            await settle(pilot)
            rows = _cell_texts(app.screen.query_one("#patches"))
            assert [r[0] for r in rows] == [PATCH, PORTED]
            assert [r[1] for r in rows] == [OLD_BASE, NEW_BASE]  # the "2" of "v2" is kept
            assert [r[2] for r in rows] == ["import", "import → port"]

    run(body)


def _choose(screen, patch: str, base_path: str, precision: str | None = "fp32") -> None:
    screen.query_one("#patch").value = patch
    screen.query_one("#base-path").value = base_path
    if precision:
        screen.query_one("#precision").value = precision


def test_port_keys_work_from_a_text_field_and_type_nothing(stored_llama_patch: str, tiny_pairs) -> None:
    async def body() -> None:
        app = make_app(start_screen="port", read_hardware=fake_cpu_report)
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            screen = app.screen
            _choose(screen, stored_llama_patch, str(tiny_pairs["llama"].new))
            await settle(pilot)
            field = screen.query_one("#ported-name")
            field.focus()
            await pilot.press("g", "c")  # printable keys type into the field ...
            assert field.value == "gc"
            field.value = ""
            await pilot.press("ctrl+t")  # ... and ctrl+t runs the check from inside it
            await settle(pilot)
            assert field.value == "" and screen.preflight is not None and screen.preflight.ok
            assert screen.default_name == "llama-patch@llama-new"
            # The footer shows the modifier keys.
            keys = {key for key, b in app.active_bindings.items() if b.binding.show}
            assert {"ctrl+t", "ctrl+g", "ctrl+b"} <= keys

    run(body)


def _write_jsonl(path: Path, n: int = 6) -> Path:
    rows = [
        {"text": f"{'a cat' if i % 2 else 'a bus'} number {i}", "label": "animal" if i % 2 else "vehicle"}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_port_evaluates_jsonl_with_template_and_verbalizers(
    stored_llama_patch: str, tiny_pairs, tmp_path: Path
) -> None:
    data = _write_jsonl(tmp_path / "dev.jsonl")

    async def body() -> None:
        app = make_app(start_screen="port", read_hardware=fake_cpu_report)
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            screen = app.screen
            _choose(screen, stored_llama_patch, str(tiny_pairs["llama"].new))
            screen.query_one("#eval-task").value = "jsonl"
            screen.query_one("#eval-data").value = str(data)
            screen.query_one("#eval-limit").value = "4"
            screen.query_one("#eval-template").value = "Sentence: {text}\\nAnswer:"
            screen.query_one("#eval-verbalizers").value = "animal=animal vehicle=vehicle"
            screen.query_one("#ported-name").value = "tags-on-new"
            await settle(pilot)
            ev = screen._eval_options()
            assert ev.template == "Sentence: {text}\nAnswer:"  # \n typed as two characters
            assert dict(ev.verbalizers) == {"animal": "animal", "vehicle": "vehicle"}
            await pilot.press("ctrl+g")
            await wait_for(
                pilot,
                lambda: (
                    screen.summary is not None
                    or (
                        not screen.running
                        and screen.preflight is not None
                        and "stopped" in plain(screen.query_one("#port-status"))
                    )
                ),
                120,
            )
            await settle(pilot)
            s = screen.summary
            assert s is not None, plain(screen.query_one("#port-status"))
            # Named after its data file, as in reports (not "jsonl").
            assert s.evaluation is not None and s.evaluation["n"] == 4
            assert s.evaluation["task"] == f"{data.parent.name}/dev.jsonl"
            assert f"accuracy on {data.parent.name}/dev.jsonl" in plain(screen.query_one("#summary"))
            assert s.ported_name == "tags-on-new"
            from portllm_edge.history import list_runs

            run_inputs = list_runs(kind="port")[0].inputs
            assert run_inputs["name"] == "tags-on-new" and run_inputs["evaluate"]["task"] == "jsonl"
            assert run_inputs["evaluate"]["template"] == "Sentence: {text}\nAnswer:"
            assert run_inputs["evaluate"]["verbalizers"] == {"animal": "animal", "vehicle": "vehicle"}

    run(body)


def test_bad_template_fails_before_any_work(stored_llama_patch: str, tiny_pairs, tmp_path: Path) -> None:
    data = _write_jsonl(tmp_path / "dev.jsonl")
    phases: list[str] = []

    def hook(message) -> None:
        if type(message).__name__ == "PortPhase":
            phases.append(message.phase)

    async def body() -> None:
        app = make_app(start_screen="port", read_hardware=fake_cpu_report)
        async with app.run_test(size=(100, 30), message_hook=hook) as pilot:
            await settle(pilot)
            screen = app.screen
            _choose(screen, stored_llama_patch, str(tiny_pairs["llama"].new))
            screen.query_one("#eval-task").value = "jsonl"
            screen.query_one("#eval-data").value = str(data)
            # A field the records don't have: found when the preflight loads the file, not after the load.
            screen.query_one("#eval-template").value = "Review: {review}\\nAnswer:"
            await settle(pilot)
            await pilot.press("ctrl+g")
            await settle(pilot)
            errs = [n for n in notifications(app) if n.severity == "error"]
            assert errs and "review" in errs[-1].message
            assert not screen.running and screen.summary is None and phases == []
            # A malformed verbalizer is refused on the UI thread.
            screen.query_one("#eval-template").value = ""
            screen.query_one("#eval-verbalizers").value = "animal vehicle"
            await pilot.press("ctrl+g")
            await settle(pilot)
            assert "LABEL=WORD" in notifications(app)[-1].message
            assert phases == []

    run(body)


def test_name_collision_offers_rename_or_overwrite_before_any_load(
    stored_llama_patch: str, tiny_pairs
) -> None:
    phases: list[str] = []
    seen: dict[int, object] = {}  # id -> the message itself: kept alive, so no id is reused

    def hook(message) -> None:
        # The hook sees a message at each pump it reaches (screen, then app when it bubbles).
        if type(message).__name__ == "PortPhase" and id(message) not in seen:
            seen[id(message)] = message
            phases.append(message.phase)

    async def body() -> None:
        from portllm_edge.patches import PatchStore

        app = make_app(start_screen="port", read_hardware=fake_cpu_report)
        async with app.run_test(size=(100, 30), message_hook=hook) as pilot:
            await settle(pilot)
            screen = app.screen
            _choose(screen, stored_llama_patch, str(tiny_pairs["llama"].new))
            await settle(pilot)
            await pilot.press("ctrl+g")
            await wait_for(pilot, lambda: screen.summary is not None, 120)
            await settle(pilot)
            assert screen.summary.ported_name == "llama-patch@llama-new"
            assert screen.query_one("#precision").value == "fp32"  # after the port, still the user's
            first = PatchStore().get("llama-patch@llama-new").manifest.created_at
            # Second port, same name: the modal comes before any phase starts.
            phases.clear()
            await pilot.press("ctrl+g")
            await settle(pilot)
            assert type(app.screen).__name__ == "NameTakenModal"
            assert phases == [] and not screen.running
            assert app.screen.query_one("#new-name").value == "llama-patch@llama-new-2"
            await pilot.press("enter")  # store under the suggested new name
            await wait_for(pilot, lambda: not screen.running, 120)
            await settle(pilot)
            assert screen.summary.ported_name == "llama-patch@llama-new-2"
            assert phases[0] == "check"
            # Third: overwrite the original.
            screen.query_one("#ported-name").value = ""
            await pilot.press("ctrl+g")
            await settle(pilot)
            assert type(app.screen).__name__ == "NameTakenModal"
            await pilot.press("ctrl+o")
            await wait_for(
                pilot, lambda: not screen.running and type(app.screen).__name__ == "PortScreen", 120
            )
            await settle(pilot)
            assert screen.summary.ported_name == "llama-patch@llama-new"
            assert PatchStore().names() == [
                stored_llama_patch,
                "llama-patch@llama-new",
                "llama-patch@llama-new-2",
            ]
            assert PatchStore().get("llama-patch@llama-new").manifest.created_at >= first
            # Cancel: nothing happens, and the status says so.
            phases.clear()
            await pilot.press("ctrl+g")
            await settle(pilot)
            await pilot.press("escape")
            await settle(pilot)
            assert phases == [] and "Nothing was loaded" in plain(screen.query_one("#port-status"))

    run(body)


def test_choosing_a_base_never_overrides_the_users_precision(tiny_pairs) -> None:
    async def body() -> None:
        app = make_app(start_screen="port", read_hardware=fake_cpu_report)
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            screen = app.screen
            screen.query_one("#base-path").value = str(tiny_pairs["llama"].new)
            await settle(pilot)
            picked = screen.query_one("#precision").value
            assert "planner's pick" in plain(screen.query_one("#precision-note"))
            assert not screen.precision_chosen  # the planner set it; the user has not chosen
            mine = "int8" if picked != "int8" else "fp32"
            screen.query_one("#precision").value = mine
            await settle(pilot)
            assert screen.precision_chosen
            screen.query_one("#base-path").value = str(tiny_pairs["qwen2"].new)
            await settle(pilot)
            assert screen.query_one("#precision").value == mine
            assert f"Your {mine} is kept" in plain(screen.query_one("#precision-note")) or picked == mine

    run(body)


def test_app_and_cli_write_the_same_report_files(tiny_pairs, tmp_path: Path) -> None:
    """One function writes both reports: same file names; the app's budget has this machine first."""
    from portllm_edge.cli import main
    from portllm_edge.history import record_run

    base = str(tiny_pairs["llama"].new)
    record_run(
        "compare",
        {"task": "jsonl", "data": "/d/animal-or-vehicle/dev.jsonl", "new": base},
        {"task": "jsonl", "rows": [{"config": "v2 + ported patch (nf4)", "accuracy": 0.9, "n": 10}]},
    )
    record_run(
        "bench",
        {"base": base, "seq_len": 32, "batch_size": 2},
        {
            "configs": [
                {"name": "lora_fp32", "peak_median_bytes": 9 * 10**8, "metric": "peak_anon_rss"},
                {"name": "port_nf4", "peak_median_bytes": 3 * 10**8, "metric": "peak_anon_rss"},
            ],
            "ratio": 3.0,
        },
    )
    assert main(["report", "--out", str(tmp_path / "cli")]) == 0

    async def body() -> None:
        app = make_app(start_screen="runs", report_dir=str(tmp_path / "app"), read_hardware=fake_cpu_report)
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            await pilot.press("w")
            await pilot.pause()
            await pilot.press("enter")
            await settle(pilot)

    run(body)
    cli = sorted(p.name for p in (tmp_path / "cli").iterdir())
    assert sorted(p.name for p in (tmp_path / "app").iterdir()) == cli
    assert cli == [
        "accuracy.png",
        "estimate_vs_measured.png",
        "memory_breakdown.png",
        "memory_budget.png",
        "report.json",
        "report.md",
    ]
    app_doc = json.loads((tmp_path / "app" / "report.json").read_text())
    first = app_doc["budget"][0]
    assert first["this_machine"] and first["total_bytes"] == 16 * 2**30  # the injected CPU box
    assert app_doc["accuracy"][0]["task"] == "animal-or-vehicle/dev.jsonl"
    assert all(m["estimate_bytes"] for m in app_doc["memory"])  # the planner's estimates, as in the CLI's


def test_port_saving_comes_from_a_worker_process_and_ctrl_r_measures_the_baseline(
    stored_llama_patch: str, tiny_pairs, tmp_path: Path, monkeypatch
) -> None:
    """The port's peak is the worker's (a child process, not this app); the estimate is labelled,
    ctrl+r replaces it with a fine-tune measured in a worker, and the Dashboard shows that saving."""
    import os
    import subprocess

    from portllm_edge.measure import bench, isolated

    spawned: list[tuple[int, list[str]]] = []
    results: list[tuple[str, int]] = []
    real_popen, real_measure = subprocess.Popen, isolated.measure_job

    class SpyPopen(real_popen):  # type: ignore[misc,valid-type]
        def __init__(self, cmd, *args, **kwargs):
            super().__init__(cmd, *args, **kwargs)
            spawned.append((self.pid, list(cmd)))

    def spy_measure(job, params, **kwargs):
        m = real_measure(job, params, **kwargs)
        results.append((job, m.peak_bytes))
        return m

    monkeypatch.setattr(isolated.subprocess, "Popen", SpyPopen)
    monkeypatch.setattr(isolated, "measure_job", spy_measure)
    monkeypatch.setattr(bench, "measure_job", spy_measure)
    rows = ["sentence\tlabel"] + [f"{'a fine' if i % 2 else 'a dull'} film {i}\t{i % 2}" for i in range(8)]
    data = tmp_path / "dev.tsv"
    data.write_text("\n".join(rows) + "\n", encoding="utf-8")

    async def body() -> None:
        app = make_app(start_screen="port", read_hardware=fake_cpu_report)
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            screen = app.screen
            _choose(screen, stored_llama_patch, str(tiny_pairs["llama"].new))
            screen.query_one("#eval-task").value = "sst2"
            screen.query_one("#eval-data").value = str(data)
            screen.query_one("#eval-limit").value = "4"
            await settle(pilot)
            await pilot.press("ctrl+g")
            await wait_for(pilot, lambda: screen.summary is not None, 180)
            await settle(pilot)
            s = screen.summary
            # The figure is the worker's: a child process ran the port job, and its peak is shown.
            workers = [(pid, cmd) for pid, cmd in spawned if "portllm_edge.measure.worker" in cmd]
            assert workers and all(pid != os.getpid() for pid, _cmd in workers)
            assert [cmd[cmd.index("portllm_edge.measure.worker") + 1] for _p, cmd in workers] == ["port"]
            from portllm_edge.measure.memory import HEADLINE_METRIC

            assert results == [("port", s.peak_bytes)] and s.metric == HEADLINE_METRIC
            assert "measured in a worker process" in s.peak_metric
            # No measured fine-tune yet: the baseline is the planner's, labelled, with the key to measure it.
            assert s.baseline_source == "estimate"
            text = plain(screen.query_one("#summary"))
            assert "ESTIMATED baseline" in text and "ctrl+r" in text
            await pilot.press("ctrl+r")
            await wait_for(pilot, lambda: not screen.measuring, 300)
            await settle(pilot)
            m = screen.summary
            finetune = [peak for job, peak in results if job == "lora_finetune"]
            assert m.baseline_source == "measured" and finetune and m.baseline_bytes == finetune[0]
            assert m.peak_bytes == s.peak_bytes  # the port's own measurement is kept
            assert "saving (measured)" in plain(screen.query_one("#summary"))
            await pilot.press("1")
            await settle(pilot)
            savings = plain(app.screen.query_one("#savings"))
            assert "llama-new" in savings and "less" in savings

    run(body)


def test_models_screen_shows_pick_decode_speed_for_a_profile_with_bandwidth() -> None:
    """A hardware profile carries its data-sheet bandwidth: the tok/s column is pick's estimate."""
    from portllm_edge.planning import memory_budget, pick_models

    budget = memory_budget("rtx-4060-8gb")
    assert budget.bandwidth_bytes_per_s

    async def body() -> None:
        app = make_app(start_screen="models", hardware_profile="rtx-4060-8gb")
        async with app.run_test(size=(120, 30)) as pilot:
            await settle(pilot)
            screen = app.screen
            table = screen.query_one("#models")
            first = next(iter(screen.rows.values()))
            assert first.best is not None and first.best.tokens_per_s
            shown = _cell_texts(table)[0][-1]
            assert shown == f"{first.best.tokens_per_s:,.0f}"
            ranked = pick_models(budget=budget, precisions=("nf4", "int8", "bf16", "fp32"))
            assert ranked[0].model.name == first.spec.name  # the same order as `pick`
            assert "tokens/s" in plain(screen.query_one("#breakdown"))

    run(body)
