"""Kill a command with SIGKILL at a seeded random moment: the building block of the crash-safety tests.

Why: "atomic" is only proven by interrupting writers where it hurts. A test
starts a writer (``portllm-edge patch import``, ``port --save-adapter``, a
history write, ...) as a subprocess, kills it with SIGKILL (no cleanup handlers
run, like a power cut or the OOM killer) at a random but reproducible moment,
then checks the store with ``patch verify --all``.

Two ways to pick the moment (both seeded):

* from the start: a delay uniform in ``[min_delay_s, max_delay_s]`` after spawn;
* after a marker: pass ``wait_for`` (e.g. "a ``.tmp-*`` folder exists in the
  store", meaning the write has begun), then a delay uniform in
  ``[min_delay_s, max_delay_s]`` after the marker is first seen. This lands
  kills inside the short write window instead of in interpreter start-up.

POSIX only (SIGKILL).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

PYTHON = sys.executable


def cli(*args: str | os.PathLike[str]) -> list[str]:
    """The argv that runs ``portllm-edge ARGS...`` with this interpreter."""
    return [PYTHON, "-m", "portllm_edge", *map(str, args)]


@dataclass(frozen=True)
class KillOutcome:
    """What happened to one command.

    Attributes:
        seed: The seed that chose the moment.
        delay_s: Seconds waited after spawn (or after the marker) before the kill.
        marker_seen: ``wait_for`` returned true before the process ended (``None`` without a marker).
        killed: The process was still running and got SIGKILL (``False``: it finished first).
        returncode: ``-9`` when killed, else the command's own exit code.
        elapsed_s: Seconds from spawn until the process was reaped.
        stderr: The command's stderr (for messages when it finished by itself).
    """

    seed: int
    delay_s: float
    marker_seen: bool | None
    killed: bool
    returncode: int
    elapsed_s: float
    stderr: str


def kill_at_random(
    cmd: Sequence[str],
    seed: int,
    *,
    max_delay_s: float,
    min_delay_s: float = 0.0,
    wait_for: Callable[[], bool] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    poll_s: float = 0.002,
    timeout_s: float = 60.0,
) -> KillOutcome:
    """Run ``cmd`` and SIGKILL it at a moment drawn from ``random.Random(seed)``.

    Args:
        cmd: The command (see :func:`cli`).
        seed: Seeds the delay; same seed, same delay.
        max_delay_s: Upper bound of the delay (seconds).
        min_delay_s: Lower bound of the delay (seconds).
        wait_for: Optional marker predicate polled every ``poll_s`` seconds; the
            delay starts when it first returns true. If the process ends first,
            nothing is killed.
        env: Environment for the command (default: this process's).
        cwd: Working directory.
        poll_s: Marker polling interval (seconds).
        timeout_s: Hard limit; the process is killed and ``TimeoutError`` raised after it.

    Returns:
        A :class:`KillOutcome`.
    """
    delay = random.Random(seed).uniform(min_delay_s, max_delay_s)
    start = time.monotonic()
    proc = subprocess.Popen(
        list(cmd),
        env=dict(env) if env is not None else None,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    marker_seen: bool | None = None
    try:
        if wait_for is not None:
            marker_seen = False
            while proc.poll() is None:
                if wait_for():
                    marker_seen = True
                    break
                if time.monotonic() - start > timeout_s:
                    raise TimeoutError(f"marker never seen within {timeout_s} s: {cmd}")
                time.sleep(poll_s)
        killed = False
        if proc.poll() is None:
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                killed = True
        _, err = proc.communicate(timeout=timeout_s)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return KillOutcome(seed, delay, marker_seen, killed, proc.returncode, time.monotonic() - start, err or "")


def tmp_dir_appears(root: Path, prefix: str = ".tmp-") -> Callable[[], bool]:
    """A marker: true once any entry named ``prefix*`` exists directly in ``root`` (a write has begun)."""

    def seen() -> bool:
        try:
            return any(p.name.startswith(prefix) for p in os.scandir(root))
        except FileNotFoundError:
            return False

    return seen


def listing_changes(root: Path, ignore: tuple[str, ...] = (".lock",)) -> Callable[[], bool]:
    """A marker: true once the set of names directly in ``root`` differs from now (a write has begun).

    Implementation-agnostic: it fires for a ``.tmp-*`` build folder, an entry
    created in place, or an entry deleted for a replace, so a non-atomic writer
    cannot dodge the kills.
    """

    def names() -> set[str]:
        try:
            return {e.name for e in os.scandir(root) if e.name not in ignore}
        except FileNotFoundError:
            return set()

    initial = names()
    return lambda: names() != initial
