"""``port``'s printed lines name the job that was measured."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from portllm_edge.cli.port_cmds import print_port


@pytest.mark.parametrize(
    ("evaluation", "label"),
    [(None, "peak memory of port (nf4),"), ("eval", "peak memory of port + eval (nf4),")],
)
def test_port_peak_label_matches_what_ran(capsys, evaluation, label):
    ev = None
    if evaluation:
        ev = SimpleNamespace(task="sst2", accuracy=0.5, ci_low=0.4, ci_high=0.6, n=10)
    res = SimpleNamespace(
        preflight=SimpleNamespace(checks=[]),
        old_base_id=None,
        attach=SimpleNamespace(matched_tensors=4, total_tensors=4, max_abs_logit_change=0.1, finite=True),
        precision="nf4",
        evaluation=ev,
        phases={"load": 1.0, "attach": 0.5},
        memory=SimpleNamespace(peak_bytes=2 * 1024**3, metric="peak_anon_plus_mapped_weights"),
        saving=None,
        ported_name=None,
        merged_to=None,
        run_id=None,
    )
    print_port(res)
    text = capsys.readouterr().out
    assert label in text and "2.00 GiB" in text
    assert ("evaluate" in text) is False
