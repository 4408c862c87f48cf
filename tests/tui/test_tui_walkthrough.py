"""Pilot tests of what a new-user walkthrough after ``make demo`` found (issue 14, second pass):
the Models screen ranks as ``pick`` does, the Port screen shows the precision decision for the
chosen base, the Dashboard has no stray glyphs, and Patches › Export offers every format."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout

import pytest
from demo_state import build_demo_state  # type: ignore[import-not-found]
from tui_helpers import make_app, plain, run, settle  # type: ignore[import-not-found]


@pytest.fixture
def demo_home(tiny_adapters, monkeypatch) -> None:
    build_demo_state(tiny_adapters["llama"], monkeypatch)


def _pick_json(*args: str) -> list[tuple[str, str]]:
    from portllm_edge.cli import main

    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(["pick", *args, "--json"]) == 0
    return [(c["model"], c["precision"]) for c in json.loads(buf.getvalue())["choices"]]


def test_models_screen_ranks_exactly_as_pick_on_a_cpu_profile() -> None:
    """cpu-16gb: the 8-9B models fit only at precisions too slow to use (< 5 tok/s at 40 GB/s).

    `pick` ranks them after the 7B models at int8; the Models screen used to rank each model by
    its fastest fitting precision (Gemma-2-9B at nf4 first). One ranking now, through the workflow.
    """
    cli = _pick_json("--hardware", "cpu-16gb")
    assert cli[0] != ("Gemma-2-9B", "nf4")

    async def body() -> None:
        app = make_app(start_screen="models", hardware_profile="cpu-16gb")
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            table = app.screen.query_one("#models")
            shown = []
            for r in range(table.row_count):
                cells = table.get_row_at(r)
                best = cells[7]
                shown.append((str(cells[0]), best.plain if hasattr(best, "plain") else str(best)))
            assert shown[: len(cli)] == cli
            assert all(best == "none" for _name, best in shown[len(cli) :])  # then what fits nowhere

    run(body)


def test_models_rows_carry_the_one_precision_decision() -> None:
    from portllm_edge.planning import decide_precision, memory_budget
    from portllm_edge.workflow.queries import rank_models

    budget = memory_budget("cpu-16gb")
    ranked = rank_models(budget, precisions=("nf4", "int8", "bf16", "fp32"))
    fitting = [m for m in ranked if m.best is not None]
    assert len(fitting) >= 10
    for m in fitting:
        assert m.best is m.choice
        assert m.choice.precision is decide_precision(m.choice.model, budget=budget, job="port").precision
        assert set(m.by_precision) == {"nf4", "int8", "bf16", "fp32"}


def test_port_screen_shows_the_decision_for_the_chosen_base_and_keeps_a_user_choice(tiny_pairs) -> None:
    from textual.widgets import Select
    from tui_helpers import fake_cpu_report  # type: ignore[import-not-found]

    from portllm_edge.planning import Precision, decide_precision, memory_budget

    base = str(tiny_pairs["llama"].new)
    allowed = tuple(Precision(p) for p in ("nf4", "int8", "bf16", "fp32"))
    decided = decide_precision(
        base, budget=memory_budget(report=fake_cpu_report()), job="port", allowed=allowed
    )

    async def body() -> None:
        app = make_app(start_screen="port", read_hardware=fake_cpu_report)
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            screen = app.screen
            select = screen.query_one("#precision")
            # No base yet: no precision shown (it used to say nf4 whatever the base).
            assert select.value is Select.NULL and screen.chosen_precision() == "auto"
            screen.query_one("#base-path").value = base
            await settle(pilot)
            assert select.value == decided.precision.value
            assert decided.reason in plain(screen.query_one("#precision-note"), width=300)
            assert not screen.precision_chosen

    async def chosen_first() -> None:
        app = make_app(start_screen="port", read_hardware=fake_cpu_report)
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            screen = app.screen
            mine = "nf4" if decided.precision.value != "nf4" else "fp32"
            screen.query_one("#precision").value = mine  # chosen before any base
            await settle(pilot)
            screen.query_one("#base-path").value = base
            await settle(pilot)
            assert screen.query_one("#precision").value == mine and screen.chosen_precision() == mine
            assert f"Your {mine} is kept" in plain(screen.query_one("#precision-note"), width=300)

    run(body)
    run(chosen_first)


def test_patches_export_offers_every_format_and_writes_the_chosen_one(stored_llama_patch, tmp_path) -> None:
    from tui_helpers import notifications  # type: ignore[import-not-found]

    async def body() -> None:
        app = make_app(start_screen="patches")
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            await pilot.press("e")
            await pilot.pause()
            modal = app.screen
            assert type(modal).__name__ == "ExportModal"
            fmt = modal.query_one("#export-format")
            assert [v for _label, v in fmt._options] == ["peft", "vllm", "gguf-lora"]
            path = modal.query_one("#path")
            assert path.value == "./llama-patch-peft"
            fmt.value = "gguf-lora"
            await pilot.pause()
            assert path.value == "./llama-patch.gguf"  # a llama.cpp adapter is one file
            fmt.value = "vllm"
            await pilot.pause()
            dest = tmp_path / "for-vllm"
            path.value = str(dest)
            await pilot.press("enter")
            await settle(pilot)
            cfg = json.loads((dest / "adapter_config.json").read_text())
            assert cfg["peft_type"] == "LORA" and cfg["r"] == 4
            assert not (dest / "manifest.json").exists()  # vLLM's folder, not the store's copy
            done = [n for n in notifications(app) if n.title == "Exported"]
            assert done and "as vllm" in done[-1].message and "vllm serve" in done[-1].message

    run(body)


@pytest.mark.parametrize("size", [(80, 24), (100, 30), (120, 40)])
def test_dashboard_recent_runs_never_scroll_sideways(demo_home, size) -> None:
    """A sideways scrollbar under Recent runs drew its partial thumb as a stray ``▌``."""

    async def body() -> None:
        app = make_app()
        async with app.run_test(size=size) as pilot:
            await settle(pilot)
            table = app.screen.query_one("#recent")
            assert table.row_count >= 3
            assert table.max_scroll_x == 0 and not table.show_horizontal_scrollbar
            what = [str(table.get_row_at(r)[3]) for r in range(table.row_count)]
            assert any(w.startswith("ratio ") for w in what)  # the bench run's line is there
            assert not any(ch in app.export_screenshot() for ch in "▌▋▊▉▍▎")

    run(body)
