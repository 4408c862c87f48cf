"""`train` takes one typed TrainSpec (the run record's inputs), passed unchanged to train_patch."""

from __future__ import annotations

from pathlib import Path

from portllm_edge.history import get_run
from portllm_edge.patches import PatchStore
from portllm_edge.training.lora import LoraHyperparams
from portllm_edge.training.patch import TrainSpec
from portllm_edge.workflow import train


def test_train_records_its_spec_and_stores_the_patch(tiny_pairs, tmp_path: Path) -> None:
    data = tmp_path / "train.tsv"
    data.write_text(
        "sentence\tlabel\n" + "".join(f"good film {i} .\t1\nbad film {i} .\t0\n" for i in range(8))
    )
    hp = LoraHyperparams(r=4, lora_alpha=8, target_modules=("q_proj", "v_proj"), max_steps=2, batch_size=4)
    spec = TrainSpec(str(tiny_pairs["llama"].old), "sst2", data, "tiny-sst2", hp=hp, limit=12)
    out = train(spec)
    assert (out.name, out.steps) == ("tiny-sst2", 2)
    assert out.heldout_before is not None and out.heldout_before.n == 2  # a fifth of 12
    inputs = get_run(out.run_id).inputs
    assert inputs == {
        "base": str(tiny_pairs["llama"].old),
        "task": "sst2",
        "data": str(data),
        "name": "tiny-sst2",
        "hp": {**hp.__dict__, "target_modules": ["q_proj", "v_proj"]},
        "limit": 12,
        "precision": "fp32",
        "template": None,
        "verbalizers": None,
    }
    m = PatchStore().get("tiny-sst2").manifest
    assert (m.adapter.r, m.adapter.lora_alpha, m.lineage[-1].run_id) == (4, 8.0, out.run_id)


def test_the_demos_patch_step_trains_through_the_spec_and_then_reuses_it(tiny_pairs, tmp_path: Path) -> None:
    """experiment._ensure_patch (what `make demo` runs): trains once with the demo's jsonl task, then `(cached)`."""
    import contextlib

    from portllm_edge.models import resolve_base
    from portllm_edge.workflow.experiment import ExperimentSettings, ExperimentTask, _Ctx, _ensure_patch

    data = tmp_path / "train.jsonl"
    rows = [f'{{"text": "a {w} ran by", "label": 0}}\n{{"text": "a {v} drove by", "label": 1}}\n' for w, v in
            [("cat", "car"), ("dog", "bus"), ("fox", "van"), ("owl", "cab"), ("elk", "jet"), ("rat", "tram")]]  # fmt: skip
    data.write_text("".join(rows))
    task = ExperimentTask(
        "jsonl", data, data, "tiny", "tiny-tags", template="Sentence: {text}\nAnswer:",
        verbalizers={"0": "animal", "1": "vehicle"},
    )  # fmt: skip
    said: list[str] = []
    ctx = _Ctx(
        task=task,
        s=ExperimentSettings(lora_r=4, lora_alpha=8, lora_steps=2, batch_size=4, max_length=24),
        say=said.append,
        bar=lambda label: contextlib.nullcontext(lambda *a: None),
        fresh=False,
    )
    base = resolve_base(str(tiny_pairs["llama"].old))
    _ensure_patch(ctx, "tiny-tags", base, "training")
    m = PatchStore().get("tiny-tags").manifest
    assert (m.task, m.adapter.r, m.adapter.lora_alpha) == ("jsonl", 4, 8.0)
    run = get_run(m.lineage[-1].run_id)
    assert run.inputs["template"] == "Sentence: {text}\nAnswer:" and run.inputs["hp"]["max_steps"] == 2
    said.clear()
    _ensure_patch(ctx, "tiny-tags", base, "training")
    assert said == ["    (cached)"]
