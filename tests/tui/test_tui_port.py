"""The Port screen end to end: a real tiny llama patch ported onto its updated base through the UI.

Also: the planner's precision is preselected, a failing preflight check and core errors
become notifications (the app keeps running), and cancelling stops a port with nothing stored.
"""

from __future__ import annotations

from pathlib import Path

from tui_helpers import (  # type: ignore[import-not-found]
    fake_cpu_report,
    make_app,
    notifications,
    plain,
    run,
    settle,
    wait_for,
)


def _write_sst2(path: Path, n: int = 6) -> Path:
    rows = ["sentence\tlabel"]
    for i in range(n):
        rows.append(f"{'a fine film' if i % 2 else 'a dull film'} number {i}\t{i % 2}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_port_screen_ports_tiny_llama_patch_and_shows_summary(
    stored_llama_patch: str, tiny_pairs, tmp_path: Path
) -> None:
    from portllm_edge.planning import memory_budget, plan_model

    new_base = str(tiny_pairs["llama"].new)
    data = _write_sst2(tmp_path / "dev.tsv")
    expected_pick = plan_model(
        new_base,
        budget=memory_budget(report=fake_cpu_report()),
        precisions=("nf4", "int8", "bf16", "fp32"),
    ).best
    assert expected_pick is not None
    seen_phases: list[str] = []
    seen: dict[int, object] = {}  # id -> the message itself: kept alive, so no id is reused

    def hook(message) -> None:
        # The hook sees a message at each pump it reaches (screen, then app when it bubbles).
        if type(message).__name__ == "PortPhase" and id(message) not in seen:
            seen[id(message)] = message
            seen_phases.append(message.phase)

    async def body() -> None:
        app = make_app(start_screen="port", read_hardware=fake_cpu_report)
        async with app.run_test(size=(100, 30), message_hook=hook) as pilot:
            await settle(pilot)
            screen = app.screen
            # 1: the stored patch is offered.
            patch_select = screen.query_one("#patch")
            assert [v for _label, v in patch_select._options if isinstance(v, str)] == [stored_llama_patch]
            patch_select.value = stored_llama_patch
            # 2: a base folder typed into the path field.
            screen.query_one("#base-path").value = new_base
            await settle(pilot)
            # 3: the planner's pick for this budget is preselected, with its reason.
            assert screen.query_one("#precision").value == expected_pick.value
            assert "planner's pick" in plain(screen.query_one("#precision-note"))
            screen.query_one("#precision").value = "fp32"
            screen.query_one("#eval-task").value = "sst2"
            screen.query_one("#eval-data").value = str(data)
            screen.query_one("#eval-limit").value = "4"
            await pilot.pause()
            # 4 + 5: ctrl+g runs the preflight, then the port, pressed while a text field has focus.
            screen.query_one("#eval-limit").focus()
            await pilot.press("ctrl+g")
            assert screen.query_one("#eval-limit").value == "4"  # the key typed nothing
            await wait_for(
                pilot,
                lambda: screen.summary is not None or "stopped" in plain(screen.query_one("#port-status")),
                120,
            )
            await settle(pilot)
            s = screen.summary
            assert s is not None, plain(screen.query_one("#port-status"))
            assert (s.matched_tensors, s.total_tensors) == (8, 8)  # r=4 A and B on q_proj, v_proj, 2 layers
            assert s.precision == "fp32" and s.finite and s.max_abs_logit_change > 0
            assert s.ported_name == "llama-patch@llama-new"
            assert s.evaluation is not None and s.evaluation["n"] == 4
            assert 0.0 <= s.evaluation["accuracy"] <= 1.0
            assert s.peak_bytes > 100 * 2**20  # torch + transformers are in this process
            assert s.baseline_bytes is not None and s.baseline_bytes > 0
            assert s.saving_bytes == s.baseline_bytes - s.peak_bytes
            assert set(s.phases) == {"check", "load", "attach", "evaluate", "save"}
            assert seen_phases == ["check", "load", "attach", "evaluate", "save"]
            # Preflight rows are shown, none failed.
            table = screen.query_one("#preflight")
            from portllm_edge.porting.preflight import CHECK_NAMES

            assert table.row_count == len(CHECK_NAMES) == 11
            text = plain(screen.query_one("#summary"))
            assert "matched tensors 8/8" in text
            assert "accuracy on sst2" in text and "saving against the ESTIMATED baseline" in text
            assert "llama-patch@llama-new" in text
            # The core recorded it: the new patch is in the store and the run in the history.
            from portllm_edge.history import list_runs
            from portllm_edge.patches import PatchStore

            assert "llama-patch@llama-new" in PatchStore().names()
            runs = list_runs(kind="port")
            assert runs and runs[0].id == s.run_id
            assert not [n for n in notifications(app) if n.severity == "error"]

    run(body)


