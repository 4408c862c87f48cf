"""SVG snapshots of the main screens (pytest-textual-snapshot), with deterministic inputs.

The hardware reading is the fake RTX 3060 desktop injected into ``create_app``; the
live-refresh timer is off; the home folder is empty (no runs, no patches), so nothing
time- or machine-dependent is drawn. Update with ``pytest tests/tui --snapshot-update``
after checking the new SVGs by eye.
"""

from __future__ import annotations

from tui_helpers import make_app  # type: ignore[import-not-found]


async def _settle(pilot) -> None:
    for _ in range(3):
        await pilot.pause()
        await pilot.app.workers.wait_for_complete()
    # DataTable sizes its columns on Idle events, after the rows' messages are handled:
    # give it a few idle rounds, or a snapshot can catch header-width columns.
    for _ in range(5):
        await pilot.pause(0.05)


def test_snapshot_dashboard_80x24(snap_compare) -> None:
    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=_settle)


def test_snapshot_models_100x30(snap_compare) -> None:
    assert snap_compare(make_app(start_screen="models"), terminal_size=(100, 30), run_before=_settle)


def test_snapshot_port_80x24(snap_compare) -> None:
    assert snap_compare(make_app(start_screen="port"), terminal_size=(80, 24), run_before=_settle)
