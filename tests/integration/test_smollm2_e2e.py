"""The main job on real input (issue: train on SmolLM2 v1, port onto v2 in NF4, compare, measure).

SmolLM2-135M-Instruct from its GGUF as v1; v2 by continued pretraining on the Gutenberg prose in
../shared/data/gutenberg; a patch trained on v1 with a CPU-sized sample of SST-2 train.tsv and
evaluated on dev.tsv; ported onto v2 loaded in NF4 on this CPU. Sized for CI (a few update steps,
short sequences); benchmarks/port_vs_finetune.py runs the same at benchmark size.
"""

from __future__ import annotations

import pytest

from portllm_edge.models.gguf import import_gguf
from portllm_edge.patches import PatchStore
from portllm_edge.workflow import ExperimentSettings, ExperimentTask, experiment

# Minutes on 2 quiet cores; a busy machine can be several times slower (CPU 4-bit kernels), so allow 40 min.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]


@pytest.fixture(scope="module")
def _smol_home(tmp_path_factory, smollm2_model):
    """This module's home; its model store starts with the session's SmolLM2 import (hard links),
    so ``import_gguf(smollm2_gguf, reuse=True)`` returns it."""
    import factories

    home = tmp_path_factory.mktemp("smol-home")
    factories.link_model(smollm2_model, home / "models")
    return home


@pytest.fixture(autouse=True)
def portllm_home(_smol_home, monkeypatch):
    """One home for this module: every test sees the experiment's v2, patches and runs."""
    from portllm_edge import paths

    monkeypatch.setenv(paths.ENV_HOME, str(_smol_home))
    paths.set_home(None)
    yield _smol_home
    paths.set_home(None)


CI_SETTINGS = ExperimentSettings(
    update_steps=3,
    update_seq_len=64,
    update_batch=2,
    update_lr=5e-5,
    lora_steps=24,
    lora_lr=1e-3,
    batch_size=8,
    max_length=96,
    train_limit=192,
    eval_limit=64,
    precision="nf4",
    measure_steps=2,
)


@pytest.fixture(scope="module")
def sst2_experiment(smollm2_gguf, shared_data, _smol_home):
    """The experiment (v1 -> v2, patch, baseline, table, measurements, port), run once for this module's tests."""
    from portllm_edge import paths

    paths.set_home(_smol_home)
    try:
        v1 = import_gguf(smollm2_gguf, reuse=True)
        task = ExperimentTask(
            task="sst2",
            train_data=shared_data / "sst2" / "train.tsv",
            eval_data=shared_data / "sst2" / "dev.tsv",
            title="SST-2",
            patch_name="sst2-smol",
        )
        res = experiment(
            v1, [shared_data / "gutenberg" / "pg1342.txt"], task, settings=CI_SETTINGS, say=lambda _line: None
        )
    finally:
        paths.set_home(None)
    return v1, res


def test_sst2_patch_ports_from_v1_to_v2_in_nf4(sst2_experiment):
    _v1, res = sst2_experiment
    rows = {r.config: r for r in res.compare.rows}
    zero, old, ported, own = (
        rows[k].accuracy
        for k in ("new base zero-shot", "old base + patch", "new base + ported patch", "new base + own LoRA")
    )
    assert all(r.n == 64 for r in rows.values())
    # the patch helps on v1, and the ported patch keeps most of that gain on v2
    assert old > zero + 0.05, res.compare
    gain = res.compare.recovered_gain()
    assert gain is not None and gain > 0.5, res.compare
    assert ported > zero, res.compare
    assert 0.0 <= own <= 1.0
    # the port matched every tensor and was stored with its lineage
    port = res.port
    assert port.attach.matched_tensors == port.attach.total_tensors > 0
    lineage = [e.kind for e in PatchStore().get(port.ported_name).manifest.lineage]
    assert lineage[-1] == "port" and "train" in lineage
    # memory: porting at NF4 needs less than LoRA fine-tuning the same base, each in its own worker
    ft, pt = res.bench.config("lora_"), res.bench.config("port_")
    assert ft is not None and pt is not None and ft.metric == pt.metric == "peak_anon_plus_mapped_weights"
    assert pt.peak_median_bytes < ft.peak_median_bytes and res.bench.ratio > 1.0
    # the port of step 6 was measured in its own worker and compared with the measured fine-tune
    assert port.memory is not None and port.saving is not None
    assert port.saving.baseline_source == "measured" and port.saving.baseline_run_id == res.bench.run_id
    assert res.update.mean_linear_drift > 0


