"""The fleet port on tiny real models: every patch of OLD onto NEW with one load, swaps checked against peft."""

from __future__ import annotations

import json

import pytest
from factories import build_lora_adapter
from safetensors.torch import load_file, save_file

from portllm_edge.cli import main
from portllm_edge.errors import StoreError
from portllm_edge.history import get_run, list_runs, record_run
from portllm_edge.models.fingerprint import fingerprint_weights
from portllm_edge.models.refs import resolve_base
from portllm_edge.patches import LineageEntry, PatchStore
from portllm_edge.patches.manifest import files_checksum
from portllm_edge.porting.attach import PatchSwapper, attach_patch, probe_logits
from portllm_edge.porting.load import load_base_model
from portllm_edge.workflow.fleet import lineage_base, port_fleet

SST2_ROWS = [
    ("a charming and affecting journey", 1),
    ("bleak and desperate", 0),
    ("astounding and beautiful", 1),
    ("labored gags and no wit", 0),
    ("a gorgeous , witty film", 1),
    ("dull , tedious and long", 0),
]


@pytest.fixture(scope="module")
def llama_adapters(tiny_pairs, tmp_path_factory):
    """Three patches of the tiny llama's old base: q/v (two seeds) and q/k/v/o."""
    root = tmp_path_factory.mktemp("fleet-adapters")
    old = tiny_pairs["llama"].old
    return {
        "a": build_lora_adapter(old, root / "a", seed=1),
        "b": build_lora_adapter(
            old, root / "b", seed=2, target_modules=("q_proj", "k_proj", "v_proj", "o_proj")
        ),
        "c": build_lora_adapter(old, root / "c", seed=3),
    }


@pytest.mark.parametrize("precision", ["fp32", "nf4"])
def test_swapper_outputs_equal_a_fresh_attach(tiny_pairs, llama_adapters, precision):
    """Swapping patches on one loaded base gives, for each, the logits of that patch attached alone (peft)."""
    new = str(tiny_pairs["llama"].new)
    loaded = load_base_model(new, precision)
    swapper = PatchSwapper(loaded.model, loaded.tokenizer)
    swapped = {}
    for key in ("a", "b", "c", "a"):  # b targets k/o too: after it, c and a must not keep b's k/o deltas
        res = swapper.attach(llama_adapters[key])
        assert res.report.matched_tensors == res.report.total_tensors == (16 if key == "b" else 8)
        swapped[key] = probe_logits(res.model, loaded.tokenizer)
        assert len(swapper.model.peft_config) == 1
    for key, adapter in llama_adapters.items():
        fresh = load_base_model(new, precision)
        expected = probe_logits(attach_patch(fresh.model, fresh.tokenizer, adapter).model, fresh.tokenizer)
        assert (swapped[key] - expected).abs().max().item() < 1e-5, key


def test_swapper_refuses_a_repacked_4bit_base(tiny_pairs):
    from portllm_edge.errors import PortingError
    from portllm_edge.porting.quant import repacked_modules

    loaded = load_base_model(str(tiny_pairs["llama"].new), "nf4")
    for mod in loaded.model.modules():  # what bitsandbytes does unless load_base_model switches it off
        if hasattr(mod, "support_avx512bf16_for_cpu"):
            mod.support_avx512bf16_for_cpu = True
    probe_logits(loaded.model, loaded.tokenizer)
    if not repacked_modules(loaded.model):
        pytest.skip("bitsandbytes does not repack 4-bit weights on this CPU")
    with pytest.raises(PortingError, match="repacked by a CPU forward pass"):
        PatchSwapper(loaded.model, loaded.tokenizer)


def _import_fleet(tiny_pairs, llama_adapters, tmp_path):
    """a, b, c on llama-old (fingerprint recorded); q on qwen2-old; n with no fingerprint."""
    store = PatchStore()
    old = tiny_pairs["llama"].old
    data = tmp_path / "sst2.tsv"
    data.write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in SST2_ROWS))
    train_run = record_run("train", {"task": "sst2", "data": str(data), "name": "a"}, {"steps": 1})
    lineage = [LineageEntry(kind="train", base_id="llama-old", run_id=train_run)]
    store.import_dir(llama_adapters["a"], name="a", task="sst2", source_base_id=str(old), lineage=lineage)
    for key in ("b", "c"):
        store.import_dir(llama_adapters[key], name=key, source_base_id=str(old))
    qwen = build_lora_adapter(tiny_pairs["qwen2"].old, tmp_path / "q")
    store.import_dir(qwen, name="q", source_base_id=str(tiny_pairs["qwen2"].old))
    store.import_dir(llama_adapters["c"], name="n")  # records no base fingerprint: never matched
    return data


