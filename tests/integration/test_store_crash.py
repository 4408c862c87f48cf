"""Crash safety of the patch store: SIGKILL writers at seeded random moments, then `patch verify --all`.

Issue 6 §2. Every trial kills a real ``portllm-edge`` subprocess (no cleanup
handlers run), then checks, through the CLI's ``patch verify --all``:

* every entry is complete and checksum-valid, or absent;
* no ``.tmp-*`` leftover shows up as an entry;
* after the next write's recovery (:meth:`PatchStore.recover`), no entry that
  was complete before the trial is lost (an interrupted ``--force`` replace
  restores the old copy).

``PORTLLM_EDGE_TEST_WRITE_DELAY`` widens the write window (it sleeps between
the files of a store write) so that most kills land mid-write; the rest are
drawn uniformly from process start. A final two-writer test shows the lock:
a second writer waits, a third with a short timeout fails clearly, and no two
writers ever build entries at the same time.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from crash_harness import PYTHON, KillOutcome, cli, kill_at_random, listing_changes, tmp_dir_appears

from portllm_edge import paths
from portllm_edge.patches import PatchStore
from portllm_edge.patches.store import ADAPTER_SUBDIR, sha256_file

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")

IMPORT_TRIALS = 30
OTHER_TRIALS = 5  # each of remove / add_lineage / export
WRITE_DELAY_S = "0.03"


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            paths.ENV_HOME: str(home),
            "HF_HUB_OFFLINE": "1",
            "PORTLLM_EDGE_TEST_WRITE_DELAY": WRITE_DELAY_S,
            "PORTLLM_EDGE_LOCK_TIMEOUT": "20",
        }
    )
    env.update(extra)
    return env


def _verify_cli(home: Path, capsys) -> str:
    """Run `portllm-edge patch verify --all` in-process; assert exit 0; return stdout."""
    from portllm_edge.cli import main

    capsys.readouterr()
    code = main(["--home", str(home), "patch", "verify", "--all"])
    out = capsys.readouterr()
    paths.set_home(None)
    assert code == 0, out.err
    assert "Traceback" not in out.err
    return out.out


def _check_consistent(store: PatchStore, src_digests: dict[str, str], allowed: set[str]) -> set[str]:
    results = store.verify()
    entries = {r.name: r for r in results if r.kind == "entry"}
    for r in entries.values():
        assert r.ok, r.problems
    for r in results:
        if r.kind == "leftover":
            assert r.name.startswith(".tmp-")
    assert set(entries) <= allowed, set(entries) - allowed
    assert not any(n.startswith(".") for n in entries)
    for name in entries:
        files = store.get(name).manifest.files
        assert files == src_digests, f"{name} is not a complete copy"
    return set(entries)


def _kill_writer(cmd: list[str], seed: int, home: Path, root: Path, *, write_window_s: float) -> KillOutcome:
    rng = random.Random(seed * 7919)
    if rng.random() < 0.3:  # anywhere from interpreter start to the end of the write
        return kill_at_random(cmd, seed, max_delay_s=0.9, env=_env(home))
    return kill_at_random(
        cmd, seed, max_delay_s=write_window_s, wait_for=listing_changes(root), env=_env(home)
    )


@pytest.fixture
def crash_home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    return home


def test_import_survives_sigkill(crash_home: Path, tiny_adapters, capsys) -> None:
    src = tiny_adapters["llama"]
    store = PatchStore(crash_home / "patches")
    store.import_dir(src, name="keep", task="never-lost")
    digests = store.get("keep").manifest.files
    names = ["keep", "p0", "p1", "p2"]
    killed = mid_write = restored = absent = 0
    for seed in range(IMPORT_TRIALS):
        before = set(store.names())
        name = names[seed % len(names)]
        cmd = cli("patch", "import", src, "--name", name, "--task", f"t{seed}")
        if name in before:
            cmd.append("--force")
        outcome = _kill_writer(cmd, seed, crash_home, store.root, write_window_s=0.2)
        if outcome.killed:
            killed += 1
            mid_write += bool(outcome.marker_seen)
        else:
            assert outcome.returncode == 0, outcome.stderr
        _verify_cli(crash_home, capsys)
        after = _check_consistent(store, digests, before | {name})
        if not outcome.killed:
            assert name in after
        absent += name not in after
        actions = store.recover()  # what the next write does first, under the lock
        restored += any(a.startswith("restored") for a in actions)
        assert before <= set(store.names()), f"trial {seed} lost {before - set(store.names())}"
        assert not [p for p in store.root.iterdir() if p.name.startswith(".tmp-")]
        _check_consistent(store, digests, before | {name})
    assert store.get("keep").manifest.files == digests
    print(
        f"\nimport trials={IMPORT_TRIALS} killed={killed} mid-write={mid_write} "
        f"entry-absent-after-kill={absent} restored-old-copy={restored} inconsistencies=0"
    )
    # The harness must actually interrupt writes, or it proves nothing.
    assert killed >= IMPORT_TRIALS // 2, f"only {killed} of {IMPORT_TRIALS} trials were killed"
    assert mid_write >= IMPORT_TRIALS // 3, f"only {mid_write} kills landed after the write began"


def test_remove_lineage_export_survive_sigkill(
    crash_home: Path, tiny_adapters, tmp_path: Path, capsys
) -> None:
    src = tiny_adapters["llama"]
    store = PatchStore(crash_home / "patches")
    digests = {}
    for i in range(OTHER_TRIALS):
        digests = store.import_dir(src, name=f"r{i}").files
    store.import_dir(src, name="lin")
    killed = 0

    for seed in range(OTHER_TRIALS):  # remove: present and complete, or absent
        before = set(store.names())
        out = _kill_writer(
            cli("patch", "remove", f"r{seed}", "--yes"),
            100 + seed,
            crash_home,
            store.root,
            write_window_s=0.05,
        )
        killed += out.killed
        _verify_cli(crash_home, capsys)
        after = _check_consistent(store, digests, before)
        assert before - after <= {f"r{seed}"}
        store.recover()

    add = (
        "from portllm_edge.patches import PatchStore, LineageEntry;"
        "PatchStore().add_lineage('lin', LineageEntry(kind='port', base_id='v2', note='crash test'))"
    )
    for seed in range(OTHER_TRIALS):  # add_lineage: the old manifest or the new one, never a torn one
        n_before = len(store.get("lin").manifest.lineage)
        out = kill_at_random([PYTHON, "-c", add], 200 + seed, max_delay_s=0.6, env=_env(crash_home))
        killed += out.killed
        _verify_cli(crash_home, capsys)
        _check_consistent(store, digests, set(store.names()))
        n_after = len(store.get("lin").manifest.lineage)
        assert n_after in (n_before, n_before + 1)
        if not out.killed:
            assert out.returncode == 0, out.stderr and n_after == n_before + 1
        store.recover()

    exports = tmp_path / "exports"
    exports.mkdir()
    for seed in range(OTHER_TRIALS):  # export: the destination is complete or absent
        dest = exports / f"e{seed}"
        out = _kill_writer(
            cli("patch", "export", "lin", dest), 300 + seed, crash_home, exports, write_window_s=0.15
        )
        killed += out.killed
        if dest.exists():
            files = {p.name: sha256_file(p) for p in dest.iterdir()}
            assert set(files) == {*digests, "manifest.json"}
            assert {k: v for k, v in files.items() if k != "manifest.json"} == digests
            store.import_dir(dest, name=f"back{seed}")  # a complete export re-imports
        for p in exports.iterdir():  # only complete exports or .tmp- leftovers
            assert p.name.startswith(".tmp-") or p.name.startswith("e")
    _verify_cli(crash_home, capsys)
    assert killed >= OTHER_TRIALS  # some of the 15 trials were really interrupted


def test_second_writer_waits_third_fails_never_interleaves(crash_home: Path, tiny_adapters) -> None:
    src = tiny_adapters["llama"]
    root = crash_home / "patches"
    root.mkdir()
    building_max = 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal building_max
        while not stop.is_set():
            with_suppress = []
            try:
                with_suppress = [
                    p.name
                    for p in os.scandir(root)
                    if p.name.startswith(".tmp-") and not p.name.startswith((".tmp-old-", ".tmp-del-"))
                ]
            except FileNotFoundError:
                pass
            building_max = max(building_max, len(with_suppress))
            time.sleep(0.001)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    slow = _env(crash_home, PORTLLM_EDGE_TEST_WRITE_DELAY="0.4")
    a = subprocess.Popen(
        cli("patch", "import", src, "--name", "a"), env=slow, stderr=subprocess.PIPE, text=True
    )
    seen = tmp_dir_appears(root)
    deadline = time.monotonic() + 30
    while not seen() and time.monotonic() < deadline:
        time.sleep(0.002)
    assert seen(), "writer A never started writing"
    b = subprocess.Popen(
        cli("patch", "import", src, "--name", "b"), env=slow, stderr=subprocess.PIPE, text=True
    )
    c = subprocess.run(
        cli("patch", "import", src, "--name", "c"),
        env=_env(crash_home, PORTLLM_EDGE_LOCK_TIMEOUT="0.3"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    _, a_err = a.communicate(timeout=60)
    _, b_err = b.communicate(timeout=60)
    stop.set()
    watcher.join()
    assert a.returncode == 0, a_err
    assert b.returncode == 0, b_err  # waited for the lock, then wrote
    assert c.returncode == 2
    assert "busy" in c.stderr and "waited 0.3 s" in c.stderr and "Traceback" not in c.stderr
    assert c.stderr.count("\n") == 1
    assert building_max == 1, "two writers built entries at the same time"
    store = PatchStore(root)
    assert store.names() == ["a", "b"]
    assert all(r.ok for r in store.verify())
    # B started after A finished: its files are newer than A's manifest.
    assert (root / "b" / ADAPTER_SUBDIR).stat().st_mtime >= (root / "a" / "manifest.json").stat().st_mtime
