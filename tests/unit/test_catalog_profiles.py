"""Profiles: every built-in file validates, numbers agree with arithmetic and the meta device, typos get hints."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from portllm_edge.catalog import load_catalog, load_family_file, load_hardware_file
from portllm_edge.errors import ConfigError
from portllm_edge.planning import ModelArch

MiB = 1024**2


def test_builtin_profiles_cover_the_issue():
    cat = load_catalog()
    names = set(cat.version_names())
    for required in [
        "Mistral-7B-v0.1", "Mistral-7B-v0.2", "Mistral-7B-v0.3", "Llama-2-7B", "Llama-3-8B", "Llama-3.1-8B",
        "Gemma-2-2B", "Gemma-2-9B", "Qwen2-0.5B", "Qwen2-1.5B", "Qwen2-7B", "Qwen2.5-0.5B", "Qwen2.5-1.5B",
        "Qwen2.5-7B", "SmolLM2-135M", "SmolLM2-360M", "SmolLM2-1.7B",
    ]:  # fmt: skip
        assert required in names
    kinds = {h.name: h.kind for h in cat.hardware.values()}
    assert kinds["jetson-orin-nano-8gb"] == "unified" and kinds["a100-80gb"] == "cuda"
    gib = sorted(round(h.memory_bytes / 1024**3) for h in cat.hardware.values() if h.kind == "cuda")
    assert {8, 12, 16, 24, 15, 40, 80} <= set(gib)


def test_stated_parameters_equal_arithmetic():
    for _fam, ver in load_catalog().versions():
        arch = ModelArch.from_config(ver.architecture.to_config())
        assert arch.total_params == ver.parameters, ver.name


def test_known_architecture_facts():
    cat = load_catalog()
    v03 = cat.find_version("mistralai/Mistral-7B-v0.3")[1].architecture  # type: ignore[index]
    assert v03.vocab_size == 32768 and v03.sliding_window is None
    assert cat.find_version("Llama-3.1-8B")[1].architecture.rope_scaling["rope_type"] == "llama3"  # type: ignore[index]
    g2 = cat.find_version("Gemma-2-2B")[1].architecture  # type: ignore[index]
    assert g2.tie_word_embeddings and g2.final_logit_softcapping == 30.0 and g2.sliding_window == 4096
    for name, tied in [("Qwen2.5-0.5B", True), ("Qwen2.5-1.5B", True), ("Qwen2.5-7B", False)]:
        assert cat.find_version(name)[1].architecture.tie_word_embeddings is tied  # type: ignore[index]


@pytest.mark.parametrize(
    "name", ["Mistral-7B-v0.3", "Gemma-2-2B", "Qwen2.5-0.5B", "SmolLM2-135M", "Llama-2-7B"]
)
def test_arithmetic_matches_meta_device(name):
    """accelerate estimate-memory's method: build on the meta device, sum numel (tied counted once)."""
    torch = pytest.importorskip("torch")
    from transformers import AutoConfig, AutoModelForCausalLM

    ver = load_catalog().find_version(name)[1]  # type: ignore[index]
    cfg = ver.architecture.to_config()
    hf = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf)
    meta = sum(p.numel() for p in model.parameters())  # parameters() yields tied tensors once
    assert meta == ver.parameters == ModelArch.from_config(ver.architecture.to_config()).total_params


def _safetensors_numel(folder: Path) -> int:
    total = 0
    for f in folder.glob("*.safetensors"):
        with f.open("rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        for key, meta in header.items():
            if key != "__metadata__":
                count = 1
                for d in meta["shape"]:
                    count *= d
                total += count
    return total


def test_arithmetic_matches_saved_tiny_models(tiny_pairs):
    for family, pair in tiny_pairs.items():
        for folder in (pair.old, pair.new):
            cfg = json.loads((folder / "config.json").read_text())
            assert ModelArch.from_config(cfg).total_params == _safetensors_numel(folder), (family, folder)


def _hw(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "mine.toml"
    p.write_text(body)
    return p


def test_unknown_key_says_did_you_mean_with_file(tmp_path):
    p = _hw(tmp_path, 'name = "x"\ndisplay_name = "X"\nkind = "cuda"\nmemroy = "8GiB"\n')
    with pytest.raises(ConfigError) as err:
        load_hardware_file(p)
    assert str(p) in err.value.message and "`memroy`" in err.value.message
    assert err.value.hint == "did you mean `memory`?"


def test_nested_unknown_key_in_model_file(tmp_path):
    src = (Path(__file__).resolve().parents[2] / "profiles" / "models" / "smollm2.toml").read_text()
    p = tmp_path / "smol.toml"
    p.write_text(src.replace("num_key_value_heads = 3", "num_kv_heads = 3", 1))
    with pytest.raises(ConfigError) as err:
        load_family_file(p)
    assert "versions[0].architecture.num_kv_heads" in err.value.message
    assert err.value.hint == "did you mean `num_key_value_heads`?"


@pytest.mark.parametrize(
    ("memory", "reserved", "fragment"),
    [
        ('"-8GiB"', '"0"', "negative"),
        ('"8GiB"', '"9GiB"', "less than `memory`"),
        ('"lots"', '"0"', "can't read"),
    ],
)
def test_bad_memory_rejected(tmp_path, memory, reserved, fragment):
    p = _hw(
        tmp_path, f'name = "x"\ndisplay_name = "X"\nkind = "cuda"\nmemory = {memory}\nreserved = {reserved}\n'
    )
    with pytest.raises(ConfigError, match=fragment):
        load_hardware_file(p)


def test_user_profiles_extend_and_override(portllm_home):
    hw = portllm_home / "profiles" / "hardware"
    hw.mkdir(parents=True)
    (hw / "rtx2060.toml").write_text(
        'name = "rtx-2060-6gb"\ndisplay_name = "RTX 2060"\nkind = "cuda"\nmemory = "6GiB"\nreserved = "256MiB"\ncompute_capability = "7.5"\nbf16 = false\n'
    )
    (hw / "t4.toml").write_text('name = "t4-16gb"\ndisplay_name = "my T4"\nkind = "cuda"\nmemory = "15GiB"\n')
    cat = load_catalog()
    assert cat.hardware_profile("RTX-2060-6GB").available_bytes == 6 * 1024 * MiB - 256 * MiB
    assert cat.hardware_profile("t4-16gb").display_name == "my T4"


def test_unknown_hardware_profile_hint():
    with pytest.raises(ConfigError) as err:
        load_catalog().hardware_profile("rtx-3060-12")
    assert err.value.hint == "did you mean `rtx-3060-12gb`?"
