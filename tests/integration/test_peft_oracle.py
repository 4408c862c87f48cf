"""peft itself is the oracle: our port (rewrite + attach) and our streaming merge give peft's logits.

For each adapter variant, peft attaches the patch to the new base in fp32 and
``merge_and_unload()``s it; the logits of that model are the reference. Our port
(:func:`prepare_adapter` + :func:`attach_patch`) and our streaming merge
(:func:`stream_merge`, fp32) must agree to 1e-4 relative. A vocabulary re-map
has no peft reference (peft copies by id), so it is checked against the same
patch on an identical base whose tokenizer is not permuted.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from portllm_edge.errors import PortingError
from portllm_edge.patches.adapter_format import model_state_keys
from portllm_edge.porting.attach import attach_patch
from portllm_edge.porting.merge import stream_merge
from portllm_edge.porting.preflight import prepare_adapter, run_preflight

REL_TOL = 1e-4

CASES: dict[str, dict] = {
    "rslora": {"family": "llama", "lora": {"target_modules": ["q_proj", "v_proj"], "use_rslora": True}},
    "rank_pattern": {
        "family": "llama",
        "lora": {
            "target_modules": ["q_proj", "v_proj", "o_proj"],
            "rank_pattern": {"v_proj": 2, "layers.1.self_attn.q_proj": 6},
        },
    },
    "alpha_pattern": {
        "family": "llama",
        "lora": {
            "target_modules": ["q_proj", "v_proj", "o_proj"],
            "alpha_pattern": {"o_proj": 32, r"model\.layers\.0\.self_attn\.q_proj": 3},
        },
    },
    "fan_in_fan_out_conv1d": {
        "family": "gpt2",
        "lora": {"target_modules": ["c_attn", "c_proj", "c_fc"], "fan_in_fan_out": True},
    },
    "conv1d_config_says_false": {
        "family": "gpt2",
        "lora": {"target_modules": ["c_attn", "c_proj"], "fan_in_fan_out": True},
        "config": {"fan_in_fan_out": False},  # peft decides from the module type: Conv1D => True
    },
    "linear_config_says_fan_in_fan_out": {
        "family": "llama",
        "lora": {"target_modules": ["q_proj", "down_proj"]},
        "config": {"fan_in_fan_out": True},  # peft: nn.Linear => False
    },
    "lora_on_embeddings": {
        "family": "llama",
        "lora": {"target_modules": ["embed_tokens", "lm_head", "q_proj"]},
    },
    "modules_to_save": {
        "family": "llama",
        "lora": {"target_modules": ["q_proj"], "modules_to_save": ["embed_tokens", "lm_head"]},
    },
    "adapter_name_infix": {
        "family": "llama",
        "lora": {"target_modules": ["q_proj", "v_proj"]},
        "infix": True,
    },
    "dora_force": {"family": "llama", "lora": {"target_modules": ["q_proj", "v_proj"], "use_dora": True}},
}


def _ids():
    import torch

    return torch.randint(4, 260, (2, 12), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def gpt2_pair(tmp_path_factory):
    import factories

    root = tmp_path_factory.mktemp("gpt2")
    old = factories.build_model("gpt2", root / "old", seed=0)
    factories.build_model("gpt2", root / "new", version="new", seed=1, base_state=old.state_dict())
    return factories.TinyPair("gpt2", root / "old", root / "new")


def build_adapter(base: Path, out: Path, case: dict, seed: int = 0) -> Path:
    """A peft adapter on ``base`` with random non-zero factors (and a perturbed DoRA magnitude)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, init_lora_weights=False, **case["lora"])
    pm = get_peft_model(model, cfg)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_magnitude_vector" in name or "modules_to_save" in name:
                p.add_(torch.randn_like(p) * 0.05 * p.abs().mean())
    pm.save_pretrained(out)
    cfg_path = out / "adapter_config.json"
    data = json.loads(cfg_path.read_text())
    data.update(case.get("config", {}), base_model_name_or_path=str(base))
    cfg_path.write_text(json.dumps(data))
    if case.get("infix"):
        from safetensors.torch import load_file, save_file

        f = out / "adapter_model.safetensors"
        save_file({model_state_keys(k)[0]: v for k, v in load_file(f).items()}, f)
    return out


def _logits(model, ids):
    import torch

    with torch.no_grad():
        return model(ids).logits.float()


def peft_reference(adapter: Path, base: Path, ids=None):
    """peft: attach in fp32, merge_and_unload, logits.

    peft saves a copy of the *old* base's embedding next to a LoRA on it
    (``save_embedding_layers``) and loads it back; PortLLM's port is W_new + ΔW, so
    the reference is peft's attach of the same adapter without those copies.
    """
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM

    ids = _ids() if ids is None else ids
    tensors = load_file(adapter / "adapter_model.safetensors")
    if any(".base_layer." in k for k in tensors):
        stripped = adapter.parent / f"{adapter.name}-without-base-copies"
        shutil.copytree(adapter, stripped, dirs_exist_ok=True)
        save_file(
            {k: v for k, v in tensors.items() if ".base_layer." not in k},
            stripped / "adapter_model.safetensors",
        )
        adapter = stripped
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    base_logits = _logits(model, ids)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload().eval()
    return _logits(merged, ids), base_logits