def test_drift_table_and_exact_streaming_merge_on_smollm2(sst2_experiment, tmp_path, capsys):
    """Issue 3's real input: the drift table of the SST-2 patch on the SmolLM2 update, and a streamed
    merge whose logits equal the unmerged port (fp32, ≤ 1e-4 relative)."""
    import torch

    from portllm_edge.cli import main
    from portllm_edge.models import resolve_base
    from portllm_edge.porting.attach import attach_patch, probe_logits
    from portllm_edge.porting.drift import compute_drift
    from portllm_edge.porting.load import load_base_model

    v1, res = sst2_experiment
    v2 = resolve_base(f"{v1.name}-sst2-smol-v2")
    patch_dir = PatchStore().get("sst2-smol").adapter_dir

    drift = compute_drift(patch_dir, v1, v2.path)
    assert len(drift.modules) == 30 * 4  # 30 layers x q,k,v,o
    assert all(m.base_drift > 0 and m.patch_size > 0 for m in drift.modules)
    capsys.readouterr()
    assert main(["check", "sst2-smol", "--base", str(v2.path), "--old", str(v1)]) == 0
    table = capsys.readouterr().out
    assert "model.layers.0.self_attn.q_proj" in table

    merged = tmp_path / "merged"
    assert main(["merge", "sst2-smol", "--base", str(v2.path), "--out", str(merged), "--dtype", "fp32"]) == 0
    loaded = load_base_model(str(v2.path), "fp32")
    ported = attach_patch(loaded.model, loaded.tokenizer, patch_dir)
    want = probe_logits(ported.model, loaded.tokenizer)
    got_model = load_base_model(str(merged), "fp32")
    got = probe_logits(got_model.model, got_model.tokenizer)
    rel = float((got - want).abs().max() / want.abs().max())
    assert rel <= 1e-4, rel
    assert torch.isfinite(got).all()
    assert res.port.ported_name == "sst2-smol@SmolLM2-135M-Instruct-sst2-smol-v2"


def test_chain_of_two_tiny_updates_then_forecast_on_smollm2(smollm2_gguf, shared_data, tmp_path, capsys):
    """Issue 13 on real input: `simulate-update --chain` makes v2 and v3 from SmolLM2 (one step each),
    each recorded in the lineage; `forecast` of a patch of v1 onto v3 predicts a recovered gain with an
    interval around it, says whether it extrapolates, and records it, so `check` shows it."""
    import json

    import factories  # type: ignore[import-not-found]

    from portllm_edge.cli import main
    from portllm_edge.forecast import Calibration
    from portllm_edge.history import list_runs
    from portllm_edge.training.update import read_lineage

    v1 = import_gguf(smollm2_gguf, reuse=True)
    chain = tmp_path / "chain"
    args = ["simulate-update", str(v1), "--corpus", str(shared_data / "gutenberg" / "pg1342.txt"),
            "--out", str(chain), "--chain", "1:1e-5,1:2e-5", "--seq-len", "32", "--batch-size", "2"]  # fmt: skip
    assert main(args) == 0
    assert "lineage of 3 versions" in capsys.readouterr().out
    version, lineage = read_lineage(chain / "v3")
    assert version == "v3" and [v.version for v in lineage] == ["v1", "v2", "v3"]
    assert lineage[0].path == str(v1.resolve()) and lineage[1].path == str(chain / "v2")
    updates = {
        r.inputs["version"]: r for r in list_runs("update") if r.inputs.get("out", "").startswith(str(chain))
    }
    assert sorted(updates) == ["v2", "v3"] and {r.status for r in updates.values()} == {"ok"}

    patch = factories.build_lora_adapter(v1, tmp_path / "patch", r=4, lora_alpha=4)
    fargs = [str(patch), "--base", str(chain / "v3"), "--old", str(v1)]
    assert main(["forecast", *fargs, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    fc, feats, cal = data["forecast"], data["features"], Calibration.load()
    assert fc["feature"] == cal.feature and fc["value"] == pytest.approx(feats[cal.feature])
    assert 0.0 <= fc["predicted"] <= 1.5, fc
    assert fc["low"] < fc["predicted"] < fc["high"]
    assert fc["extrapolating"] is not (cal.feature_min <= fc["value"] <= cal.feature_max)
    # two tiny steps: the base barely moved (v7 of the calibration: 1.5%)
    assert 0 < feats["base_drift"] < 5e-3, feats
    (rec,) = list_runs("forecast")
    assert rec.id == data["run_id"] and rec.status == "ok"
    assert main(["check", *fargs, "--no-drift"]) == 0
    assert f"recorded by run {rec.id}" in capsys.readouterr().out
