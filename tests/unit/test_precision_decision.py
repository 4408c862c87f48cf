"""One precision decision: plan, pick, port --precision auto, the app's default and the demo agree."""

from __future__ import annotations

import json

import pytest

from portllm_edge.planning import Budget, decide_precision, pick_models, plan_model, resolve_model_spec
from portllm_edge.planning.estimate import Precision, decode_bytes_per_token

GiB = 1024**3


def _cpu(available: float, *, bandwidth: float | None = None, bf16: bool = True) -> Budget:
    return Budget(
        "test",
        "probe",
        "cpu",
        int(64 * GiB),
        int(available * GiB),
        0.0,
        bf16,
        bandwidth_bytes_per_s=bandwidth,
    )


def test_rule_takes_the_best_quality_that_fits_then_the_smallest():
    spec = resolve_model_spec("Mistral-7B-v0.3")
    roomy = decide_precision(spec, budget=_cpu(60))
    assert roomy.precision is Precision.BF16 and roomy.fits
    mid = decide_precision(spec, budget=_cpu(10))  # bf16 (~14.5 GB) no, int8 (~8 GB) yes
    assert mid.precision is Precision.INT8 and "bf16 would need" in mid.reason
    tight = decide_precision(spec, budget=_cpu(7))  # nf4 port ~6.2 GiB on CPU (quantizing load included)
    assert tight.precision is Precision.NF4 and tight.fits
    none = decide_precision(spec, budget=_cpu(1))
    assert none.precision is Precision.NF4 and not none.fits and "nothing fits" in none.reason
    assert decide_precision(spec, budget=_cpu(60, bf16=False)).precision is Precision.FP32


def test_plan_best_is_the_decision_and_pick_shows_it():
    budget = _cpu(10)
    plan = plan_model("Mistral-7B-v0.3", budget=budget)
    assert plan.best is decide_precision("Mistral-7B-v0.3", budget=budget).precision is Precision.INT8
    (choice,) = pick_models(budget=budget, models=[resolve_model_spec("Mistral-7B-v0.3")])
    assert choice.precision is Precision.INT8


def test_pick_ranks_a_model_that_decodes_too_slowly_after_usable_ones():
    """On a CPU box with 20 GB/s, Gemma-2-9B at bf16 fits but reads ~18 GB per token: about 1 token/s."""
    budget = _cpu(40, bandwidth=20e9)
    gemma, smol = resolve_model_spec("Gemma-2-9B"), resolve_model_spec("SmolLM2-1.7B")
    ranked = pick_models(budget=budget, models=[gemma, smol])
    assert [c.name for c in ranked] == ["SmolLM2-1.7B", "Gemma-2-9B"]
    slow = ranked[1]
    assert slow.precision is Precision.BF16
    assert slow.tokens_per_s == pytest.approx(20e9 / decode_bytes_per_token(gemma.arch, "bf16"))
    assert slow.tokens_per_s < 2 and "tokens/s" in slow.reason
    # without a known bandwidth the rule is size first, as before
    assert pick_models(budget=_cpu(40), models=[gemma, smol])[0].name == "Gemma-2-9B"


def test_decode_bytes_per_token_counts_weights_head_and_kv():
    arch = resolve_model_spec("Mistral-7B-v0.3").arch
    bf16 = decode_bytes_per_token(arch, "bf16", context=1)
    # every linear and the lm_head once at 2 bytes (the embedding lookup reads one row)
    assert bf16 == pytest.approx(2 * (arch.linear_params + arch.vocab_size * arch.hidden_size), rel=1e-3)
    assert decode_bytes_per_token(arch, "nf4", context=1) < 0.35 * bf16


def test_smollm2_plan_pick_port_auto_app_and_demo_agree(smollm2_model, capsys):
    """The issue's acceptance test: the same answer from every asker, for SmolLM2 on this machine."""
    from dataclasses import replace

    import factories

    from portllm_edge import paths
    from portllm_edge.cli import main
    from portllm_edge.demo import ExperimentSettings
    from portllm_edge.models.refs import resolve_base
    from portllm_edge.planning import memory_budget
    from portllm_edge.porting.load import default_device, resolve_precision
    from tui.screens.port import PORT_PRECISIONS

    folder = factories.link_model(
        smollm2_model, paths.models_dir()
    )  # the imported GGUF, in this test's store
    device = default_device()
    budget = memory_budget(device=device)
    answer = decide_precision(folder, device=device).precision.value

    assert main(["plan", str(folder), "--json"]) == 0
    planned = json.loads(capsys.readouterr().out)["best"]
    assert main(["pick", "--json", "--family", "llama"]) == 0
    rows = json.loads(capsys.readouterr().out)["choices"]
    picked = next(r["precision"] for r in rows if r["model"] == folder.name)
    port_auto = resolve_precision("auto", device, resolve_base(str(folder)))
    app_default = plan_model(str(folder), budget=budget, precisions=PORT_PRECISIONS).best
    demo = ExperimentSettings()
    demo_choice = resolve_precision(replace(demo).precision, device, resolve_base(str(folder)))
    assert planned == picked == port_auto == demo_choice == answer
    assert app_default is not None and app_default.value == answer
