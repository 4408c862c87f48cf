"""Pilot tests: each screen driven by keys, with the fake hardware reading injected into the factory."""

from __future__ import annotations

from pathlib import Path

from tui_helpers import GiB, fake_report, make_app, notifications, plain, run, settle  # type: ignore[import-not-found]


def test_keys_and_palette_reach_every_screen() -> None:
    async def body() -> None:
        app = make_app()
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            seen = {}
            for key, name in zip("12345", ("Dashboard", "Models", "Patches", "Port", "Runs"), strict=True):
                await pilot.press(key)
                await settle(pilot)
                seen[key] = type(app.screen).__name__
                assert seen[key] == f"{name}Screen"
            titles = [c.title for c in app.get_system_commands(app.screen)]
            for name in ("Dashboard", "Models", "Patches", "Port", "Runs"):
                assert f"{name} screen" in titles
            assert "Write report" in titles  # the Runs screen's own actions are in the palette too
            # The palette runs a screen command: open it, type, choose.
            await pilot.press("ctrl+p")
            await pilot.pause()
            await pilot.press(*"Models screen")
            await pilot.pause(0.3)
            await pilot.press("enter")
            await settle(pilot)
            assert type(app.screen).__name__ == "ModelsScreen"

    run(body)


def test_dashboard_shows_memory_bars_and_budget_from_injected_reading() -> None:
    calls = []

    def reader():
        calls.append(1)
        return fake_report()

    async def body() -> None:
        app = make_app(read_hardware=reader)
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            hw = plain(app.screen.query_one("#hardware"))
            assert "GPU 0" in hw and "4.00 GiB / 12.00 GiB" in hw
            assert "12.00 GiB / 32.00 GiB" in hw  # host: 32 total - 20 available
            budget = plain(app.screen.query_one("#budget"))
            # The budget is the GPU with most free memory: 8 GiB available, 10 % kept back.
            assert "GPU 0 (NVIDIA GeForce RTX 3060)" in budget
            assert "usable 7.20 GiB" in budget
            n = len(calls)
            await pilot.press("g")  # refresh
            await settle(pilot)
            assert len(calls) == n + 1

    run(body)


def test_dashboard_timer_refreshes_bars() -> None:
    readings = iter([4, 5, 6, 7, 8, 9, 10, 11, 11, 11, 11, 11, 11, 11, 11, 11])

    def reader():
        from dataclasses import replace

        used = next(readings) * GiB
        rep = fake_report()
        gpu = replace(rep.gpus[0], used_bytes=used, free_bytes=12 * GiB - used)
        return replace(rep, gpus=(gpu,))

    async def body() -> None:
        app = make_app(read_hardware=reader, refresh_seconds=0.1)
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            first = plain(app.screen.query_one("#hardware"))
            await pilot.pause(0.5)
            await settle(pilot)
            later = plain(app.screen.query_one("#hardware"))
            assert first != later
            assert "GiB / 12.00 GiB" in later

    run(body)


def test_models_screen_ranks_catalog_and_shows_breakdown() -> None:
    async def body() -> None:
        app = make_app(start_screen="models")
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            screen = app.screen
            table = screen.query_one("#models")
            assert table.row_count >= 10  # the profile catalog (17 versions)
            rows = list(screen.rows.values())
            # Ranked like pick_models: every model with a fitting precision comes before any without.
            fits = [r.best is not None for r in rows]
            assert fits == sorted(fits, reverse=True)
            first = rows[0]
            assert first.best is not None and first.best.fits
            assert first.best.inference.total_bytes <= int(8 * GiB * 0.9)
            text = plain(screen.query_one("#breakdown"))
            assert first.spec.name in text and "fine-tune" in text and "port a patch onto it" in text
            # Moving the cursor shows another model's breakdown.
            await pilot.press("down")
            await settle(pilot)
            assert rows[1].spec.name in plain(screen.query_one("#breakdown"))
            assert "usable" in plain(screen.query_one("#models-budget"))

    run(body)


def test_models_import_folder_adds_store_model(tiny_pairs) -> None:
    async def body() -> None:
        app = make_app(start_screen="models")
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            await pilot.press("f")
            await pilot.pause()
            app.screen.query_one("#path").value = str(tiny_pairs["llama"].new)
            await pilot.press("enter")
            await settle(pilot)
            from portllm_edge import paths

            dest = paths.models_dir() / "llama-new"
            assert (dest / "config.json").is_file() and list(dest.glob("*.safetensors"))
            assert "store:llama-new" in app.screen.rows
            # Importing the same folder again is a core error: a notification, not a crash.
            await pilot.press("f")
            await pilot.pause()
            app.screen.query_one("#path").value = str(tiny_pairs["llama"].new)
            await pilot.press("enter")
            await settle(pilot)
            errs = [n for n in notifications(app) if n.severity == "error"]
            assert errs and "already has 'llama-new'" in errs[-1].message

    run(body)


