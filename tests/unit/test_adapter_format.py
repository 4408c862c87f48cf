"""The one adapter-format module, checked against peft and transformers themselves (the oracles)."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import subprocess
import sys

import pytest

from portllm_edge import errors
from portllm_edge.errors import PatchError
from portllm_edge.hfconfig import TIED_BY_DEFAULT, ties_word_embeddings
from portllm_edge.patches.adapter_format import (
    CONV1D_MODULES,
    AdapterConfig,
    canonical_key,
    fan_in_fan_out,
    known_lora_config_keys,
    model_state_keys,
    parse_key,
    pattern_key,
)


def test_known_config_keys_are_exactly_peft_lora_config_fields() -> None:
    from peft import LoraConfig

    assert known_lora_config_keys() == {f.name for f in dataclasses.fields(LoraConfig)}


@pytest.mark.parametrize(
    ("patterns", "module"),
    [
        ({"q_proj": 8, "v_proj": 2}, "model.layers.0.self_attn.q_proj"),
        ({"layers.1.self_attn.q_proj": 8}, "model.layers.1.self_attn.q_proj"),
        ({"layers.1.self_attn.q_proj": 8}, "model.layers.11.self_attn.q_proj"),
        ({r"^model.layers.0.*": 8, "q_proj": 3}, "model.layers.0.self_attn.q_proj"),
        ({"proj": 8}, "model.layers.0.self_attn.q_proj"),
        ({}, "lm_head"),
    ],
)
def test_pattern_key_matches_peft_get_pattern_key(patterns, module) -> None:
    from peft.utils.other import get_pattern_key

    peft_key = get_pattern_key(list(patterns), module)
    assert pattern_key(patterns, module) == (peft_key if peft_key in patterns else None)


def test_infix_keys_round_trip_with_peft_key_rules() -> None:
    """Saved key -> model key (ours) -> saved key (peft's `_remove_adapter_name_from_state_dict_key`)."""
    from peft.tuners.tuners_utils import _remove_adapter_name_from_state_dict_key

    for saved in (
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
        "base_model.model.model.layers.0.self_attn.q_proj.lora_B.bias",
        "base_model.model.model.embed_tokens.lora_embedding_A",
    ):
        (model_key,) = model_state_keys(saved, "other")
        assert _remove_adapter_name_from_state_dict_key(model_key, "other") == saved
        parsed = parse_key(model_key)
        assert (parsed.adapter_name, canonical_key(parsed.module, parsed.slot)) == ("other", saved)
    dora = parse_key("model.layers.0.mlp.up_proj.lora_magnitude_vector.default.weight")
    assert (
        canonical_key(dora.module, dora.slot)
        == "base_model.model.model.layers.0.mlp.up_proj.lora_magnitude_vector"
    )
    mts = parse_key("model.embed_tokens.modules_to_save.default.weight")
    assert (mts.kind, mts.tensor_name) == ("saved", "model.embed_tokens.weight")
    assert parse_key("base_model.model.model.embed_tokens.base_layer.weight").kind == "base_copy"
    assert parse_key("base_model.model.x.hada_w1_a").kind == "other"


def _cfg(**extra):
    return {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"], **extra}


def test_unknown_null_keys_are_dropped_with_a_warning_and_others_refused(caplog) -> None:
    with caplog.at_level(logging.WARNING):
        cfg = AdapterConfig.from_dict(_cfg(future_flag=None, future_list=[]), "a.json")
    assert cfg.dropped == ("future_flag", "future_list") and "future_flag" not in cfg.known
    assert "future_flag" in caplog.text
    with pytest.raises(
        PatchError, match=r"a\.json: sets `lora_scale_mode`='sqrt', unknown to the installed peft"
    ):
        AdapterConfig.from_dict(_cfg(lora_scale_mode="sqrt"), "a.json")
    lenient = AdapterConfig.from_dict(_cfg(lora_scale_mode="sqrt"), "a.json", refuse_unknown=False)
    assert lenient.refused == {"lora_scale_mode": "sqrt"}


@pytest.mark.parametrize(
    ("changes", "shown", "hint"),
    [
        ({"lora_alpha": -16}, "`lora_alpha` is -16", "set `lora_alpha`"),
        ({"lora_alpha": 0}, "`lora_alpha` is 0", "set `lora_alpha`"),
        ({"lora_alpha": float("nan")}, "`lora_alpha` is nan", "set `lora_alpha`"),
        ({"lora_alpha": float("-inf")}, "`lora_alpha` is -inf", "set `lora_alpha`"),
        ({"r": 0}, "`r` is 0", "set `r`"),
        ({"r": -4}, "`r` is -4", "set `r`"),
        ({"alpha_pattern": {"q_proj": -8}}, "`alpha_pattern` is {'q_proj': -8}", "set `lora_alpha`"),
        ({"rank_pattern": {"q_proj": 0}}, "`rank_pattern` is {'q_proj': 0}", "set `r`"),
    ],
)
def test_non_positive_rank_or_alpha_is_refused_naming_file_and_field(changes, shown, hint) -> None:
    with pytest.raises(PatchError) as ei:
        AdapterConfig.from_dict(_cfg(**changes), "ad/adapter_config.json")
    assert str(ei.value).startswith(f"ad/adapter_config.json: {shown}; it must ")
    assert "positive" in str(ei.value)
    assert ei.value.hint.startswith(hint)


def test_scaling_matches_peft_layers() -> None:
    """rsLoRA, rank_pattern and alpha_pattern give the scale peft's LoraLayer computes."""
    import torch
    from peft import LoraConfig, get_peft_model

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.q_proj = torch.nn.Linear(8, 8)
            self.v_proj = torch.nn.Linear(8, 8)

    raw = _cfg(
        target_modules=["q_proj", "v_proj"],
        use_rslora=True,
        rank_pattern={"v_proj": 2},
        alpha_pattern={"q_proj": 3.0},
    )
    peft_model = get_peft_model(Tiny(), LoraConfig(**{k: v for k, v in raw.items() if k != "peft_type"}))
    ours = AdapterConfig.from_dict(raw, "x")
    for name in ("q_proj", "v_proj"):
        layer = peft_model.base_model.model.get_submodule(name)
        assert ours.scaling(name) == pytest.approx(layer.scaling["default"], rel=1e-12)
        assert ours.rank_alpha(name)[0] == layer.r["default"]


def test_conv1d_table_matches_transformers() -> None:
    from transformers import GPT2Config, GPT2LMHeadModel, OpenAIGPTConfig, OpenAIGPTLMHeadModel
    from transformers.pytorch_utils import Conv1D

    for cfg, cls in (
        (
            GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=32, add_cross_attention=True),
            GPT2LMHeadModel,
        ),
        (OpenAIGPTConfig(n_layer=1, n_embd=16, n_head=2, vocab_size=32), OpenAIGPTLMHeadModel),
    ):
        model = cls(cfg)
        for name, mod in model.named_modules():
            if isinstance(mod, (Conv1D, torch_linear())):
                assert fan_in_fan_out(cfg.model_type, name) == isinstance(mod, Conv1D), name
        assert CONV1D_MODULES[cfg.model_type]
    assert not fan_in_fan_out("llama", "model.layers.0.mlp.c_proj")


def torch_linear():
    import torch

    return torch.nn.Linear


def test_tied_defaults_match_transformers_config_classes() -> None:
    from transformers import CONFIG_MAPPING

    for model_type, tied in TIED_BY_DEFAULT.items():
        assert CONFIG_MAPPING[model_type]().tie_word_embeddings is tied, model_type
    assert ties_word_embeddings({"model_type": "llama"}) is False
    assert ties_word_embeddings({"model_type": "gemma2"}) is True
    assert ties_word_embeddings({"model_type": "llama", "tie_word_embeddings": True}) is True
    assert ties_word_embeddings({"model_type": "x", "text_config": {"model_type": "qwen2"}}) is False


def test_planner_and_base_index_read_a_missing_tie_flag_the_same_way(tiny_pairs, tmp_path) -> None:
    """A Llama config.json without `tie_word_embeddings`: untied (transformers' LlamaConfig default)."""
    from portllm_edge.planning.arch import ModelArch
    from portllm_edge.porting.adapter_io import read_base_index

    base = tmp_path / "base"
    shutil.copytree(tiny_pairs["llama"].new, base)
    data = json.loads((base / "config.json").read_text())
    data.pop("tie_word_embeddings", None)
    (base / "config.json").write_text(json.dumps(data))
    assert read_base_index(base).tied is False
    assert ModelArch.from_config(data, source="x").tie_word_embeddings is False


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (errors.PatchError, ValueError),
        (errors.ConfigError, ValueError),
        (errors.CompatibilityError, ValueError),
        (errors.BaseModelError, ValueError),
        (errors.DataError, ValueError),
        (errors.PortingError, RuntimeError),
        (errors.StoreError, RuntimeError),
        (errors.MeasurementError, RuntimeError),
    ],
)
def test_errors_also_inherit_the_matching_builtin(cls, builtin) -> None:
    with pytest.raises(builtin):
        raise cls("x", hint="y")
    assert issubclass(cls, errors.PortllmError)


