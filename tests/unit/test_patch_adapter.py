"""validate_adapter_dir on real tiny peft adapters, and on copies broken one way each."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from bad_inputs import cases

from portllm_edge.errors import PatchError
from portllm_edge.patches import validate_adapter_dir


@pytest.fixture
def adapter(tiny_adapters, tmp_path: Path) -> Path:
    dst = tmp_path / "adapter"
    shutil.copytree(tiny_adapters["llama"], dst)
    return dst


@pytest.mark.parametrize("family", ["llama", "mistral", "gemma2", "qwen2"])
def test_summary_of_each_family(tiny_adapters, tiny_pairs, family: str) -> None:
    s = validate_adapter_dir(tiny_adapters[family])
    assert (s.peft_type, s.r, s.lora_alpha) == ("LORA", 4, 8.0)
    assert sorted(s.target_modules) == ["q_proj", "v_proj"]  # peft saves a set: any order
    assert s.scaling == 2.0
    # 2 layers x (q_proj, v_proj), each with an A and a B
    assert len(s.lora_modules) == 4 and s.num_tensors == 8
    assert all(m.endswith(("q_proj", "v_proj")) for m in s.lora_modules)
    assert s.base_model_name_or_path == str(tiny_pairs[family].old)
    assert s.dtypes == ("F32",)
    assert s.nbytes > 0


@pytest.mark.parametrize(
    ("breaker", "words"),
    [
        (cases.break_missing_weights, ["no adapter_model.safetensors"]),
        (cases.break_truncated, ["truncated"]),
        (cases.break_garbage_header, ["not valid JSON"]),
        (cases.break_empty, ["is empty"]),
        (cases.break_nan, ["lora_B", "1 NaN and 0 Inf"]),
        (cases.break_inf, ["lora_B", "0 NaN and 1 Inf"]),
        (cases.break_wrong_r, ["lora_A", "has rank 4", "`r` is 8"]),
        (cases.break_unknown_peft_type, ["`peft_type` is 'IA3'"]),
        (cases.break_missing_config, ["no adapter_config.json"]),
        (cases.break_pickled_only, ["only pickled weights (adapter_model.bin)"]),
        (cases.break_missing_lora_b, ["no matching `lora_B`"]),
    ],
    ids=lambda v: getattr(v, "__name__", "")[6:] or None,
)
def test_broken_adapters_are_refused(adapter: Path, breaker, words) -> None:
    breaker(adapter)
    with pytest.raises(PatchError) as ei:
        validate_adapter_dir(adapter)
    msg = ei.value.message
    assert str(adapter) in msg
    for w in words:
        assert w in msg
    assert ei.value.hint


def test_rank_pattern_is_honoured(adapter: Path) -> None:
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    cfg["r"] = 16
    cfg["rank_pattern"] = {"q_proj": 4, "v_proj": 4}
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))
    assert validate_adapter_dir(adapter).r == 16
    cfg["rank_pattern"] = {"q_proj": 4}  # v_proj falls back to r=16, but its tensors have rank 4
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(PatchError, match=r"v_proj\.lora_A.*`r` is 16"):
        validate_adapter_dir(adapter)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"r": 0}, "`r`"),
        ({"r": "4"}, "`r`"),
        ({"lora_alpha": None}, "`lora_alpha`"),
        ({"target_modules": 3}, "`target_modules`"),
        ({"modules_to_save": "lm_head"}, "`modules_to_save`"),
        ({"rank_pattern": {"q_proj": -1}}, "`rank_pattern`"),
    ],
)
def test_config_fields_are_typed(adapter: Path, changes, field: str) -> None:
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    cfg.update(changes)
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(PatchError, match=field):
        validate_adapter_dir(adapter)


def test_not_a_folder(tmp_path: Path) -> None:
    with pytest.raises(PatchError, match="adapter folder not found"):
        validate_adapter_dir(tmp_path / "nope")
    (tmp_path / "f").write_text("x")
    with pytest.raises(PatchError, match="is a file"):
        validate_adapter_dir(tmp_path / "f")


def test_no_lora_tensors(adapter: Path) -> None:
    import torch
    from safetensors.torch import save_file

    save_file({"model.embed_tokens.weight": torch.zeros(2, 2)}, str(adapter / "adapter_model.safetensors"))
    with pytest.raises(PatchError, match="holds no LoRA tensors"):
        validate_adapter_dir(adapter)


def test_huge_or_deep_config_refused(adapter: Path) -> None:
    (adapter / "adapter_config.json").write_bytes(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(PatchError, match="nested too deeply"):
        validate_adapter_dir(adapter)
    with open(adapter / "adapter_config.json", "wb") as fh:
        fh.truncate(17 * 1024 * 1024)  # sparse: 17 MiB of zeros
    with pytest.raises(PatchError, match="limit for this JSON file"):
        validate_adapter_dir(adapter)
