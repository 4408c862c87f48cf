"""Four families, real version-change shapes: compatible ports succeed and change outputs; incompatible ones fail early.

Pairs (tests/factories.py): llama (rope-scaling change, Llama 3 -> 3.1), mistral (vocabulary growth
260 -> 268, v0.2 -> v0.3), gemma2 (tied embeddings + soft-capping), qwen2 (same shapes, Qwen2 -> 2.5).
The patch is attached with plain ``peft.PeftModel.from_pretrained`` in fp32.
"""

from __future__ import annotations

import json
import shutil

import pytest

from portllm_edge.porting.preflight import prepare_adapter, run_preflight

FAMILIES = ("llama", "mistral", "gemma2", "qwen2")


@pytest.mark.parametrize("family", FAMILIES)
def test_compatible_port_succeeds_and_changes_outputs(family, tiny_pairs, tiny_adapters, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    pair = tiny_pairs[family]
    report = run_preflight(tiny_adapters[family], pair.new, old_base_dir=pair.old)
    assert report.ok, [c.reason for c in report.failures]
    expected_warn = {"mistral": {"tokenizer"}}.get(family, set())
    assert {c.name for c in report.warnings} == expected_warn
    adapter = prepare_adapter(tiny_adapters[family], pair.new, tmp_path, report=report)
    ids = torch.randint(4, 260, (2, 10), generator=torch.Generator().manual_seed(1))
    base = AutoModelForCausalLM.from_pretrained(pair.new, dtype=torch.float32).eval()
    with torch.no_grad():
        before = base(ids).logits
        after = PeftModel.from_pretrained(base, adapter).eval()(ids).logits
    assert torch.isfinite(after).all()
    assert float((after - before).abs().max() / before.abs().max()) > 0.01
    if family == "gemma2":  # soft-capping still bounds the ported logits
        assert float(after.abs().max()) <= 30.0 + 1e-4


def test_llama_version_change_is_reported(tiny_pairs, tiny_adapters):
    pair = tiny_pairs["llama"]
    arch = run_preflight(tiny_adapters["llama"], pair.new, old_base_dir=pair.old).get("architecture")
    change = arch.details["config_changes"]["rope_parameters"]
    assert change["old"]["rope_type"] == "default" and change["new"]["rope_type"] == "llama3"


def test_llama_patch_on_qwen2_fails_on_architecture(tiny_pairs, tiny_adapters):
    rep = run_preflight(tiny_adapters["llama"], tiny_pairs["qwen2"].new)
    assert [c.name for c in rep.failures] == ["architecture"]


def test_patch_with_absent_target_modules_fails(tiny_pairs, tmp_path):
    import factories

    ad = factories.build_lora_adapter(
        tiny_pairs["qwen2"].old, tmp_path / "mlp", target_modules=("gate_proj", "up_proj")
    )
    base = tmp_path / "no-mlp-names"
    shutil.copytree(tiny_pairs["qwen2"].new, base)
    from safetensors.torch import load_file, save_file

    st = load_file(base / "model.safetensors")
    save_file(
        {k.replace("gate_proj", "w1").replace("up_proj", "w3"): v for k, v in st.items()},
        base / "model.safetensors",
        metadata={"format": "pt"},
    )
    rep = run_preflight(ad, base)
    tm = rep.get("target_modules")
    assert tm.status == "fail" and tm.details["missing_count"] == 4
    assert "gate_proj" in tm.reason or "up_proj" in tm.reason


def test_hidden_size_mismatch_fails(tiny_pairs, tiny_adapters, tmp_path):
    import factories
    import torch
    from transformers import AutoModelForCausalLM

    cfg = factories._config("gemma2", 260, "new")
    cfg.hidden_size, cfg.intermediate_size = 32, 64
    torch.manual_seed(0)
    out = tmp_path / "gemma2-small"
    AutoModelForCausalLM.from_config(cfg).save_pretrained(out)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_pairs["gemma2"].new / f, out / f)
    rep = run_preflight(tiny_adapters["gemma2"], out)
    assert {"hidden_size", "target_modules"} <= {c.name for c in rep.failures}
    assert "`hidden_size` is 32" in rep.get("hidden_size").reason


def test_vocab_shrink_fails(tiny_pairs, tmp_path):
    import factories

    pair = tiny_pairs["mistral"]
    ad = factories.build_lora_adapter(pair.new, tmp_path / "v03", modules_to_save=["lm_head"])
    rep = run_preflight(ad, pair.old, old_base_dir=pair.new)
    assert [c.name for c in rep.failures] == ["modules_to_save"]
    assert "shrink" in rep.get("modules_to_save").reason


def test_cli_check_json_and_exit_codes(tiny_pairs, tiny_adapters, capsys):
    from portllm_edge.cli import main

    code = main(["check", str(tiny_adapters["mistral"]), "--base", str(tiny_pairs["mistral"].new), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["ok"]
    # without --old, the old base named in the adapter's config is found, so the drift table is there
    assert data["old_base"] == str(tiny_pairs["mistral"].old)
    assert len(data["drift"]["modules"]) == 4  # q_proj and v_proj of 2 layers
    assert {c["name"]: c["status"] for c in data["checks"]}["tokenizer"] == "warn"  # tiny models ship none
    code = main(["check", str(tiny_adapters["gemma2"]), "--base", str(tiny_pairs["qwen2"].new)])
    captured = capsys.readouterr()
    assert code == 2 and "FAIL  architecture" in captured.out and "result: NOT compatible" in captured.out
    assert captured.err.startswith("error: preflight failed: `architecture`") and "Fix:" in captured.err
