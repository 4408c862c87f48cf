"""Wall time of the two commands a user types right after ``make demo``, against their targets.

Issue 14's targets, measured here and never asserted in a test (timing depends on the machine):

* ``check demo-tags --base SmolLM2-135M-Instruct-demo-v2`` (drift table, no ``--old``): <= 2 s;
* ``port demo-tags --base SmolLM2-135M-Instruct-demo-v2``, whose name ``demo-tags@...`` the
  demo already stored: fails with the name collision, exit 2, before any load: < 3 s.

Each command runs as a fresh ``python -m portllm_edge`` process (interpreter start-up and imports
included, as a user sees it), ``--repeats`` times; the median and the worst wall time are printed
with the exit code and the line that shows it did what it should. Run it after ``make demo``
with the demo's data folder (``PORTLLM_EDGE_HOME``), under the heavy-job lock on a shared box::

    flock /tmp/portllm-heavy.lock .venv/bin/python benchmarks/cli_latency.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

PATCH = "demo-tags"
NEW_BASE = "SmolLM2-135M-Instruct-demo-v2"


@dataclass(frozen=True)
class Case:
    """One command, its target in seconds, the exit code it should end with and text it must (not) print."""

    label: str
    args: tuple[str, ...]
    target_s: float
    expect_rc: int
    expect_text: str
    strict: bool  # True: <= target; False: < target
    forbid_text: str | None = None


CASES = (
    Case(
        "check (no --old)",
        ("check", PATCH, "--base", NEW_BASE),
        2.0,
        0,
        "drift",
        strict=True,
        forbid_text="tokenizer is unknown",
    ),
    Case(
        "port name collision",
        ("port", PATCH, "--base", NEW_BASE),
        3.0,
        2,
        "nothing was loaded",
        strict=False,
    ),
)


def run_once(args: tuple[str, ...]) -> tuple[float, int, str]:
    """(wall seconds, exit code, stdout + stderr) of one ``python -m portllm_edge ARGS`` process."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "portllm_edge", *args], capture_output=True, text=True, env=env, check=False
    )
    return time.perf_counter() - start, proc.returncode, proc.stdout + proc.stderr


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="Runs per command (median and worst shown).")
    ns = parser.parse_args(argv)
    home = os.environ.get("PORTLLM_EDGE_HOME", "(default data folder)")
    print(f"data folder: {home}; {os.cpu_count()} CPUs; {ns.repeats} runs per command")
    print(f"{'command':<22} {'median s':>9} {'worst s':>8} {'target':>8}  {'rc':>3}  result")
    ok_all = True
    for case in CASES:
        times, rcs, outputs = [], [], []
        for _ in range(ns.repeats):
            wall, rc, output = run_once(case.args)
            times.append(wall)
            rcs.append(rc)
            outputs.append(output)
        median, worst = statistics.median(times), max(times)
        within = median <= case.target_s if case.strict else median < case.target_s
        did = all(rc == case.expect_rc for rc in rcs) and all(
            case.expect_text in o.lower() and (case.forbid_text is None or case.forbid_text not in o.lower())
            for o in outputs
        )
        ok_all &= within and did
        target = f"{'<=' if case.strict else '<'}{case.target_s:g}"
        verdict = ("within target" if within else "OVER TARGET") + ("" if did else "; UNEXPECTED OUTPUT")
        print(f"{case.label:<22} {median:>9.2f} {worst:>8.2f} {target:>8}  {rcs[-1]:>3}  {verdict}")
        last = [line for line in outputs[-1].splitlines() if line.strip()]
        print("    " + (last[-1] if last else "(no output)")[:150])
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
