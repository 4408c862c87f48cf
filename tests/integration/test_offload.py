"""Offload with accelerate: a base over its --max-memory budget runs with layers on disk, same outputs.

The tiny llama (fp32, about 0.6 MB of weights) gets a 250 kB CPU budget, so accelerate
puts the embeddings on the CPU and the decoder layers and head on disk; the patched
logits must equal the unoffloaded run's (the same fp32 arithmetic; 1e-6 relative).
"""

from __future__ import annotations

import factories
import pytest

from portllm_edge.cli import main
from portllm_edge.errors import ConfigError
from portllm_edge.porting.offload import Offload, parse_max_memory, placement

BUDGET = 250_000
"""Bytes of CPU memory for the tiny llama: less than its weights, so layers go to disk."""


def _logits(model, tokenizer):
    import torch

    ids = torch.randint(4, 260, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model(ids).logits


def test_offloaded_base_gives_the_unoffloaded_patched_logits(tiny_pairs, tmp_path):
    from portllm_edge.porting.attach import attach_patch
    from portllm_edge.porting.load import load_base_model

    pair = tiny_pairs["llama"]
    adapter = factories.build_lora_adapter(
        pair.new, tmp_path / "p", target_modules=("q_proj", "v_proj", "down_proj")
    )
    plain = load_base_model(str(pair.new), "fp32", device="cpu")
    want_base = _logits(plain.model, plain.tokenizer)
    want = _logits(attach_patch(plain.model, plain.tokenizer, adapter).model, plain.tokenizer)

    off = load_base_model(str(pair.new), "fp32", device="cpu", offload=Offload(max_memory={"cpu": BUDGET}))
    where = placement(off.model)
    assert where.get("disk", 0) >= 1 and where.get("cpu", 0) >= 1, where
    got_base = _logits(off.model, off.tokenizer)
    ported = attach_patch(off.model, off.tokenizer, adapter)
    assert ported.report.matched_tensors == ported.report.total_tensors == 2 * 3 * 2
    got = _logits(ported.model, off.tokenizer)
    assert float((got_base - want_base).abs().max() / want_base.abs().max()) <= 1e-6
    assert float((got - want).abs().max() / want.abs().max()) <= 1e-6
    assert float((want - want_base).abs().max()) > 0.01  # the patch does something


def test_port_with_max_memory_runs_offloaded(tiny_pairs, tmp_path):
    from portllm_edge.workflow.port import port

    pair = tiny_pairs["llama"]
    adapter = factories.build_lora_adapter(pair.old, tmp_path / "p")
    outcome = port(
        str(adapter), str(pair.new), precision="fp32", save=False, isolate=False,
        offload=Offload(max_memory={"cpu": BUDGET}),
    )  # fmt: skip
    assert outcome.attach.matched_tensors == outcome.attach.total_tensors == 8
    assert outcome.attach.finite and outcome.attach.max_abs_logit_change > 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--max-memory", "1GiB", "--precision", "nf4"], "nf4 (bitsandbytes) layers cannot be offloaded"),
        (["--max-memory", "lots", "--precision", "fp32"], "`--max-memory`: can't read 'lots' as a size"),
        (["--device-map", "balanced", "--precision", "fp32"], "`--device-map balanced` is not supported"),
        (["--max-memory", "gpu=2GiB", "--precision", "fp32"], "`--max-memory`: device 'gpu' is not known"),
    ],
)
def test_port_offload_options_are_checked_before_any_load(tiny_pairs, tmp_path, capsys, argv, message):
    pair = tiny_pairs["llama"]
    adapter = factories.build_lora_adapter(pair.old, tmp_path / "p")
    code = main(["port", str(adapter), "--base", str(pair.new), "--no-save", *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err


def test_parse_max_memory():
    assert parse_max_memory("300MiB") == {"cpu": 300 * 2**20}
    assert parse_max_memory("2GiB", "cuda:1") == {1: 2 * 2**30}
    assert parse_max_memory("0=20GiB, cpu=64GiB") == {0: 20 * 2**30, "cpu": 64 * 2**30}
    assert Offload.from_dict(Offload(max_memory={0: 5, "cpu": 7}).to_dict()).max_memory == {0: 5, "cpu": 7}
    with pytest.raises(ConfigError, match="is not DEVICE=SIZE"):
        parse_max_memory("0=1GiB,2GiB")
