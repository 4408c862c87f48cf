"""Base references: folders, the model store, GGUF checks, pickle refusal, fingerprints."""

from __future__ import annotations

import shutil

import pytest

from portllm_edge import paths
from portllm_edge.errors import BaseModelError
from portllm_edge.models import resolve_base
from portllm_edge.models.fingerprint import fingerprint_weights
from portllm_edge.models.gguf import check_gguf_file, default_name


def test_folder_resolves_with_its_shards(tiny_pairs):
    base = resolve_base(str(tiny_pairs["llama"].old))
    assert base.kind == "folder"
    assert [p.name for p in base.weight_files] == ["model.safetensors"]
    assert base.config()["model_type"] == "llama"


def test_store_name_resolves(tiny_pairs):
    dest = paths.models_dir() / "tiny-qwen"
    shutil.copytree(tiny_pairs["qwen2"].new, dest)
    base = resolve_base("tiny-qwen")
    assert (base.kind, base.model_id, base.path) == ("store", "tiny-qwen", dest)


def test_unknown_name_suggests_close_store_entry(tiny_pairs):
    shutil.copytree(tiny_pairs["qwen2"].new, paths.models_dir() / "tiny-qwen")
    with pytest.raises(BaseModelError) as err:
        resolve_base("tiny-qwn")
    assert "tiny-qwn" in err.value.message
    assert "did you mean 'tiny-qwen'" in (err.value.hint or "")


def test_folder_without_config_is_refused(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(BaseModelError, match=r"no config\.json"):
        resolve_base(str(tmp_path))


def test_pickle_only_folder_is_refused_with_conversion_hint(tiny_pairs, tmp_path):
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_pairs["llama"].old, folder)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"not really")
    with pytest.raises(BaseModelError) as err:
        resolve_base(str(folder))
    assert "pytorch_model.bin" in err.value.message
    assert "convert" in (err.value.hint or "")


def test_offline_hub_id_not_in_cache_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(BaseModelError) as err:
        resolve_base("some-org/some-model", online=False)
    assert "some-org/some-model" in err.value.message
    assert "online" in (err.value.hint or "")


def test_not_a_gguf_file(tmp_path):
    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(b"PK\x03\x04 zip, not gguf")
    with pytest.raises(BaseModelError, match="not a GGUF file"):
        check_gguf_file(bogus)
    with pytest.raises(BaseModelError, match="not a GGUF file"):
        resolve_base(str(bogus))


def test_default_gguf_name_drops_quant_suffix(tmp_path):
    assert default_name(tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf") == "SmolLM2-135M-Instruct"
    assert default_name(tmp_path / "llama-3-8b-f16.gguf") == "llama-3-8b"


def test_fingerprint_tells_versions_apart_and_is_stable(tiny_pairs, tmp_path):
    pair = tiny_pairs["qwen2"]
    old = fingerprint_weights([pair.old / "model.safetensors"])
    new = fingerprint_weights([pair.new / "model.safetensors"])
    copy = tmp_path / "copy.safetensors"
    shutil.copy(pair.old / "model.safetensors", copy)
    assert old.startswith("w1:") and len(old) == 35
    assert old != new
    assert fingerprint_weights([copy]) == old


def test_models_import_folder_cli(tiny_pairs, capsys):
    from portllm_edge.cli import main

    assert main(["models", "import", str(tiny_pairs["gemma2"].new), "--name", "g2"]) == 0
    dest = paths.models_dir() / "g2"
    assert sorted(p.name for p in dest.iterdir()) == [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    assert resolve_base("g2").config()["model_type"] == "gemma2"
    capsys.readouterr()
    assert main(["models", "import", str(tiny_pairs["gemma2"].new), "--name", "g2"]) == 2
    assert "already has 'g2'" in capsys.readouterr().err
    assert main(["models", "import", str(tiny_pairs["gemma2"].new), "--name", "../g2"]) == 2
