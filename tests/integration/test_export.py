"""Export for serving on tiny real-family models: the serving check's refusals, the vLLM folder, the LoRA GGUF.

vLLM is not installed here: the vLLM folder is checked against what vLLM's loader
requires (only lora_A/lora_B, r, lora_alpha, target_modules, no modules_to_save, no
DoRA) and, as the oracle for its numbers, peft loads it and must give the original
patch's logits. llama.cpp itself runs in tests/integration/test_export_llama_cpp.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import factories
import pytest

from portllm_edge.cli import main
from portllm_edge.errors import ExportError
from portllm_edge.export import export_patch, resolve_target
from portllm_edge.export.serving import check_serving, vllm_max_lora_rank
from portllm_edge.porting.adapter_io import read_base_index

REL_TOL = 1e-5
"""fp32: max |exported − original| / max |original| over the logits."""


def run(capsys, *argv: str) -> tuple[int, str, str]:
    from portllm_edge import paths

    capsys.readouterr()
    code = main(list(argv))
    out = capsys.readouterr()
    paths.set_home(None)
    return code, out.out, out.err


def _logits(base: Path, adapter: Path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ids = torch.randint(4, 260, (2, 10), generator=torch.Generator().manual_seed(0))
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    with torch.no_grad():
        return PeftModel.from_pretrained(model, adapter).eval()(ids).logits


def _edit_config(adapter: Path, **changes) -> None:
    p = adapter / "adapter_config.json"
    cfg = json.loads(p.read_text())
    cfg.update(changes)
    p.write_text(json.dumps(cfg))


def test_vllm_folder_holds_only_lora_factors_and_gives_peft_logits(tiny_pairs, tmp_path):
    from safetensors import safe_open

    pair = tiny_pairs["llama"]
    adapter = factories.build_lora_adapter(
        pair.new, tmp_path / "p", r=4, lora_alpha=8, target_modules=("q_proj", "k_proj", "v_proj", "o_proj")
    )
    target = resolve_target(str(adapter), str(pair.new))
    res = export_patch(target, "vllm", tmp_path / "vllm")
    cfg = json.loads((tmp_path / "vllm" / "adapter_config.json").read_text())
    assert cfg["r"] == 4 and cfg["lora_alpha"] == 8
    assert cfg["target_modules"] == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert cfg["modules_to_save"] is None and cfg["use_dora"] is False and cfg["bias"] == "none"
    with safe_open(str(tmp_path / "vllm" / "adapter_model.safetensors"), "pt") as fh:
        keys = list(fh.keys())
    assert len(keys) == 2 * 4 * 2  # 4 modules x 2 layers x (A, B)
    assert all(k.startswith("base_model.model.model.layers.") for k in keys)
    assert all(k.endswith((".lora_A.weight", ".lora_B.weight")) for k in keys)
    assert res.serve_command == (
        f"vllm serve {pair.new} --enable-lora --lora-modules p={tmp_path / 'vllm'} --max-lora-rank 8"
    )
    a, b = _logits(pair.new, adapter), _logits(pair.new, tmp_path / "vllm")
    assert float((a - b).abs().max() / a.abs().max()) <= REL_TOL


def test_vllm_export_folds_rank_alpha_patterns_and_rslora_into_lora_b(tiny_pairs, tmp_path):
    from safetensors import safe_open

    pair = tiny_pairs["qwen2"]
    adapter = factories.build_lora_adapter(pair.new, tmp_path / "p", r=4, lora_alpha=8)
    _edit_config(adapter, alpha_pattern={"v_proj": 32}, use_rslora=True)
    before = _logits(pair.new, adapter)
    res = export_patch(resolve_target(str(adapter), str(pair.new)), "vllm", tmp_path / "vllm")
    assert any("folded into its lora_B" in n for n in res.report.notes)
    cfg = json.loads((tmp_path / "vllm" / "adapter_config.json").read_text())
    assert cfg["use_rslora"] is False and "alpha_pattern" not in cfg
    after = _logits(pair.new, tmp_path / "vllm")
    assert float((after - before).abs().max() / before.abs().max()) <= REL_TOL
    # v_proj's B carries (32/sqrt(4)) / (8/4) = 8x, q_proj's (8/sqrt(4)) / (8/4) = 2x
    with (
        safe_open(str(adapter / "adapter_model.safetensors"), "pt") as src,
        safe_open(str(tmp_path / "vllm" / "adapter_model.safetensors"), "pt") as dst,
    ):
        key = "base_model.model.model.layers.0.self_attn.{}.lora_B.weight"
        for mod, factor in (("v_proj", 8.0), ("q_proj", 2.0)):
            ratio = dst.get_tensor(key.format(mod)) / src.get_tensor(key.format(mod))
            assert float((ratio - factor).abs().max()) < 1e-5


@pytest.mark.parametrize("fmt", ["vllm", "gguf-lora"])
def test_modules_to_save_is_refused_for_serving_runtimes_naming_lm_head(tiny_pairs, tmp_path, capsys, fmt):
    pair = tiny_pairs["qwen2"]
    adapter = factories.build_lora_adapter(pair.new, tmp_path / "p", modules_to_save=["lm_head"])
    out = tmp_path / ("out.gguf" if fmt == "gguf-lora" else "out")
    code, stdout, err = run(
        capsys, "patch", "export", str(adapter), "--format", fmt, "--out", str(out), "--base", str(pair.new)
    )
    assert code == 2
    assert "carries full lm_head/embed_tokens rows (`lm_head.weight`" in err
    assert "cannot serve it" in err and "merge instead" in err
    assert "vllm       BLOCKED" in stdout and "llama.cpp  BLOCKED" in stdout and "peft       ok" in stdout
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_dora_is_refused_for_vllm(tiny_pairs, tmp_path, capsys):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    pair = tiny_pairs["llama"]
    model = AutoModelForCausalLM.from_pretrained(pair.new, dtype=torch.float32)
    peft_model = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], use_dora=True)
    )
    peft_model.save_pretrained(tmp_path / "dora")
    code, _, err = run(
        capsys,
        "patch",
        "export",
        str(tmp_path / "dora"),
        "--format",
        "vllm",
        "--out",
        str(tmp_path / "v"),
        "--base",
        str(pair.new),
    )
    assert code == 2
    assert "vllm cannot serve this patch: DoRA (`use_dora: true`, magnitude vectors on 2 modules)" in err
    assert "Fix: serve it with peft/transformers (--format peft)" in err
    assert not (tmp_path / "v").exists()


def test_patch_whose_modules_match_nothing_is_refused(tiny_pairs, tmp_path):
    pair = tiny_pairs["llama"]
    adapter = factories.build_lora_adapter(pair.new, tmp_path / "p")
    # a patch saved against a different module naming: every key points at a module the base lacks
    import safetensors.torch as st

    tensors = st.load_file(str(adapter / "adapter_model.safetensors"))
    st.save_file(
        {k.replace(".self_attn.", ".attention."): v for k, v in tensors.items()},
        str(adapter / "adapter_model.safetensors"),
    )
    report = check_serving(adapter, read_base_index(pair.new))
    assert report.matched_modules == 0
    assert not report.ok("vllm") and not report.ok("llama.cpp") and not report.ok("peft")
    with pytest.raises(
        ExportError, match=r"none of the patch's 4 LoRA modules .* vLLM would serve the bare base"
    ):
        export_patch(resolve_target(str(adapter), str(pair.new)), "vllm", tmp_path / "v")
    assert not (tmp_path / "v").exists()


def test_serving_check_decides_fan_in_fan_out_from_the_module_type_not_the_config(tiny_pairs, tmp_path):
    pair = tiny_pairs["llama"]
    adapter = factories.build_lora_adapter(
        pair.new, tmp_path / "p", r=4, lora_alpha=8, target_modules=("q_proj", "v_proj")
    )
    # peft ignores this flag for nn.Linear (dispatch_default); v_proj is [32, 64], so a transposed ΔW would not fit
    _edit_config(adapter, fan_in_fan_out=True)
    report = check_serving(adapter, read_base_index(pair.new))
    assert report.matched_modules == 4
    assert report.blockers == []


def test_lora_gguf_has_llama_cpp_metadata_names_and_shapes(tiny_pairs, tmp_path):
    import gguf
    import numpy as np
    from safetensors import safe_open

    pair = tiny_pairs["llama"]
    adapter = factories.build_lora_adapter(
        pair.new, tmp_path / "p", r=4, lora_alpha=8, target_modules=("q_proj", "v_proj")
    )
    res = export_patch(resolve_target(str(adapter), str(pair.new)), "gguf-lora", tmp_path / "p.gguf")
    assert res.serve_command == f"llama-server -m BASE.gguf --lora {tmp_path / 'p.gguf'}"
    r = gguf.GGUFReader(tmp_path / "p.gguf")
    assert r.fields["general.type"].contents() == "adapter"
    assert r.fields["general.architecture"].contents() == "llama"
    assert r.fields["adapter.type"].contents() == "lora"
    assert r.fields["adapter.lora.alpha"].contents() == 8.0
    t = {x.name: x for x in r.tensors}
    assert sorted(t) == sorted(
        f"blk.{i}.attn_{m}.weight.lora_{ab}" for i in range(2) for m in ("q", "v") for ab in ("a", "b")
    )
    # ggml ne: lora_a [in, r], lora_b [r, out] (numpy [r, in] and [out, r]), as convert_lora_to_gguf.py writes
    assert t["blk.0.attn_q.weight.lora_a"].shape.tolist() == [64, 4]
    assert t["blk.0.attn_q.weight.lora_b"].shape.tolist() == [4, 64]
    assert t["blk.0.attn_v.weight.lora_b"].shape.tolist() == [4, 32]
    with safe_open(str(adapter / "adapter_model.safetensors"), "np") as fh:
        b_q = fh.get_tensor("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight")
        b_v = fh.get_tensor("base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight")
    np.testing.assert_array_equal(np.asarray(t["blk.0.attn_v.weight.lora_b"].data), b_v)
    # q rows are in llama.cpp's rotary order: head h, pair i -> rows (h, half, i) swapped to (h, i, half)
    permuted = b_q.reshape(4, 2, 8, 4).swapaxes(1, 2).reshape(64, 4)
    np.testing.assert_array_equal(np.asarray(t["blk.0.attn_q.weight.lora_b"].data), permuted)
    assert not np.array_equal(permuted, b_q)


def test_gguf_lora_needs_a_base_and_refuses_unmapped_architectures(tiny_pairs, tmp_path, capsys):
    pair = tiny_pairs["llama"]
    adapter = factories.build_lora_adapter(pair.new, tmp_path / "p")
    _edit_config(adapter, base_model_name_or_path=None)
    code, _stdout, err = run(
        capsys, "patch", "export", str(adapter), "--format", "gguf-lora", "--out", str(tmp_path / "x.gguf")
    )
    assert code == 2 and "no base model given" in err and "pass --base" in err
    cfg = json.loads((pair.new / "config.json").read_text())
    odd = tmp_path / "odd"
    odd.mkdir()
    for f in pair.new.iterdir():
        (odd / f.name).write_bytes(f.read_bytes())
    (odd / "config.json").write_text(json.dumps({**cfg, "model_type": "gpt_bigcode"}))
    report = check_serving(adapter, read_base_index(odd))
    (bl,) = report.blocking("llama.cpp")
    assert (
        "`model_type: gpt_bigcode` has no GGUF mapping" in bl.problem and "convert_lora_to_gguf.py" in bl.fix
    )
    assert report.ok("vllm")


def test_cli_export_of_a_stored_patch_defaults_to_its_lineage_base(tiny_pairs, tmp_path, capsys):
    pair = tiny_pairs["llama"]
    adapter = factories.build_lora_adapter(pair.new, tmp_path / "p")
    code, _, err = run(capsys, "patch", "import", str(adapter), "--name", "pp", "--base-id", str(pair.new))
    assert code == 0, err
    code, out, err = run(capsys, "patch", "export", "pp", "--format", "vllm", "--out", str(tmp_path / "v"))
    assert code == 0, err
    assert "serving check: " in out and f"on {pair.new}" in out
    assert (
        f"serve with: vllm serve {pair.new} --enable-lora --lora-modules pp={tmp_path / 'v'} --max-lora-rank 8"
        in out
    )
    code, _, err = run(capsys, "patch", "export", "pp", "--format", "vllm", "--out", str(tmp_path / "v"))
    assert code == 2 and "already exists" in err
    code, _, err = run(capsys, "patch", "export", "pp", "--format", "onnx", "--out", str(tmp_path / "o"))
    assert code == 2 and "`--format onnx` is not known" in err
    code, _, err = run(capsys, "patch", "export", "pp", "--merge-to", str(tmp_path / "m.gguf"))
    assert code == 2 and "was not imported from a GGUF file" in err and not (tmp_path / "m.gguf").exists()


def test_vllm_max_lora_rank_rounds_up_to_a_value_vllm_accepts():
    assert [vllm_max_lora_rank(r) for r in (1, 4, 8, 9, 300, 512, 513)] == [1, 8, 8, 16, 320, 512, None]


def test_port_merge_to_gguf_needs_a_base_imported_from_gguf_and_fails_before_loading(
    tiny_pairs, tmp_path, capsys
):
    pair = tiny_pairs["llama"]
    adapter = factories.build_lora_adapter(pair.old, tmp_path / "p")
    out = tmp_path / "m.gguf"
    code, _, err = run(
        capsys,
        "port",
        str(adapter),
        "--base",
        str(pair.new),
        "--merge-to",
        str(out),
        "--precision",
        "fp32",
        "--no-save",
    )
    assert code == 2
    assert "was not imported from a GGUF file" in err and "convert_hf_to_gguf.py" in err
    assert not out.exists()
    code, _, err = run(
        capsys, "port", str(adapter), "--base", str(pair.new), "--merge-to", str(out), "--merge-dtype", "q4_0"
    )
    assert code == 2 and "merge dtype `q4_0` is not supported for a .gguf" in err
