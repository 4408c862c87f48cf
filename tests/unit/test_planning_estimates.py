"""Planner: term formulas with hand-computed numbers, plan/pick verdicts, model references, the CLI."""

from __future__ import annotations

import json

import pytest

from portllm_edge.catalog import load_catalog
from portllm_edge.cli import main
from portllm_edge.errors import PlanningError
from portllm_edge.planning import (
    Budget,
    ModelArch,
    Precision,
    estimate_inference_peak,
    estimate_lora_finetune_peak,
    kv_cache_bytes,
    lora_param_count,
    memory_budget,
    pick_models,
    plan_model,
    quantized_linear_bytes,
    resolve_model_spec,
)

GiB = 1024**3


def cfg(name: str) -> dict:
    return load_catalog().find_version(name)[1].architecture.to_config()  # type: ignore[index]


def test_nf4_constants_match_qlora_bits_per_parameter():
    n = 4096 * 4096
    w, plain = quantized_linear_bytes(n, 4096, Precision.NF4, double_quant=False)
    _, dq = quantized_linear_bytes(n, 4096, Precision.NF4, double_quant=True)
    assert w == n // 2
    assert plain == 4 * (n // 64) + 64
    assert dq == n // 64 + 4 * (n // 64 // 256) + 1024 + 4 + 64
    assert plain * 8 / n == pytest.approx(0.5, abs=1e-3)  # QLoRA §3: 32/64 bits per parameter
    assert dq * 8 / n == pytest.approx(0.127, abs=2e-3)  # QLoRA §3: 8/64 + 32/(64·256)
    assert quantized_linear_bytes(n, 4096, Precision.INT8) == (n, 4 * 4096)


def test_unquantized_parts_and_tied_embeddings_counted_once():
    arch = ModelArch.from_config(cfg("Qwen2.5-0.5B"))
    b = estimate_inference_peak(arch, "nf4")
    expected = (151936 * 896 + (24 * 2 + 1) * 896 + 24 * (896 + 128 + 128)) * 2
    assert b.term("unquantized") == expected
    untied = ModelArch.from_config({**cfg("Qwen2.5-0.5B"), "tie_word_embeddings": False})
    assert estimate_inference_peak(untied, "nf4").term("unquantized") - expected == 151936 * 896 * 2


def test_bf16_weights_are_two_bytes_per_parameter():
    b = estimate_inference_peak(cfg("Mistral-7B-v0.3"), "bf16")
    assert b.term("weights") + b.term("unquantized") == 7_248_023_552 * 2
    assert b.term("quant_constants") == 0


def test_kv_cache_formula_and_sliding_window():
    mistral = ModelArch.from_config(cfg("Mistral-7B-v0.3"))
    assert kv_cache_bytes(mistral, 2048, 1, 2) == 2 * 32 * 8 * 128 * 2048 * 2
    gemma = ModelArch.from_config(cfg("Gemma-2-2B"))
    per_tok = 2 * 4 * 256 * 2
    assert kv_cache_bytes(gemma, 8192, 1, 2) == 13 * per_tok * 4096 + 13 * per_tok * 8192
    v01 = ModelArch.from_config(cfg("Mistral-7B-v0.1"))  # sliding window 4096 on every layer
    assert kv_cache_bytes(v01, 8192, 2, 2) == kv_cache_bytes(v01, 4096, 2, 2)


def test_lora_parameter_counts():
    assert lora_param_count(ModelArch.from_config(cfg("Llama-2-7B")), 16, ["q_proj", "v_proj"]) == 8_388_608
    assert (
        lora_param_count(ModelArch.from_config(cfg("Mistral-7B-v0.3")), 16, ["q_proj", "v_proj"]) == 6_815_744
    )
    with pytest.raises(PlanningError, match="qproj"):
        lora_param_count(ModelArch.from_config(cfg("Mistral-7B-v0.3")), 16, ["qproj"])


def test_lora_and_qlora_terms():
    c = cfg("Mistral-7B-v0.3")
    lora = estimate_lora_finetune_peak(c, None, 16, ["q_proj", "v_proj"], 512, 1, False)
    assert lora.mode == "lora" and lora.precision is Precision.BF16
    n = 6_815_744
    assert (lora.term("lora_params"), lora.term("lora_grads"), lora.term("optimizer")) == (
        4 * n,
        4 * n,
        8 * n,
    )
    gc = estimate_lora_finetune_peak(c, None, 16, ["q_proj", "v_proj"], 512, 1, True)
    assert gc.term("activations") < lora.term("activations") / 3
    qlora = estimate_lora_finetune_peak(c, "nf4", 16, ["q_proj", "v_proj"], 512, 1, True)
    assert qlora.mode == "qlora"
    # prepare_model_for_kbit_training: embeddings, lm_head, norms upcast to fp32 = twice the bf16 bytes
    assert qlora.term("unquantized") == 2 * estimate_inference_peak(c, "nf4").term("unquantized")
    assert qlora.total_bytes < gc.total_bytes / 2
    with pytest.raises(PlanningError, match="seq_len"):
        estimate_lora_finetune_peak(c, None, seq_len=0)


def test_cpu_device_has_runtime_and_library_terms():
    b = estimate_inference_peak(cfg("SmolLM2-135M"), "fp32", 256, device="cpu")
    assert b.term("runtime") > 0 and b.term("libraries") > 0
    assert estimate_inference_peak(cfg("SmolLM2-135M"), "fp32", 256).term("libraries") == 0


def test_plan_mistral_v03_on_12gb_nf4_fits_bf16_does_not():
    plan = plan_model("Mistral-7B-v0.3", hardware_profile="rtx-3060-12gb")
    assert plan.option("nf4").fits
    assert not plan.option("bf16").fits
    assert plan.best is not None and plan.best.quality_rank >= Precision.NF4.quality_rank
    assert plan.budget.usable_bytes == int((12288 - 300) * 1024**2 * 0.9)


def test_plan_command_shows_every_number(capsys):
    assert main(["plan", "Mistral-7B-v0.3", "--hardware", "rtx-3060-12gb"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.split()}
    assert " fits " in lines["nf4"] + " " and "does not fit" in lines["bf16"]
    for header in ("weights", "q-consts", "unquant.", "KV cache", "activ.", "runtime", "total"):
        assert header in out
    assert "Precision for a port" in out and "12.00 GiB total" in out


def test_plan_command_json_and_bad_model(capsys):
    assert main(["plan", "SmolLM2-135M", "--hardware", "t4-16gb", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["best"] == "fp16"  # T4 has no native bf16
    assert {o["precision"] for o in data["inference"]} == {p.value for p in Precision}
    assert main(["plan", "Mistral-7B-v0.4", "--hardware", "rtx-3060-12gb"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "did you mean `Mistral-7B-v0.3`?" in err


def _rank(choices, name, precision):
    for c in choices:
        if c.name == name and c.precision.value == precision:
            return c.rank
    return None


def test_pick_on_8gb_ranks_7b_nf4_above_1p5b_bf16_only_with_headroom():
    # Budget 1: 8 GB card, 10 % headroom: Mistral-7B at NF4 (4.9 GiB) fits and outranks Qwen2.5-1.5B at bf16.
    roomy = pick_models(hardware_profile="rtx-4060-8gb", headroom_fraction=0.10, include_store=False)
    r7, r15 = _rank(roomy, "Mistral-7B-v0.3", "nf4"), _rank(roomy, "Qwen2.5-1.5B", "bf16")
    assert r7 is not None and r15 is not None and r7 < r15
    top = roomy[0]
    assert top.fits and top.model.params >= 7e9 and top.precision.quality_rank <= Precision.INT8.quality_rank
    assert "Largest model that fits" in top.reason and top.port_peak_bytes > top.inference.total_bytes
    # Budget 2: same card with 40 % headroom (4.6 GiB usable): the 7B no longer fits with headroom.
    tight = pick_models(
        hardware_profile="rtx-4060-8gb", headroom_fraction=0.40, include_store=False, include_unfit=True
    )
    r7t, r15t = _rank(tight, "Mistral-7B-v0.3", "nf4"), _rank(tight, "Qwen2.5-1.5B", "bf16")
    assert r15t is not None and r7t is not None and r15t < r7t
    mistral = next(c for c in tight if c.name == "Mistral-7B-v0.3")
    assert not mistral.fits and "more than the" in mistral.reason
    assert all(c.fits for c in tight[:r15t])


def test_pick_with_a_custom_budget_and_family():
    budget = Budget(
        name="test",
        source="profile",
        device="cuda",
        total_bytes=3 * GiB,
        available_bytes=3 * GiB,
        headroom_fraction=0.0,
    )
    choices = pick_models(budget=budget, family="qwen2", include_store=False)
    assert [c.name for c in choices][:2] == ["Qwen2-1.5B", "Qwen2.5-1.5B"]
    assert all(c.inference.total_bytes <= 3 * GiB for c in choices)
    assert choices[0].precision is Precision.INT8  # bf16 (3.5 GiB) does not fit 3 GiB


def test_model_reference_kinds(tmp_path, portllm_home):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(cfg("SmolLM2-135M")))
    assert resolve_model_spec(str(folder)).params == 134_515_008
    store = portllm_home / "models" / "my-smol"
    store.mkdir(parents=True)
    (store / "config.json").write_text(json.dumps(cfg("SmolLM2-135M")))
    spec = resolve_model_spec("my-smol")
    assert (spec.kind, spec.params) == ("store", 134_515_008)
    assert any(
        c.name == "my-smol" and c.model.kind == "store" for c in pick_models(hardware_profile="cpu-16gb")
    )
    assert resolve_model_spec("Qwen/Qwen2.5-7B").name == "Qwen2.5-7B"
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))
    with pytest.raises(PlanningError, match="num_hidden_layers"):
        resolve_model_spec(str(folder))


def test_budget_from_probe_is_usable():
    b = memory_budget()
    assert b.source == "probe" and b.total_bytes > 0 and b.usable_bytes <= b.available_bytes


def test_logits_positions_and_cpu_dequantized_projection():
    """Qwen2-0.5B sizes, 128 tokens: a plain forward's logits (every position) outweigh the MLP phase."""
    from portllm_edge.planning.estimate import inference_activation_bytes

    arch = ModelArch.from_config(
        {"model_type": "qwen2", "hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14,
         "num_key_value_heads": 2, "intermediate_size": 4864, "vocab_size": 151936, "tie_word_embeddings": True}
    )  # fmt: skip
    v, h, t, n = 151936, 896, 128, 4864 * 896
    last = inference_activation_bytes(arch, Precision.NF4, t, 1, "cpu")
    every = inference_activation_bytes(arch, Precision.NF4, t, 1, "cpu", logits_positions=t)
    assert last == t * 2 * (2 * h + 3 * 4864) + n * 4  # MLP phase + fp32 dequantized projection on CPU
    assert every == t * h * 2 + t * v * 2 + v * 4 + n * 4
    assert inference_activation_bytes(arch, Precision.NF4, t, 1, "cuda") == last - n * 2  # bf16 there
    est = estimate_inference_peak(arch, "nf4", t, 1, device="cpu", logits_positions=t)
    assert est.term("activations") == every
    with pytest.raises(PlanningError, match="logits_positions"):
        inference_activation_bytes(arch, Precision.NF4, t, 1, "cpu", logits_positions=0)
