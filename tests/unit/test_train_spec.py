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