def our_port(adapter: Path, base: Path, work: Path, old: Path | None = None):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    attach_dir = prepare_adapter(adapter, base, work, old_base_dir=old)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    ported = attach_patch(model, AutoTokenizer.from_pretrained(base), attach_dir)
    assert ported.report.matched_tensors == ported.report.total_tensors
    return _logits(ported.model, _ids())


def our_merge(adapter: Path, base: Path, out: Path, old: Path | None = None):
    import torch
    from transformers import AutoModelForCausalLM

    stream_merge(adapter, base, out, dtype="fp32", old_vocab_dir=old)
    return _logits(AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval(), _ids())


def rel(a, b) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("name", list(CASES))
def test_port_and_merge_match_peft(name, tiny_pairs, gpt2_pair, tmp_path):
    case = CASES[name]
    pair = gpt2_pair if case["family"] == "gpt2" else tiny_pairs[case["family"]]
    adapter = build_adapter(pair.old, tmp_path / "adapter", case)
    reference, base_logits = peft_reference(adapter, pair.new)
    assert rel(reference, base_logits) > 1e-3  # the patch changes the output
    report = run_preflight(adapter, pair.new)
    assert [c.name for c in report.failures] == (["additive"] if name == "dora_force" else [])
    assert rel(our_port(adapter, pair.new, tmp_path / "work"), reference) <= REL_TOL
    if name == "dora_force":
        with pytest.raises(PortingError, match="DoRA"):
            stream_merge(adapter, pair.new, tmp_path / "merged", dtype="fp32")
        return
    assert rel(our_merge(adapter, pair.new, tmp_path / "merged"), reference) <= REL_TOL


def _swap_tokens(src: Path, dst: Path, a: str, b: str) -> tuple[int, int]:
    """``dst`` = ``src`` with tokens ``a``/``b`` swapped in the tokenizer and in every vocabulary-indexed row.

    The two models compute the same function of the *text*; only the ids of a and b differ.
    """
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    data = json.loads((dst / "tokenizer.json").read_text())
    vocab = data["model"]["vocab"]
    ia, ib = vocab[a], vocab[b]
    vocab[a], vocab[b] = ib, ia
    (dst / "tokenizer.json").write_text(json.dumps(data))
    weights = load_file(dst / "model.safetensors")
    for key in ("model.embed_tokens.weight", "lm_head.weight"):
        w = weights[key].clone()
        w[[ia, ib]] = w[[ib, ia]]
        weights[key] = w
    save_file(weights, dst / "model.safetensors", metadata={"format": "pt"})
    return ia, ib


@pytest.mark.parametrize("name", ["lora_on_embeddings", "modules_to_save"])
def test_token_indexed_tensors_follow_token_strings_on_a_remapped_vocabulary(name, tiny_pairs, tmp_path):
    """Same vocabulary size, two tokens swapped: the port edits the same *tokens* it edited before.

    Copying by old id (the old behaviour) would give token a's update to token b.
    """
    import torch

    pair = tiny_pairs["llama"]
    adapter = build_adapter(pair.old, tmp_path / "adapter", CASES[name])
    ia, ib = _swap_tokens(pair.new, tmp_path / "swapped", "a", "b")
    ids = _ids()
    ids[0, :3] = torch.tensor([ia, ib, ia])  # the text holds both swapped tokens
    reference, _ = peft_reference(adapter, pair.new, ids)  # unswapped base: ids mean what they meant
    perm = torch.arange(reference.shape[-1])
    perm[[ia, ib]] = perm[[ib, ia]]
    swapped_ids = perm[ids]  # the same text under the swapped tokenizer
    assert not torch.equal(swapped_ids, ids)
    rep = run_preflight(adapter, tmp_path / "swapped", old_base_dir=pair.old)
    assert rep.ok and rep.needs_rewrite and rep.get("modules_to_save").status == "warn"
    attach_dir = prepare_adapter(adapter, tmp_path / "swapped", tmp_path / "work", old_base_dir=pair.old)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "swapped", dtype=torch.float32).eval()
    from peft import PeftModel

    ported = PeftModel.from_pretrained(model, str(attach_dir)).eval()
    with torch.no_grad():
        logits = ported(swapped_ids).logits
    assert rel(logits[..., perm], reference) <= REL_TOL
    stream_merge(adapter, tmp_path / "swapped", tmp_path / "merged", dtype="fp32", old_vocab_dir=pair.old)
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32).eval()
    with torch.no_grad():
        assert rel(merged(swapped_ids).logits[..., perm], reference) <= REL_TOL
