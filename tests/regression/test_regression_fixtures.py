"""Replay stored patches and the logits peft gave for them (peft-style regression fixtures).

The fixture (``llama_r2_patch/`` + ``llama_r2_expected.safetensors``) was written by
``make_fixtures.py``: a small LoRA patch (rsLoRA, ``rank_pattern``, ``alpha_pattern``,
a LoRA on ``embed_tokens``) for the session's tiny Llama, and peft's fp32 merged
logits on the tiny *new* Llama for a fixed input. Our port and our streaming merge
must keep reproducing them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REL_TOL = 1e-4


@pytest.fixture(scope="module")
def expected():
    from safetensors.torch import load_file

    return load_file(HERE / "llama_r2_expected.safetensors")


def rel(a, b) -> float:
    return float((a - b).abs().max() / b.abs().max())


def test_port_replays_the_stored_logits(expected, tiny_pairs, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from portllm_edge.porting.attach import attach_patch
    from portllm_edge.porting.preflight import prepare_adapter, run_preflight

    new = tiny_pairs["llama"].new
    assert run_preflight(HERE / "llama_r2_patch", new).ok
    attach_dir = prepare_adapter(HERE / "llama_r2_patch", new, tmp_path)
    model = AutoModelForCausalLM.from_pretrained(new, dtype=torch.float32).eval()
    ported = attach_patch(model, AutoTokenizer.from_pretrained(new), attach_dir)
    with torch.no_grad():
        logits = ported.model(expected["input_ids"]).logits
    assert rel(logits, expected["logits"]) <= REL_TOL


def test_streaming_merge_replays_the_stored_logits(expected, tiny_pairs, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from portllm_edge.porting.merge import stream_merge

    res = stream_merge(HERE / "llama_r2_patch", tiny_pairs["llama"].new, tmp_path / "merged")
    assert res.dtype == "fp32" and res.merged_modules == 7  # embed + 2 x (q, v, o)
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32).eval()
    with torch.no_grad():
        logits = merged(expected["input_ids"]).logits
    assert rel(logits, expected["logits"]) <= REL_TOL
