"""Offline guarantee: the main commands run with every network connection refused.

One subprocess installs a socket guard (any AF_INET/AF_INET6 connect or DNS lookup raises and
is logged), *unsets* HF_HUB_OFFLINE so that nothing relies on it, and runs import, check, port,
eval, probe, plan and report through the CLI. The test asserts each exit code and that the
guard saw zero connection attempts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

GUARD = textwrap.dedent(
    """
    import json, socket, sys
    attempts = []
    _connect = socket.socket.connect
    def guarded_connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            attempts.append(repr(address))
            raise OSError("network disabled by the offline test")
        return _connect(self, address)
    def guarded_getaddrinfo(host, *a, **k):
        attempts.append("getaddrinfo " + str(host))
        raise socket.gaierror("network disabled by the offline test")
    socket.socket.connect = guarded_connect
    socket.getaddrinfo = guarded_getaddrinfo
    socket.create_connection = lambda *a, **k: guarded_connect(socket.socket(), a[0])

    from portllm_edge.cli import main
    codes = {}
    for name, argv in json.loads(sys.argv[1]):
        codes[name] = main(argv)
    print("OFFLINE-RESULT " + json.dumps({"codes": codes, "attempts": attempts}))
    """
)


def test_main_commands_never_touch_the_network(
    tiny_pairs, tiny_adapters, shared_data, tmp_path, portllm_home
):
    pair = tiny_pairs["llama"]
    report_dir = tmp_path / "report"
    commands = [
        ["patch-import", ["patch", "import", str(tiny_adapters["llama"]), "--name", "p", "--task", "sst2"]],
        ["check", ["check", "p", "--base", str(pair.new), "--old", str(pair.old)]],
        ["port", ["port", "p", "--base", str(pair.new), "--precision", "nf4"]],
        [
            "eval",
            [
                "eval",
                "--task",
                "sst2",
                "--data",
                str(shared_data / "sst2" / "dev.tsv"),
                "--limit",
                "4",
                "--base",
                str(pair.new),
                "--patch",
                "p",
                "--precision",
                "fp32",
            ],
        ],
        ["probe", ["probe"]],
        ["plan", ["plan", str(pair.new)]],
        ["report", ["report", "--out", str(report_dir)]],
        ["hub-id-offline", ["port", "p", "--base", "some-org/not-cached-model"]],
    ]
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env["PORTLLM_EDGE_HOME"] = str(portllm_home)
    env["HF_HOME"] = str(tmp_path / "hf-home")  # an empty cache: nothing to find locally
    proc = subprocess.run(
        [sys.executable, "-c", GUARD, json.dumps(commands)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("OFFLINE-RESULT ")]
    assert lines, proc.stderr[-2000:]
    result = json.loads(lines[-1].split(" ", 1)[1])
    assert result["attempts"] == []
    codes = result["codes"]
    assert {k: v for k, v in codes.items() if k != "hub-id-offline"} == {
        "patch-import": 0,
        "check": 0,
        "port": 0,
        "eval": 0,
        "probe": 0,
        "plan": 0,
        "report": 0,
    }
    # a hub id that is not cached fails cleanly (exit 2) instead of downloading
    assert codes["hub-id-offline"] == 2
    assert (report_dir / "report.md").is_file()