def test_failing_check_and_core_errors_are_notifications_not_crashes(
    stored_llama_patch: str, tiny_pairs, tmp_path: Path
) -> None:
    async def body() -> None:
        app = make_app(start_screen="port", read_hardware=fake_cpu_report)
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            screen = app.screen
            screen.query_one("#patch").value = stored_llama_patch
            # A llama patch on a qwen2 base: the preflight fails (architecture).
            screen.query_one("#base-path").value = str(tiny_pairs["qwen2"].new)
            await settle(pilot)
            await pilot.press("ctrl+t")
            await settle(pilot)
            errs = [n for n in notifications(app) if n.severity == "error"]
            assert errs and errs[-1].title == "Preflight failed"
            assert screen.preflight is not None and not screen.preflight.ok
            failed = {c.name for c in screen.preflight.failures}
            assert "architecture" in failed
            assert "architecture" in errs[-1].message or errs[-1].message.split(":")[0] in failed
            status = plain(screen.query_one("#port-status"))
            assert "It will not port" in status and "fix:" in status
            # "Port" refuses while the check fails, and stores nothing.
            before = len(notifications(app))
            await pilot.press("ctrl+g")
            await settle(pilot)
            assert len(notifications(app)) > before
            assert screen.summary is None and not screen.running
            from portllm_edge.patches import PatchStore

            assert PatchStore().names() == [stored_llama_patch]
            # A core error (BaseModelError: no such folder) is a notification with its title and fix.
            screen.query_one("#base-path").value = str(tmp_path / "no-such-model")
            await settle(pilot)
            await pilot.press("ctrl+t")
            await settle(pilot)
            last = notifications(app)[-1]
            assert last.severity == "error" and last.title == "Base model"
            assert "no-such-model" in last.message and "Fix:" in last.message
            # The app is still alive and usable.
            await pilot.press("1")
            await settle(pilot)
            assert type(app.screen).__name__ == "DashboardScreen"

    run(body)


def test_cancel_stops_the_port_and_stores_nothing(stored_llama_patch: str, tiny_pairs) -> None:
    async def body() -> None:
        app = make_app(start_screen="port", read_hardware=fake_cpu_report)
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            screen = app.screen
            screen.query_one("#patch").value = stored_llama_patch
            screen.query_one("#base-path").value = str(tiny_pairs["llama"].new)
            screen.query_one("#precision").value = "fp32"
            await settle(pilot)
            await pilot.press("ctrl+t")
            await settle(pilot)
            assert screen.preflight is not None and screen.preflight.ok
            # Start and cancel in the same UI tick: the worker sees the flag at its first phase.
            screen.action_port()
            assert screen.running
            screen.action_cancel()
            await wait_for(pilot, lambda: not screen.running, 60)
            await settle(pilot)
            assert screen.summary is None
            assert "cancelled before the check phase" in plain(screen.query_one("#port-status"))
            assert any(n.title == "Port cancelled" for n in notifications(app))
            from portllm_edge.patches import PatchStore

            assert PatchStore().names() == [stored_llama_patch]
            assert not screen.query_one("#port-btn").disabled

    run(body)


def test_port_screen_ports_all_patches_of_the_lineage(tiny_pairs, tiny_adapters, tmp_path: Path) -> None:
    """ "all patches of this lineage": every stored patch of the chosen patch's base, one table."""
    import sys

    from portllm_edge.patches import PatchStore

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from factories import build_lora_adapter

    pair = tiny_pairs["llama"]
    store = PatchStore()
    store.import_dir(tiny_adapters["llama"], name="dept-a", source_base_id=str(pair.old))
    store.import_dir(
        build_lora_adapter(pair.old, tmp_path / "b", seed=5), name="dept-b", source_base_id=str(pair.old)
    )
    store.import_dir(tiny_adapters["qwen2"], name="other", source_base_id=str(tiny_pairs["qwen2"].old))
    finished = []

    def hook(message) -> None:
        if type(message).__name__ == "FleetFinished" and all(m is not message for m in finished):
            finished.append(message)

    async def body() -> None:
        app = make_app(start_screen="port", read_hardware=fake_cpu_report)
        async with app.run_test(size=(100, 30), message_hook=hook) as pilot:
            await settle(pilot)
            screen = app.screen
            screen.query_one("#patch").value = "dept-b"
            screen.query_one("#base-path").value = str(pair.new)
            await settle(pilot)
            screen.query_one("#precision").value = "fp32"
            screen.query_one("#all-lineage").value = True
            await pilot.press("ctrl+g")
            await wait_for(
                pilot, lambda: bool(finished) or "stopped" in plain(screen.query_one("#port-status")), 120
            )
            await settle(pilot)
            assert finished, plain(screen.query_one("#port-status"))
            outcome = finished[0].outcome
            assert [(i.patch, i.result) for i in outcome.items] == [
                ("dept-a", "ported"),
                ("dept-b", "ported"),
            ]
            summary = plain(screen.query_one("#summary"))
            assert "2 ported" in summary and "dept-a" in summary and "other" not in summary
            assert "Fleet port complete." in plain(screen.query_one("#port-status"))

    run(body)
    assert {"dept-a@llama-new", "dept-b@llama-new"} <= set(PatchStore().names())
    assert "other@llama-new" not in PatchStore().names()