def test_reading_the_config_and_running_the_preflight_import_neither_peft_nor_torch(
    tiny_pairs, tiny_adapters
) -> None:
    code = (
        "import sys; from pathlib import Path;"
        "from portllm_edge.porting.preflight import run_preflight;"
        f"r = run_preflight(Path({str(tiny_adapters['llama'])!r}), Path({str(tiny_pairs['llama'].new)!r}));"
        "assert r.ok, r.to_dict();"
        "print(sorted(m for m in ('peft', 'torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_an_adapter_with_adapter_name_infix_keys_is_valid_and_portable(
    tiny_pairs, tiny_adapters, tmp_path
) -> None:
    """Keys as a model state dict holds them (`.lora_A.default.weight`): import and preflight agree."""
    from safetensors.torch import load_file, save_file

    from portllm_edge.patches import validate_adapter_dir
    from portllm_edge.porting.preflight import run_preflight

    ad = tmp_path / "infix"
    shutil.copytree(tiny_adapters["llama"], ad)
    f = ad / "adapter_model.safetensors"
    tensors = {model_state_keys(k)[0]: v for k, v in load_file(f).items()}
    assert all(".default." in k for k in tensors)
    save_file(tensors, f)
    summary = validate_adapter_dir(ad)
    assert len(summary.lora_modules) == 4
    rep = run_preflight(ad, tiny_pairs["llama"].new)
    assert rep.ok and rep.needs_rewrite and rep.get("adapter_keys").status == "warn"


def test_a_nan_inside_a_lora_tensor_fails_the_preflight(tiny_pairs, tiny_adapters, tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    from portllm_edge.porting.preflight import run_preflight

    ad = tmp_path / "nan"
    shutil.copytree(tiny_adapters["llama"], ad)
    f = ad / "adapter_model.safetensors"
    tensors = load_file(f)
    key = sorted(k for k in tensors if "lora_B" in k)[0]
    tensors[key][1, 2] = float("nan")
    save_file(tensors, f)
    rep = run_preflight(ad, tiny_pairs["llama"].new)
    fin = rep.get("finite")
    assert not rep.ok and fin.status == "fail"
    assert key in fin.reason and "1 NaN" in fin.reason
