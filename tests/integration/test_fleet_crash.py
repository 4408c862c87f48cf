"""kill -9 a fleet port part-way: every finished port is stored and complete, and a rerun continues.

The fleet (``portllm-edge port --all``) runs as a subprocess and gets SIGKILL right after its
first ported patch lands in the store (no cleanup handlers run, like a power cut). The store
must verify clean; the rerun must report the finished ports as already ported, leave them
untouched, and port only the rest.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from crash_harness import cli, kill_at_random
from factories import build_lora_adapter

from portllm_edge import paths
from portllm_edge.history import list_runs
from portllm_edge.patches import PatchStore

PATCHES = ("p1", "p2", "p3", "p4")


@pytest.fixture(scope="module")
def four_adapters(tiny_pairs, tmp_path_factory):
    root = tmp_path_factory.mktemp("fleet-crash")
    return {
        name: build_lora_adapter(tiny_pairs["llama"].old, root / name, seed=i)
        for i, name in enumerate(PATCHES)
    }


def _first_port_stored(root):
    def seen() -> bool:
        try:
            return any("@" in e.name and not e.name.startswith(".") for e in os.scandir(root))
        except FileNotFoundError:
            return False

    return seen


def test_fleet_resumes_after_sigkill(tiny_pairs, four_adapters, portllm_home):
    pair = tiny_pairs["llama"]
    store = PatchStore()
    for name, adapter in four_adapters.items():
        store.import_dir(adapter, name=name, source_base_id=str(pair.old))
    env = dict(os.environ)
    # each store write sleeps 3 x 0.05 s, so the kill lands while later patches are still to do
    env.update(
        {paths.ENV_HOME: str(portllm_home), "HF_HUB_OFFLINE": "1", "PORTLLM_EDGE_TEST_WRITE_DELAY": "0.05"}
    )
    cmd = cli("port", "--all", "--from", pair.old, "--base", pair.new, "--precision", "fp32")

    outcome = kill_at_random(
        cmd, seed=0, max_delay_s=0.05, wait_for=_first_port_stored(store.root), env=env, timeout_s=180
    )
    assert outcome.killed and outcome.returncode == -9, outcome.stderr
    assert all(r.ok for r in store.verify() if r.kind == "entry"), [r.problems for r in store.verify()]
    done = {n for n in store.names() if "@" in n}
    assert 1 <= len(done) < len(PATCHES), done
    before = {n: store.get(n).manifest for n in done}  # every finished port is complete (checksums verified)
    assert [r.status for r in list_runs("fleet")] == ["running"]  # the killed run never finished

    rerun = subprocess.run([*cmd, "--json"], env=env, capture_output=True, text=True, timeout=180)
    assert rerun.returncode == 0, rerun.stderr
    res = json.loads(rerun.stdout)
    results = {i["patch"]: i["result"] for i in res["items"]}
    assert {p for p, r in results.items() if r == "already ported"} == {n.split("@")[0] for n in done}
    assert {p for p, r in results.items() if r == "ported"} == set(PATCHES) - {n.split("@")[0] for n in done}
    assert set(store.names()) == {*PATCHES, *(f"{p}@llama-new" for p in PATCHES)}
    assert all(r.ok for r in store.verify())
    assert {n: store.get(n).manifest for n in done} == before  # finished ports untouched by the rerun
    assert [r.status for r in list_runs("fleet")] == ["ok", "running"]
