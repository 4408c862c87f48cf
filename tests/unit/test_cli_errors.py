"""Every CLI error is one ``error: ...`` line on stderr and exit code 2 (usage errors included),
and ``port`` refuses options it would ignore, before any work (issue 14, walkthrough)."""

from __future__ import annotations

import pytest

from portllm_edge import paths
from portllm_edge.cli import main


def run(capsys, *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(list(argv))
    err = capsys.readouterr().err
    paths.set_home(None)
    return code, err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (("patch", "show"), "error: Missing argument 'name'. Fix: portllm-edge patch show [OPTIONS]"),
        (("patch", "show", "nope"), "error: no patch named 'nope' in the store at "),
        (("plan", "SmolLM2-135M", "--context", "0"), "error: Invalid value for '--context'"),
        (("no-such-command",), "error: No such command 'no-such-command'. Fix: portllm-edge [OPTIONS]"),
    ],
)
def test_usage_and_core_errors_share_one_prefix_and_exit_2(capsys, argv, expected) -> None:
    code, err = run(capsys, *argv)
    assert code == 2
    assert err.startswith(expected), err
    assert "Error:" not in err and err.count("\n") == 1  # one line, one prefix


def test_a_core_error_without_a_full_stop_gets_one_before_the_fix(capsys) -> None:
    code, err = run(capsys, "patch", "show", "nope")
    assert code == 2 and "/patches. Fix: the store is empty" in err


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (("--name", ""), "error: `--name` is empty; the ported patch needs a store name."),
        (("--name", "  "), "error: `--name` is empty"),
        (
            ("--no-save", "--name", "x"),
            "error: `--name x` names the stored port, but `--no-save` stores nothing.",
        ),
        (("--eval-limit", "0"), "error: `--eval-limit 0` evaluates no example."),
        (
            ("--eval-limit", "5"),
            "error: `--eval-limit` sets up an evaluation, but no `--eval-task` was given.",
        ),
    ],
)
def test_port_refuses_options_it_would_ignore_before_looking_anything_up(capsys, extra, expected) -> None:
    # The patch does not exist: the option check must come first, so this error is never reached.
    code, err = run(capsys, "port", "no-such-patch", "--base", "no-such-base", *extra)
    assert code == 2
    assert err.startswith(expected), err
    assert "no-such-patch" not in err


def test_port_name_checks_are_recorded_as_a_failed_run(capsys) -> None:
    from portllm_edge.history import list_runs

    code, _err = run(capsys, "port", "p", "--base", "b", "--no-save", "--name", "x")
    assert code == 2
    runs = list_runs("port")
    assert runs and runs[0].status in ("failed", "error")
    assert "--no-save" in runs[0].results["error"] and runs[0].results["error_type"] == "ConfigError"


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (("report", "--out", "", "--no-budget"), "--out"),
        (("report", "--out", " ", "--no-budget"), "--out"),
        (("merge", "no-such-patch", "--base", "no-such-base", "--out", "", "--overwrite"), "--out"),
        (("simulate-update", "no-such-base", "--corpus", "c.txt", "--out", "", "--force"), "--out"),
        (("port", "no-such-patch", "--base", "no-such-base", "--merge-to", ""), "--merge-to"),
        (("patch", "export", "no-such-patch", "--out", ""), "--out"),
        (("patch", "export", "no-such-patch", ""), "dest"),
        (("patch", "export", "no-such-patch", "--out", "x", "--merge-to", ""), "--merge-to"),
        (("patch", "convert", "no-such-folder", "--out", ""), "--out"),
        (("eval", "--task", "sst2", "--data", "d.tsv", "--base", "b", "--predictions", ""), "--predictions"),
        (("models", "convert-pickle", "w.bin", ""), "dst"),
    ],
)
def test_an_empty_destination_is_refused_before_anything_is_written(
    capsys, tmp_path, monkeypatch, argv, option
) -> None:
    """An empty --out meant the current folder (report wrote report.md there; merge/simulate-update
    with --overwrite/--force would have replaced it)."""
    from portllm_edge.history import record_run

    record_run("eval", {"task": "sst2"}, {"accuracy": 0.5, "n": 2}, versions={}, hardware={})
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    code, err = run(capsys, *argv)
    assert code == 2
    assert err.startswith(f"error: Invalid value for '{option}': the path is empty"), err
    assert "current folder" in err and "pass ." in err
    assert list(cwd.iterdir()) == []


def test_the_core_refuses_an_empty_destination_too(tmp_path, monkeypatch) -> None:
    """Library and app callers pass strings: the core's own checks refuse "" as the CLI does."""
    from portllm_edge.errors import ConfigError, PortingError
    from portllm_edge.fsutil import unwritable_reason
    from portllm_edge.porting.merge import check_merge_target
    from portllm_edge.reports import build_report, write_report

    monkeypatch.chdir(tmp_path)
    assert unwritable_reason("").startswith("the path is empty, which would mean the current folder")
    assert unwritable_reason("  ") == unwritable_reason("")
    assert unwritable_reason(tmp_path / "ok") is None
    with pytest.raises(ConfigError, match="report folder '': the path is empty"):
        write_report(build_report([], generated_at="2025-03-01T13:00:00+00:00"), "")
    with pytest.raises(PortingError, match="merge output '': the path is empty"):
        check_merge_target(tmp_path / "a", tmp_path / "b", "", dtype="auto", overwrite=True)
    assert list(tmp_path.iterdir()) == []


def test_compare_takes_base_as_check_and_port_spell_it(capsys, tmp_path) -> None:
    # walkthrough: `compare PATCH --old A --base B` was "No such option: --base"; it is --new's other name
    paths.set_home(tmp_path)
    code, err = run(capsys, "compare", "nope", "--old", "a", "--base", "b", "--task", "sst2", "--data", "x")
    assert code == 2
    assert "No such option" not in err and "data file x does not exist" in err, err