def test_models_import_gguf_error_is_a_notification(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-model.gguf"
    bad.write_bytes(b"nope")

    async def body() -> None:
        app = make_app(start_screen="models")
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            await pilot.press("i")
            await pilot.pause()
            app.screen.query_one("#path").value = str(bad)
            await pilot.press("enter")
            await settle(pilot)
            errs = [n for n in notifications(app) if n.severity == "error"]
            assert errs, "a bad GGUF must produce an error notification"
            assert errs[-1].title == "Base model" and "not-a-model.gguf" in errs[-1].message
            assert type(app.screen).__name__ == "ModelsScreen"

    run(body)


def test_patches_screen_table_verify_export_remove(stored_llama_patch: str, tmp_path: Path) -> None:
    async def body() -> None:
        app = make_app(start_screen="patches")
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            screen = app.screen
            table = screen.query_one("#patches")
            assert table.row_count == 1
            row = [str(c) for c in table.get_row("llama-patch")]
            # name, source base, lineage, task, r, size
            assert row[0] == "llama-patch" and row[3] == "sst2" and row[4] == "4"
            assert row[1] == "llama-old" and row[2] == "import"
            details = plain(screen.query_one("#patch-details"))
            assert "r=4 alpha=8" in details and "adapter_model.safetensors" in details

            await pilot.press("v")
            await settle(pilot)
            assert any(n.title == "Verified" for n in notifications(app))

            dest = tmp_path / "exported"
            await pilot.press("e")
            await pilot.pause()
            app.screen.query_one("#path").value = str(dest)
            await pilot.press("enter")
            await settle(pilot)
            assert (dest / "adapter_model.safetensors").is_file() and (dest / "manifest.json").is_file()

            # Remove asks first; "n" keeps the patch.
            await pilot.press("x")
            await pilot.pause()
            assert type(app.screen).__name__ == "ConfirmModal"
            await pilot.press("n")
            await settle(pilot)
            assert screen.query_one("#patches").row_count == 1
            await pilot.press("x")
            await pilot.pause()
            await pilot.press("y")
            await settle(pilot)
            from portllm_edge.patches import PatchStore

            assert PatchStore().names() == []
            assert screen.query_one("#patches").row_count == 0

    run(body)


def test_patches_verify_reports_damage(stored_llama_patch: str) -> None:
    from portllm_edge.patches import PatchStore

    entry = PatchStore().path_of(stored_llama_patch)
    weights = next(entry.rglob("adapter_model.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))

    async def body() -> None:
        app = make_app(start_screen="patches")
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            await pilot.press("v")
            await settle(pilot)
            errs = [n for n in notifications(app) if n.severity == "error"]
            assert errs and errs[-1].title == "Verify failed"
            assert "adapter_model.safetensors" in errs[-1].message

    run(body)


def test_runs_screen_details_chart_and_report(tmp_path: Path) -> None:
    from portllm_edge.history import record_run

    run_id = record_run(
        "eval",
        {"task": "sst2", "base": "llama-new", "patch": "p1", "precision": "nf4"},
        {"task": "sst2", "n": 200, "accuracy": 0.812, "ci_low": 0.75, "ci_high": 0.86},
    )
    port_id = record_run(
        "port",
        {"patch": "p1", "base": "llama-new", "precision": "nf4"},
        {"phases": {"check": 0.1, "load": 2.5, "attach": 0.4, "save": 0.2}, "peak_rss_bytes": 900 * 2**20},
    )

    async def body() -> None:
        app = make_app(start_screen="runs", report_dir=str(tmp_path / "report"))
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            screen = app.screen
            assert screen.query_one("#runs").row_count == 2
            # Newest first: the port run, charted as seconds per phase.
            assert screen.order == [port_id, run_id]
            chart = plain(screen.query_one("#run-chart"))
            assert "seconds per phase" in chart and "load" in chart
            await pilot.press("down")
            await settle(pilot)
            details = plain(screen.query_one("#run-details"))
            assert run_id in details and "0.812" in details
            assert "accuracy" in plain(screen.query_one("#run-chart"))
            await pilot.press("w")
            await pilot.pause()
            await pilot.press("enter")
            await settle(pilot)
            assert (tmp_path / "report" / "report.md").is_file()
            md = (tmp_path / "report" / "report.md").read_text()
            assert "0.812" in md
            assert any(n.title == "Report written" for n in notifications(app))

    run(body)


def test_runs_screen_shows_a_compare_runs_paired_statistics() -> None:
    from portllm_edge.evaluation.paired import port_statistics
    from portllm_edge.history import record_run

    zero = [False] * 10 + [True] * 10
    old = [True] * 18 + [False] * 2
    ported = [True] * 15 + [False] * 5
    stats = port_statistics(zero, old, ported, resamples=500)
    run_id = record_run(
        "compare",
        {"patch": "p1", "old": "v1", "new": "v2"},
        {"task": "sst2", "rows": [], "recovered_gain": 0.625, "paired": stats.to_dict()},
    )

    async def body() -> None:
        app = make_app(start_screen="runs")
        async with app.run_test(size=(140, 40)) as pilot:
            await settle(pilot)
            assert app.screen.order == [run_id]
            details = plain(app.screen.query_one("#run-details"))
            g = stats.recovered_gain
            assert g is not None and g.estimate == 0.625  # (15 − 10) / (18 − 10)
            assert f"recovered gain 62.5% (95% paired bootstrap CI {g.low:.1%} to {g.high:.1%})" in details
            assert "McNemar" in details

    run(body)
