"""The exported LoRA GGUF and the merged GGUF run in llama.cpp (llama-cpp-python) and agree with peft.

Setup: SmolLM2-135M-Instruct imported from its Q4_1 GGUF (the store holds the
dequantized fp32 weights), a LoRA patch (r=8 on q/k/v/o/up, random non-zero
factors, ``alpha_pattern`` on v_proj so the per-module scale folding is exercised).

What is compared, and why it is fair: the reference is the unmerged peft model on
the store's fp32 base. llama.cpp cannot run that fp32 base as it is stored, and the
Q4_1 source file would add llama.cpp's Q8 activation rounding of quantized matmuls
to the comparison, so the LoRA GGUF is run on the *same dequantized weights
re-encoded as F16* (``write_merged_gguf(None, ...)``, a reference base), and the
merged model is written at F16. Both then differ from peft only by F16 weight
rounding and llama.cpp's F16 arithmetic.

Tolerance (stated and tested, over every position of 8 prompts):
* top-1 next-token agreement with peft >= 99 %;
* max |Δlogit| <= 1 % of peft's logit range (max − min over the prompts);
* and the patch itself moves the logits by >= 5 % of that range, so an adapter that
  llama.cpp ignored or applied with the wrong scale or row order would fail.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

TOP1_MIN = 0.99
REL_MAX = 0.01
EFFECT_MIN = 0.05
PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    if n <",
    "Once upon a time, in a small village,",
    "Water boils at a temperature of",
    "The three primary colors are red,",
    "In 1969, the first humans landed on",
    "Q: What is 12 times 12?\nA:",
    "The quick brown fox jumps over the",
]


def _llama_cpp():
    if os.environ.get("CI"):
        import llama_cpp  # CI installs the dev dependencies: a missing runtime must fail, not skip

        return llama_cpp
    return pytest.importorskip("llama_cpp", reason="llama-cpp-python is a dev dependency: `make` installs it")


@pytest.fixture(scope="module")
def setup(smollm2_model, tmp_path_factory):
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from portllm_edge import paths
    from portllm_edge.export.merged_gguf import write_merged_gguf

    work = tmp_path_factory.mktemp("llama-cpp")
    paths.set_home(work / "home")
    try:
        base = smollm2_model  # import_gguf(smollm2_gguf), once per session; only read here
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        cfg = LoraConfig(
            r=8,
            lora_alpha=16,
            alpha_pattern={"v_proj": 24},
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "up_proj"],
            init_lora_weights=False,
            lora_dropout=0.0,
        )
        peft_model = get_peft_model(model, cfg)
        with (
            torch.no_grad()
        ):  # random B at full size wrecks the model; a trained patch moves logits by a few units
            for n, p in peft_model.named_parameters():
                if "lora_B" in n:
                    p.mul_(0.3)
        peft_model.save_pretrained(work / "patch")
        write_merged_gguf(None, base, work / "base-f16.gguf", dtype="f16")
        tok = AutoTokenizer.from_pretrained(base)
        ids = [tok(p)["input_ids"] for p in PROMPTS]
        bare = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
        with torch.no_grad():
            ref = [bare(torch.tensor([i])).logits[0].numpy() for i in ids]
            attached = PeftModel.from_pretrained(bare, work / "patch").eval()
            peft_logits = [attached(torch.tensor([i])).logits[0].numpy() for i in ids]
    finally:
        paths.set_home(None)
    return {"work": work, "base": base, "ids": ids, "peft": peft_logits, "bare": ref}


def _run(model_path: Path, ids: list[list[int]], lora: Path | None = None):
    import numpy as np

    llama_cpp = _llama_cpp()
    llm = llama_cpp.Llama(
        model_path=str(model_path),
        lora_path=str(lora) if lora else None,
        logits_all=True,
        n_ctx=128,
        n_threads=2,
        verbose=False,
    )
    out = []
    for seq in ids:
        llm.reset()
        llm.eval(seq)
        out.append(np.array(llm.scores[: len(seq)], dtype=np.float32))
    llm.close()
    return out


def _agreement(got, want) -> tuple[float, float]:
    import numpy as np

    g, w = np.concatenate(got), np.concatenate(want)
    top1 = float((g.argmax(-1) == w.argmax(-1)).mean())
    rel = float(np.abs(g - w).max() / (w.max() - w.min()))
    return top1, rel


def _effect(setup) -> float:
    import numpy as np

    p, b = np.concatenate(setup["peft"]), np.concatenate(setup["bare"])
    return float(np.abs(p - b).max() / (p.max() - p.min()))


def test_exported_lora_gguf_on_the_f16_base_matches_peft(setup, portllm_home):
    from portllm_edge.export import export_patch, resolve_target

    work = setup["work"]
    res = export_patch(
        resolve_target(str(work / "patch"), str(setup["base"])), "gguf-lora", work / "patch.gguf"
    )
    assert res.details["tensors"] == 2 * 5 * 30
    got = _run(work / "base-f16.gguf", setup["ids"], lora=work / "patch.gguf")
    top1, rel = _agreement(got, setup["peft"])
    print(
        f"LoRA GGUF vs peft: top-1 {top1:.4f}, max |dlogit| / range {rel:.5f}, patch effect {_effect(setup):.4f}"
    )
    assert top1 >= TOP1_MIN, f"top-1 agreement {top1:.3f}"
    assert rel <= REL_MAX, f"max |Δlogit| = {rel:.4f} of the logit range"
    assert _effect(setup) >= EFFECT_MIN
    without = _run(work / "base-f16.gguf", setup["ids"])
    assert _agreement(without, setup["peft"])[1] > 5 * REL_MAX  # the adapter is what makes them agree


def test_merged_gguf_alone_matches_peft_and_keeps_the_source_metadata(setup, portllm_home):
    import gguf

    from portllm_edge.export.merged_gguf import write_merged_gguf

    work = setup["work"]
    res = write_merged_gguf(work / "patch", setup["base"], work / "merged-f16.gguf", dtype="f16")
    assert len(res.patched) == 5 * 30 and res.tensors == 272
    got = _run(work / "merged-f16.gguf", setup["ids"])
    top1, rel = _agreement(got, setup["peft"])
    print(f"merged F16 GGUF vs peft: top-1 {top1:.4f}, max |dlogit| / range {rel:.5f}")
    assert top1 >= TOP1_MIN, f"top-1 agreement {top1:.3f}"
    assert rel <= REL_MAX, f"max |Δlogit| = {rel:.4f} of the logit range"
    src, out = gguf.GGUFReader(res.source), gguf.GGUFReader(res.out)
    for key in (
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.merges",
        "tokenizer.chat_template",
        "llama.rope.freq_base",
    ):
        assert out.fields[key].contents() == src.fields[key].contents(), key
    assert out.fields["general.file_type"].contents() == int(gguf.LlamaFileType.MOSTLY_F16)
    assert {t.tensor_type.name for t in out.tensors} == {"F16", "F32"}


def test_merged_gguf_at_q8_0_runs_in_llama_cpp(setup, portllm_home):
    from portllm_edge.export.merged_gguf import write_merged_gguf

    work = setup["work"]
    import gguf

    res = write_merged_gguf(work / "patch", setup["base"], work / "merged-q8.gguf", dtype="q8_0")
    assert {t.tensor_type.name for t in gguf.GGUFReader(res.out).tensors} == {"Q8_0", "F32"}
    top1, rel = _agreement(_run(work / "merged-q8.gguf", setup["ids"]), setup["peft"])
    print(f"merged Q8_0 GGUF vs peft: top-1 {top1:.4f}, max |dlogit| / range {rel:.5f}")
    assert top1 >= 0.9, f"top-1 agreement {top1:.3f}"


def test_port_merge_to_gguf_writes_the_same_file_as_the_exporter(setup, portllm_home):
    from portllm_edge import paths
    from portllm_edge.export.merged_gguf import write_merged_gguf
    from portllm_edge.workflow.port import port

    work = setup["work"]
    paths.set_home(work / "home")
    try:
        outcome = port(
            str(work / "patch"), str(setup["base"]), precision="fp32", save=False,
            merge_to=work / "ported.gguf", merge_dtype="f16", isolate=False,
        )  # fmt: skip
    finally:
        paths.set_home(None)
    assert outcome.merged_to == str(work / "ported.gguf")
    if not (work / "merged-f16.gguf").exists():
        write_merged_gguf(work / "patch", setup["base"], work / "merged-f16.gguf", dtype="f16")
    assert (work / "ported.gguf").read_bytes() == (work / "merged-f16.gguf").read_bytes()
