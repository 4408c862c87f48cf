"""The app is a thin client: it imports the core only through ``portllm_edge.workflow`` (issue 11)."""

from __future__ import annotations

import ast
from pathlib import Path

TUI = Path(__file__).resolve().parents[2] / "tui"


def _core_imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = (
                [node.module]
                if node.module != "portllm_edge"
                else [f"portllm_edge.{a.name}" for a in node.names]
            )
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found.extend((node.lineno, n) for n in names if n == "portllm_edge" or n.startswith("portllm_edge."))
    return found


def test_the_app_imports_only_the_workflow_layer():
    files = sorted(TUI.rglob("*.py"))
    assert len(files) >= 7
    around = [
        f"{f.relative_to(TUI.parent)}:{line}: {name}"
        for f in files
        for line, name in _core_imports(f)
        if not (name == "portllm_edge.workflow" or name.startswith("portllm_edge.workflow."))
    ]
    assert around == [], "the app imports the core around portllm_edge.workflow:\n" + "\n".join(around)
    assert any(_core_imports(f) for f in files)  # it does use the core, through the workflow layer


def test_the_facade_passes_names_through_unchanged():
    from portllm_edge.patches import PatchStore
    from portllm_edge.reports import report_runs
    from portllm_edge.workflow import queries

    assert queries.PatchStore is PatchStore and queries.report_runs is report_runs