def test_fleet_ports_every_patch_of_old(tiny_pairs, llama_adapters, tmp_path):
    pair = tiny_pairs["llama"]
    data = _import_fleet(tiny_pairs, llama_adapters, tmp_path)
    old_fp = fingerprint_weights(list(resolve_base(str(pair.old)).weight_files))
    record_run(  # a's accuracy on OLD, on the same data: the "before" column
        "eval",
        {"task": "sst2", "data": str(data), "patch": "a", "base_id": "llama-old"},
        {"accuracy": 0.25},
    )
    seen = []
    res = port_fleet(str(pair.old), str(pair.new), precision="fp32", on_item=seen.append)
    assert [i.patch for i in res.items] == ["a", "b", "c"] == [i.patch for i in seen]
    assert [i.result for i in res.items] == ["ported"] * 3
    assert res.no_fingerprint == ["n"]
    assert res.old_fingerprint == old_fp and res.precision == "fp32" and res.load_seconds > 0
    a, b = res.items[:2]
    assert a.accuracy_before == 0.25 and a.eval_task == "sst2" and a.eval_n == len(SST2_ROWS)
    assert a.accuracy_after is not None and 0.0 <= a.accuracy_after <= 1.0
    assert b.accuracy_after is None and b.reason == "no task recorded"
    store = PatchStore()
    for item in res.items:
        assert item.ported_name == f"{item.patch}@llama-new"
        ported = store.get(item.ported_name)
        last = ported.manifest.lineage[-1]
        assert (
            last.kind == "port"
            and last.parent == item.patch
            and last.base_fingerprint == res.base_fingerprint
        )
        assert last.parent_checksum == files_checksum(store.get(item.patch).manifest.files)
        src = load_file(llama_adapters[item.patch] / "adapter_model.safetensors")
        dst = load_file(ported.adapter_dir / "adapter_model.safetensors")
        assert src.keys() == dst.keys() and all(bool((src[k] == dst[k]).all()) for k in src)
    fleet = get_run(res.run_id)
    assert fleet.kind == "fleet" and fleet.status == "ok" and fleet.results["counts"]["ported"] == 3
    ports = [r for r in list_runs("port") if r.inputs.get("fleet_run") == res.run_id]
    assert sorted(r.inputs["patch"] for r in ports) == ["a", "b", "c"]
    assert all(r.status == "ok" for r in ports)
    assert get_run(a.run_id).results["evaluation"]["accuracy"] == a.accuracy_after

    again = port_fleet(str(pair.old), str(pair.new), precision="fp32")  # a rerun finds them all
    assert [(i.result, i.ported_name) for i in again.items] == [
        ("already ported", f"{k}@llama-new") for k in "abc"
    ]
    assert again.load_seconds is None  # nothing to port: NEW is never loaded


def test_fleet_skips_a_failing_patch_and_goes_on(tiny_pairs, llama_adapters, tmp_path):
    pair = tiny_pairs["llama"]
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "adapter_config.json").write_text((llama_adapters["a"] / "adapter_config.json").read_text())
    tensors = load_file(llama_adapters["a"] / "adapter_model.safetensors")
    key = next(k for k in tensors if "lora_A" in k)
    tensors[key] = tensors[key][:, :32].contiguous()  # in_features 32 on a 64-wide base
    save_file(tensors, bad / "adapter_model.safetensors")
    store = PatchStore()
    store.import_dir(bad, name="a-bad", source_base_id=str(pair.old))
    store.import_dir(llama_adapters["c"], name="c", source_base_id=str(pair.old))
    res = port_fleet(str(pair.old), str(pair.new), precision="fp32")
    assert [(i.patch, i.result) for i in res.items] == [("a-bad", "skipped"), ("c", "ported")]
    assert "a-bad" in res.items[0].reason or key.split(".lora_A")[0] in res.items[0].reason
    assert get_run(res.items[0].run_id).status == "failed"
    assert set(store.names()) == {"a-bad", "c", "c@llama-new"}


def test_fleet_cli_table_and_refusals(tiny_pairs, llama_adapters, capsys):
    pair = tiny_pairs["llama"]
    PatchStore().import_dir(llama_adapters["c"], name="c", source_base_id=str(pair.old))
    assert main(["port", "--all", "--base", str(pair.new)]) == 2
    assert "`--all` and `--from` go together" in capsys.readouterr().err
    assert main(["port", "--all", "--from", str(pair.old), "--base", str(pair.new), "--name", "x"]) == 2
    assert "does not take --name" in capsys.readouterr().err
    assert main(["port", "--all", "--from", str(pair.new), "--base", str(pair.new)]) == 2
    assert "hold the same weights" in capsys.readouterr().err
    code = main(["port", "--all", "--from", str(pair.old), "--base", str(pair.new), "--precision", "fp32"])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["patch", "result", "acc", "before", "acc", "after", "seconds"]
    assert lines[1].split()[:4] == ["c", "ported", "-", "-"]
    assert lines[2].startswith("1 ported: llama-old -> llama-new")
    code = main(["port", "--all", "--from", str(pair.old), "--base", str(pair.new), "--json"])
    rec = json.loads(capsys.readouterr().out)
    assert (
        code == 0 and rec["counts"]["already ported"] == 1 and rec["items"][0]["ported_name"] == "c@llama-new"
    )


def test_lineage_base_is_found_by_fingerprint(tiny_pairs, llama_adapters, tmp_path):
    import shutil

    pair = tiny_pairs["llama"]
    moved = tmp_path / "llama-old-copy"
    shutil.copytree(pair.old, moved)
    store = PatchStore()
    store.import_dir(llama_adapters["a"], name="a", source_base_id=str(moved))
    store.import_dir(llama_adapters["c"], name="n")
    assert lineage_base("a") == str(moved)
    shutil.copy2(
        pair.new / "model.safetensors", moved / "model.safetensors"
    )  # the path now holds other weights
    with pytest.raises(StoreError, match="is not here"):
        lineage_base("a")
    with pytest.raises(StoreError, match="records no base fingerprint"):
        lineage_base("n")
