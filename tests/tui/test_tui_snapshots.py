"""SVG snapshots of every screen (pytest-textual-snapshot), with deterministic inputs.

The hardware reading is the fake RTX 3060 desktop injected into ``create_app``; the
live-refresh timer is off. The first three snapshots use an empty home (what a fresh
clone shows); the others use :mod:`demo_state`, a home like the one ``make demo`` leaves,
with every time stamp fixed, so nothing time- or machine-dependent is drawn. Update with
``pytest tests/tui --snapshot-update`` after checking the new SVGs by eye.
"""

from __future__ import annotations

import pytest
from demo_state import NEW_BASE, PATCH, PORTED, build_demo_state  # type: ignore[import-not-found]
from tui_helpers import make_app  # type: ignore[import-not-found]


async def _settle(pilot) -> None:
    for _ in range(3):
        await pilot.pause()
        await pilot.app.workers.wait_for_complete()
    # DataTable sizes its columns on Idle events, after the rows' messages are handled:
    # give it a few idle rounds, or a snapshot can catch header-width columns.
    for _ in range(5):
        await pilot.pause(0.05)


@pytest.fixture
def demo_home(tiny_adapters, monkeypatch) -> None:
    build_demo_state(tiny_adapters["llama"], monkeypatch)


def test_snapshot_dashboard_80x24(snap_compare) -> None:
    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=_settle)


def test_snapshot_models_100x30(snap_compare) -> None:
    assert snap_compare(make_app(start_screen="models"), terminal_size=(100, 30), run_before=_settle)


def test_snapshot_port_80x24(snap_compare) -> None:
    assert snap_compare(make_app(start_screen="port"), terminal_size=(80, 24), run_before=_settle)


def test_snapshot_demo_dashboard_100x30(snap_compare, demo_home) -> None:
    assert snap_compare(make_app(), terminal_size=(100, 30), run_before=_settle)


def test_snapshot_demo_models_store_names_in_full_100x30(snap_compare, demo_home) -> None:
    async def to_store_models(pilot) -> None:
        await _settle(pilot)
        table = pilot.app.screen.query_one("#models")
        table.focus()
        table.move_cursor(row=table.row_count - 1)  # the two small store models rank last
        await _settle(pilot)

    assert snap_compare(make_app(start_screen="models"), terminal_size=(100, 30), run_before=to_store_models)


def test_snapshot_demo_patches_100x30(snap_compare, demo_home) -> None:
    async def select_ported(pilot) -> None:
        await _settle(pilot)
        await pilot.press("down")  # the ported patch: its lineage names the -demo-v2 base
        await _settle(pilot)

    assert snap_compare(make_app(start_screen="patches"), terminal_size=(100, 30), run_before=select_ported)


def test_snapshot_demo_port_form_100x30(snap_compare, demo_home) -> None:
    async def fill(pilot) -> None:
        await _settle(pilot)
        screen = pilot.app.screen
        screen.query_one("#patch").value = PATCH
        screen.query_one("#base").value = NEW_BASE
        screen.query_one("#eval-task").value = "jsonl"
        screen.query_one("#eval-data").value = "demo/dev.jsonl"
        screen.query_one("#eval-template").value = "Sentence: {text}\\nAnswer:"
        screen.query_one("#eval-verbalizers").value = "animal=animal vehicle=vehicle"
        await _settle(pilot)

    assert snap_compare(make_app(start_screen="port"), terminal_size=(100, 30), run_before=fill)


def test_snapshot_demo_name_taken_modal_100x30(snap_compare, demo_home, tiny_pairs) -> None:
    import shutil

    from portllm_edge import paths

    # The preflight reads the base's safetensors headers: give the store's v2 the tiny llama's weights.
    target = paths.models_dir() / NEW_BASE
    shutil.rmtree(target)
    shutil.copytree(tiny_pairs["llama"].new, target)

    async def collide(pilot) -> None:
        await _settle(pilot)
        screen = pilot.app.screen
        screen.query_one("#patch").value = PATCH
        screen.query_one("#base").value = NEW_BASE
        screen.query_one("#precision").value = "fp32"
        await _settle(pilot)
        await pilot.press("ctrl+g")  # the preflight passes, then the taken name is offered
        # On a loaded machine the preflight's worker can finish after _settle's rounds: wait
        # (up to 20 s) for the modal itself, then settle its layout.
        for _ in range(400):
            if type(pilot.app.screen).__name__ == "NameTakenModal":
                break
            await pilot.pause(0.05)
        await _settle(pilot)
        assert type(pilot.app.screen).__name__ == "NameTakenModal", PORTED

    assert snap_compare(make_app(start_screen="port"), terminal_size=(100, 30), run_before=collide)


def test_snapshot_demo_runs_120x30(snap_compare, demo_home) -> None:
    assert snap_compare(make_app(start_screen="runs"), terminal_size=(120, 30), run_before=_settle)


def test_snapshot_keys_panel_100x30(snap_compare, demo_home) -> None:
    async def open_keys(pilot) -> None:
        await _settle(pilot)
        await pilot.press("f1")
        await _settle(pilot)

    assert snap_compare(make_app(start_screen="port"), terminal_size=(100, 30), run_before=open_keys)
