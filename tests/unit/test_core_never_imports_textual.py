"""The headless core never imports Textual: each ``portllm_edge.*`` module, imported in a fresh
interpreter, leaves ``textual`` out of ``sys.modules``.

One subprocess imports every module in turn and reports, after each import, whether
Textual (or any ``textual.*`` submodule) has appeared, so a failure names the first
module that pulled it in. The CLI's ``tui`` command imports the app lazily, inside the
command, so ``portllm_edge.cli`` passes too.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import portllm_edge

_PROBE = """
import importlib, json, sys
names = json.loads(sys.argv[1])
out = {}
for name in names:
    try:
        importlib.import_module(name)
    except Exception as exc:  # reported, not hidden: a module that can't import is a bug too
        out[name] = "import failed: %s: %s" % (type(exc).__name__, exc)
        continue
    textual = sorted(m for m in sys.modules if m == "textual" or m.startswith("textual."))
    out[name] = textual[:3]
print(json.dumps(out))
"""


def core_modules() -> list[str]:
    """Every module and package under ``portllm_edge`` (``__main__`` excluded: it runs the CLI)."""
    names = ["portllm_edge"]
    for info in pkgutil.walk_packages(portllm_edge.__path__, prefix="portllm_edge."):
        if not info.name.endswith("__main__"):
            names.append(info.name)
    return sorted(names)


def test_core_module_list_is_complete() -> None:
    names = core_modules()
    for expected in (
        "portllm_edge.hardware.probe",
        "portllm_edge.planning.plan",
        "portllm_edge.patches.store",
        "portllm_edge.porting.port",
        "portllm_edge.history.store",
        "portllm_edge.reports.render",
        "portllm_edge.cli.tui_cmds",
    ):
        assert expected in names
    assert len(names) > 40


def test_no_core_module_imports_textual() -> None:
    names = core_modules()
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(names)],
        capture_output=True,
        text=True,
        timeout=240,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    failed = {n: v for n, v in result.items() if isinstance(v, str)}
    assert not failed, failed
    offenders = {n: v for n, v in result.items() if v}
    assert not offenders, f"core modules that import textual (first offender first): {offenders}"
    assert set(result) == set(names)
