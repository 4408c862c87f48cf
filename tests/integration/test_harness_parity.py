"""Parity with lm-evaluation-harness: the same files, prompts, log-likelihoods and verdicts.

The harness's ``HFLM`` runs its own built-in task definitions (prompts read from the
YAML files of the installed ``lm_eval``), pointed at our local files
(tests/harness_tasks.py); our ``evaluate`` runs our built-in tasks on the same first
N rows of the same files with the same model folder. Per example, the choice
log-likelihoods must agree within ``LL_TOL`` nats, and the ``acc`` prediction and the
``acc_norm`` verdict must be identical; so must the aggregate ``acc``/``acc_norm``.
"""

from __future__ import annotations

import pytest

pytest.importorskip("lm_eval", reason="lm_eval (the dev extra) is not installed: pip install -e '.[dev]'")

import harness_tasks

LL_TOL = 2e-3
"""Nats. Both sides run fp32 on CPU; batch composition and padding change the last bits of
the matmuls (measured differences are below 1e-4 on the tiny models and SmolLM2)."""


def _assert_parity(ours: harness_tasks.Side, theirs: harness_tasks.Side, task: str) -> None:
    assert len(ours.lls) == len(theirs.lls) > 0
    assert ours.gold == theirs.gold, f"{task}: gold labels differ"
    for i, (a, b) in enumerate(zip(ours.lls, theirs.lls, strict=True)):
        assert a == pytest.approx(b, abs=LL_TOL), f"{task} row {i}: log-likelihoods {a} vs harness {b}"
    diff = [i for i, (a, b) in enumerate(zip(ours.pred, theirs.pred, strict=True)) if a != b]
    assert not diff, f"{task}: acc predictions differ on rows {diff}"
    diff = [i for i, (a, b) in enumerate(zip(ours.correct_norm, theirs.correct_norm, strict=True)) if a != b]
    assert not diff, f"{task}: acc_norm verdicts differ on rows {diff}"
    assert ours.acc == pytest.approx(theirs.acc, abs=1e-12)
    assert ours.acc_norm == pytest.approx(theirs.acc_norm, abs=1e-12)


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path_factory, monkeypatch):
    """The harness reads local files through ``datasets``: keep its cache out of the user's home."""
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path_factory.getbasetemp() / "hf-datasets"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


@pytest.mark.parametrize("task", harness_tasks.TASKS)
def test_tiny_model_matches_the_harness(task, tiny_pairs, shared_data):
    model_dir = tiny_pairs["llama"].old
    ours = harness_tasks.run_ours(model_dir, task, shared_data, limit=24)
    theirs = harness_tasks.run_harness(model_dir, task, shared_data, limit=24)
    _assert_parity(ours, theirs, task)


@pytest.mark.slow
@pytest.mark.parametrize("task", harness_tasks.TASKS)
def test_smollm2_matches_the_harness(task, smollm2_gguf, shared_data, tmp_path_factory):
    from portllm_edge import paths
    from portllm_edge.models.gguf import import_gguf

    paths.set_home(tmp_path_factory.getbasetemp() / "smol-parity-home")
    try:
        model_dir = import_gguf(smollm2_gguf, reuse=True)
    finally:
        paths.set_home(None)
    ours = harness_tasks.run_ours(model_dir, task, shared_data, limit=64)
    theirs = harness_tasks.run_harness(model_dir, task, shared_data, limit=64)
    _assert_parity(ours, theirs, task)
