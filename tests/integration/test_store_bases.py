"""Bases in the model store resolve everywhere: the old base a patch records is found without --old."""

from __future__ import annotations

import json
import shutil

from portllm_edge.cli import main
from portllm_edge.models.fingerprint import fingerprint_weights
from portllm_edge.models.refs import resolve_base
from portllm_edge.models.store import import_model_folder
from portllm_edge.patches import PatchStore


def _store_pair_and_patch(tiny_pairs, tiny_adapters, tmp_path, family="mistral"):
    """The pair as store models ``tiny-v1``/``tiny-v2``; the patch names its base by store name, as after `make demo`."""
    pair = tiny_pairs[family]
    import_model_folder(pair.old, "tiny-v1")
    import_model_folder(pair.new, "tiny-v2")
    adapter = tmp_path / "adapter"
    shutil.copytree(tiny_adapters[family], adapter)
    cfg_path = adapter / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = "tiny-v1"  # a store name, not a folder
    cfg_path.write_text(json.dumps(cfg))
    v1 = resolve_base("tiny-v1")
    fp = fingerprint_weights(list(v1.weight_files))
    PatchStore().import_dir(adapter, name="tags", source_base_id="tiny-v1", source_base_fingerprint=fp)
    return pair


def test_check_finds_the_old_base_in_the_store(tiny_pairs, tiny_adapters, tmp_path, capsys):
    _store_pair_and_patch(tiny_pairs, tiny_adapters, tmp_path)
    code = main(["check", "tags", "--base", "tiny-v2"])
    out = capsys.readouterr()
    assert code == 0, out.err
    text = out.out + out.err
    assert "old base: tiny-v1 (found in the store: fingerprint)" in text
    assert "projected/patch" in text and "median" in text  # the drift table
    assert "not a local folder" not in text and "tokenizer is unknown" not in text


def test_check_json_names_how_the_old_base_was_found(tiny_pairs, tiny_adapters, tmp_path, capsys):
    _store_pair_and_patch(tiny_pairs, tiny_adapters, tmp_path)
    assert main(["check", "tags", "--base", "tiny-v2", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["old_base_source"] == "store: fingerprint" and doc["drift"] is not None
    assert main(["check", "tags", "--base", "tiny-v2", "--old-base", "tiny-v1", "--json", "--no-drift"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["old_base_source"] == "given" and doc["drift"] is None


def test_a_ported_patch_finds_its_original_base(tiny_pairs, tiny_adapters, tmp_path):
    """A patch ported onto v2 records v2 as its base; checked against v2 again, its lineage's v1 is the old base."""
    from portllm_edge.workflow import port
    from portllm_edge.workflow.resolve import resolve

    _store_pair_and_patch(tiny_pairs, tiny_adapters, tmp_path)
    res = port("tags", "tiny-v2", precision="fp32", isolate=False)
    assert res.old_base_id == "tiny-v1"
    r = resolve(res.ported_name, "tiny-v2")
    assert r.old_base is not None and r.old_base.model_id == "tiny-v1"
