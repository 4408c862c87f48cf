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
def test_smollm2_matches_the_harness(task, smollm2_model, shared_data):
    model_dir = smollm2_model  # imported from the GGUF once per session
    ours = harness_tasks.run_ours(model_dir, task, shared_data, limit=64)
    theirs = harness_tasks.run_harness(model_dir, task, shared_data, limit=64)
    _assert_parity(ours, theirs, task)


def _harness_gsm8k(shared_data):
    """The harness's gsm8k task (its YAML) reading our local train/test files."""
    from pathlib import Path

    import lm_eval
    import yaml
    from lm_eval.tasks import get_task_dict

    raw = yaml.safe_load((Path(lm_eval.__file__).parent / "tasks/gsm8k/gsm8k.yaml").read_text())
    cfg = {k: v for k, v in raw.items() if k not in ("tag", "dataset_name", "dataset_path")}
    files = {split: str(shared_data / "gsm8k" / f"{split}.jsonl") for split in ("train", "test")}
    cfg.update(task="local_gsm8k", dataset_path="json", dataset_kwargs={"data_files": files})
    return raw, get_task_dict([cfg], harness_tasks.task_manager())["local_gsm8k"]


def test_gsm8k_five_shot_prompts_are_the_harness_prompts(shared_data):
    from portllm_edge.evaluation.tasks import load_task

    raw, task = _harness_gsm8k(shared_data)
    task.set_fewshot_seed(1234)  # simple_evaluate's default fewshot_random_seed
    task.build_all_requests(limit=12, rank=0, world_size=1)
    theirs = [i.arguments[0] for i in sorted(task.instances, key=lambda i: i.doc_id)]
    data = load_task("gsm8k", shared_data / "gsm8k")
    assert raw["num_fewshot"] == data.num_fewshot == 5
    ours = [e.context for e in data.examples[:12]]
    assert ours == theirs
    assert ours[0].count("Question:") == 6 and ours[0].endswith(data.examples[0].prompt)
    # a seeded subsample keeps each example's own shots (drawn in file order before subsampling)
    sub = load_task("gsm8k", shared_data / "gsm8k", limit=5, seed=3)
    by_id = {e.id: e.context for e in data.examples}
    assert all(e.context == by_id[e.id] for e in sub.examples)


def test_gsm8k_answer_filters_are_the_harness_filters(shared_data):
    import numpy as np
    from lm_eval.api.metrics import exact_match_hf_evaluate
    from lm_eval.filters.extraction import RegexFilter

    from portllm_edge.evaluation.metrics import (
        gsm8k_flexible_extract,
        gsm8k_strict_extract,
        harness_exact_match,
    )

    raw, _ = _harness_gsm8k(shared_data)
    filters = {f["name"]: f["filter"][0] for f in raw["filter_list"]}
    metric = {
        k: v
        for k, v in raw["metric_list"][0].items()
        if k not in ("metric", "aggregation", "higher_is_better")
    }
    outputs = [
        " She sells 16 - 3 - 4 = 9 eggs, 9 * 2 = $18.\n#### 18",
        " The answer is $1,234.",
        " It is 7.5 hours, so -3 left.",
        " #### 18.00",
        " I don't know.",
        " 12, 15, and 18",
    ]
    gold = "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\n#### 18"
    for name, ours in (("strict-match", gsm8k_strict_extract), ("flexible-extract", gsm8k_flexible_extract)):
        spec = filters[name]
        rf = RegexFilter(regex_pattern=spec["regex_pattern"], group_select=spec.get("group_select", 0))
        extracted = [r[0] for r in rf.apply([[o] for o in outputs], [{}] * len(outputs))]
        assert [ours(o) for o in outputs] == extracted, name
        for e in extracted:
            want = bool(np.isclose(exact_match_hf_evaluate([e], [gold], **metric)["exact_match"], 1.0))
            assert harness_exact_match(e, gold) == want, (name, e)
