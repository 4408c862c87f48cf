"""Run every bad-input case through the CLI in-process; see cases.py for the contract."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from bad_inputs.cases import CASES, Case, Ctx

from portllm_edge import paths

_HISTORY = ("runs", "runs.sqlite")


def _snapshot(root: Path, *, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """Relative path -> sha256 (files) or "<dir>" for everything under ``root``, except the store lock.

    ``skip`` names top-level entries (and their ``-wal``/``-journal`` siblings) left out.
    """
    out: dict[str, str] = {}
    if not root.exists():
        return out
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.name == ".lock" or rel.split("/")[0].split("-")[0] in skip:
            continue
        out[rel] = "<dir>" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _fill(text: str, ctx: Ctx) -> str:
    return text.replace("{tmp}", str(ctx.tmp)).replace("{home}", str(ctx.home))


def test_case_ids_are_unique() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert len([c for c in CASES if c.id.startswith("patch-")]) >= 8


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_bad_input(case: Case, tmp_path: Path, portllm_home: Path, request, capsys) -> None:
    from portllm_edge.cli import main

    ctx = Ctx(tmp=tmp_path / "case", home=portllm_home, getfixture=request.getfixturevalue)
    ctx.tmp.mkdir()
    case.build(ctx)
    paths.set_home(None)
    before_home, before_tmp = _snapshot(ctx.home, skip=_HISTORY), _snapshot(ctx.tmp)
    from portllm_edge import history

    before_runs = {r.id for r in history.list_runs(limit=10_000)} if paths.runs_db().exists() else set()
    capsys.readouterr()

    code = main([_fill(a, ctx) for a in case.argv])
    err = capsys.readouterr().err
    paths.set_home(None)

    assert code == case.exit_code, f"exit {code}, stderr: {err}"
    assert "Traceback" not in err
    error_lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1, err
    assert "Fix:" in error_lines[0]
    for word in case.keywords:
        assert _fill(word, ctx) in err, f"{word!r} not in stderr: {err}"
    assert _snapshot(ctx.home, skip=_HISTORY) == before_home, "the home folder (store) changed"
    # The history may only gain the failed run itself, with the error the user saw as its reason.
    new_runs = [r for r in history.list_runs(limit=10_000) if r.id not in before_runs]
    for run in new_runs:
        assert run.status == "failed", f"{run.id} recorded as {run.status}"
        assert run.results.get("error") and run.results["error"] in error_lines[0], run.results
    assert _snapshot(ctx.tmp) == before_tmp, "the case's input/output folder changed"
