"""The main job on tiny real models of four families: port at NF4, verify, store with lineage, record."""

from __future__ import annotations

import json

import pytest

from portllm_edge.cli import main
from portllm_edge.errors import PortingError
from portllm_edge.history import get_run, list_runs
from portllm_edge.patches import PatchStore
from portllm_edge.porting.attach import attach_patch
from portllm_edge.porting.load import load_base_model
from portllm_edge.workflow import port


def port_patch(patch, base, **kw):
    """The port in this process (unmeasured): these tests check what is ported, not its memory."""
    return port(patch, base, isolate=False, **kw)


@pytest.fixture()
def stored(tiny_adapters, tiny_pair):
    """The family's patch imported into the (fresh) store as ``<family>-patch``."""
    name = f"{tiny_pair.family}-patch"
    PatchStore().import_dir(
        tiny_adapters[tiny_pair.family], name=name, task="sst2", source_base_id=f"{tiny_pair.family}-old"
    )
    return name


def test_port_nf4_all_families(tiny_pair, stored):
    res = port_patch(stored, str(tiny_pair.new), precision="nf4")
    assert res.precision == "nf4"
    assert res.attach.matched_tensors == res.attach.total_tensors == 8  # 2 layers x q,v x A,B
    assert res.attach.finite is True
    assert res.attach.relative_logit_change > 1e-3
    assert set(res.phases) >= {"check", "load", "attach", "save"}
    assert res.preflight.ok is True
    assert res.memory is None and res.saving is None  # in-process: never measured
    ported = PatchStore().get(res.ported_name)
    assert res.ported_name == f"{stored}@{tiny_pair.family}-new"
    cfg = json.loads((ported.adapter_dir / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == f"{tiny_pair.family}-new"
    kinds = [(e.kind, e.parent, e.precision) for e in ported.manifest.lineage]
    assert kinds == [("import", None, None), ("port", stored, "nf4")]
    assert ported.manifest.source_base.fingerprint == res.base_fingerprint
    record = get_run(res.run_id)
    assert record.kind == "port" and record.status == "ok" and record.results["precision"] == "nf4"
    assert record.inputs["patch"] == stored and record.versions["peft"]


def test_ported_patch_is_the_same_delta(tiny_pairs, tiny_adapters):
    """Training-free: the stored ported adapter's tensors are bit-identical to the source patch."""
    from safetensors.torch import load_file

    PatchStore().import_dir(tiny_adapters["qwen2"], name="q")
    res = port_patch("q", str(tiny_pairs["qwen2"].new), precision="fp32")
    src = load_file(tiny_adapters["qwen2"] / "adapter_model.safetensors")
    dst = load_file(PatchStore().get(res.ported_name).adapter_dir / "adapter_model.safetensors")
    assert src.keys() == dst.keys()
    assert all(bool((src[k] == dst[k]).all()) for k in src)


def test_zero_patch_is_a_no_op_and_fails(tiny_pairs, tmp_path):
    import sys

    sys.path.insert(0, str(tmp_path))
    from factories import build_lora_adapter
    from safetensors.torch import load_file, save_file

    out = build_lora_adapter(tiny_pairs["llama"].old, tmp_path / "zero")
    tensors = load_file(out / "adapter_model.safetensors")
    save_file(
        {k: (v * 0 if "lora_B" in k else v) for k, v in tensors.items()}, out / "adapter_model.safetensors"
    )
    loaded = load_base_model(str(tiny_pairs["llama"].new), "fp32")
    with pytest.raises(PortingError, match="did not change the output"):
        attach_patch(loaded.model, loaded.tokenizer, out)


def _no_load(monkeypatch):
    """Make every way to load weights fail the test: the in-process load and the measurement worker."""

    def refuse(*_a, **_k):
        raise AssertionError("a model was loaded")

    import portllm_edge.measure.isolated as isolated
    import portllm_edge.porting.load as load

    monkeypatch.setattr(load, "load_base_model", refuse)
    monkeypatch.setattr(isolated, "measure_job", refuse)


def test_name_collision_fails_before_any_load(capsys, monkeypatch, tiny_pairs, tiny_adapters):
    """`port P --base NEW` after a port to NEW: exit 2 on the existing name, nothing loaded, run recorded."""
    new = str(tiny_pairs["llama"].new)
    PatchStore().import_dir(tiny_adapters["llama"], name="p")
    PatchStore().import_dir(tiny_adapters["llama"], name="p@llama-new")  # what an earlier port stored
    _no_load(monkeypatch)
    code = main(["port", "p", "--base", new, "--precision", "fp32"])
    err = capsys.readouterr().err
    assert code == 2
    assert "already has 'p@llama-new'" in err and "--overwrite" in err and "--name" in err
    (run,) = list_runs("port")
    assert run.status == "failed" and "already has 'p@llama-new'" in run.results["error"]


def test_bad_eval_file_fails_before_any_load(capsys, monkeypatch, tiny_pairs, tiny_adapters, tmp_path):
    PatchStore().import_dir(tiny_adapters["llama"], name="p")
    _no_load(monkeypatch)
    missing = tmp_path / "nope.jsonl"
    argv = [
        "port",
        "p",
        "--base",
        str(tiny_pairs["llama"].new),
        "--eval-task",
        "sst2",
        "--eval-data",
        str(missing),
    ]
    assert main(argv) == 2
    assert "nope.jsonl" in capsys.readouterr().err


def test_existing_ported_name_needs_overwrite_or_name(tiny_pairs, tiny_adapters):
    new = str(tiny_pairs["llama"].new)
    PatchStore().import_dir(tiny_adapters["llama"], name="p")
    port_patch("p", new, precision="fp32")
    before = sorted(PatchStore().names())
    assert main(["port", "p", "--base", new, "--precision", "fp32"]) == 2
    assert sorted(PatchStore().names()) == before
    again = port_patch("p", new, precision="fp32", overwrite=True)
    assert again.ported_name == "p@llama-new"
    other = port_patch("p", new, precision="fp32", name="p-again")
    assert sorted(PatchStore().names()) == sorted([*before, "p-again"])
    assert other.ported_name == "p-again"


def test_port_memory_is_the_workers_not_the_callers(tiny_pairs, tiny_adapters):
    """The CLI/app/demo path: load+attach run in a worker; its peak is reported, not this process's."""
    from portllm_edge.measure.memory import HEADLINE_METRIC, read_anon

    PatchStore().import_dir(tiny_adapters["llama"], name="p")
    ballast = bytearray(512 * 2**20)  # this process now holds 512 MiB more than any tiny port needs
    ballast[::4096] = b"x" * len(ballast[::4096])
    phases: list[str] = []
    res = port("p", str(tiny_pairs["llama"].new), precision="fp32", on_phase=phases.append)
    mine = read_anon()
    assert mine is not None and res.memory is not None and res.memory.metric == HEADLINE_METRIC
    assert 0 < res.memory.peak_bytes < mine - 400 * 2**20
    assert phases[:3] == ["check", "load", "attach"] and "save" in phases
    assert res.saving is not None and res.saving.baseline_source == "estimate"
    assert res.saving.port_peak_bytes == res.memory.peak_bytes
    record = get_run(res.run_id)
    assert (
        record.results["peak_bytes"] == res.memory.peak_bytes and record.results["metric"] == HEADLINE_METRIC
    )
    del ballast


def test_interrupted_port_is_recorded(tiny_pairs, tiny_adapters):
    PatchStore().import_dir(tiny_adapters["llama"], name="p")

    def stop_at_load(phase):
        if phase == "load":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        port_patch("p", str(tiny_pairs["llama"].new), precision="fp32", on_phase=stop_at_load)
    (run,) = list_runs("port")
    assert run.status == "interrupted" and run.finished_at is not None
    assert "p@llama-new" not in PatchStore().names()


# ---- the bad inputs: one line, exit 2, file/tensor named, store unchanged ----


def _run(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err
    return code, err


def test_bad_missing_adapter_file(capsys, tiny_pairs, tiny_adapters, tmp_path):
    import shutil

    bad = tmp_path / "nofile"
    shutil.copytree(tiny_adapters["llama"], bad)
    (bad / "adapter_model.safetensors").unlink()
    code, err = _run(capsys, ["port", str(bad), "--base", str(tiny_pairs["llama"].new)])
    assert code == 2
    assert "adapter_model.safetensors" in err and "Traceback" not in err
    assert PatchStore().names() == []


def test_bad_truncated_safetensors(capsys, tiny_pairs, tiny_adapters, tmp_path):
    import shutil

    bad = tmp_path / "trunc"
    shutil.copytree(tiny_adapters["llama"], bad)
    f = bad / "adapter_model.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    code, err = _run(capsys, ["port", str(bad), "--base", str(tiny_pairs["llama"].new)])
    assert code == 2
    assert "adapter_model.safetensors" in err and "Traceback" not in err
    assert PatchStore().names() == []


def test_bad_hidden_size_mismatch(capsys, tiny_pairs, tiny_adapters):
    PatchStore().import_dir(tiny_adapters["llama"], name="llama-p")
    before = PatchStore().names()
    # gemma2's tiny base has the same hidden size but another architecture; a real mismatch:
    import shutil
    import tempfile
    from pathlib import Path

    from factories import build_model

    other = Path(tempfile.mkdtemp()) / "wide"
    import factories

    old_hidden = factories.HIDDEN
    try:
        factories.HIDDEN = 128
        build_model("llama", other)
    finally:
        factories.HIDDEN = old_hidden
    code, err = _run(capsys, ["port", "llama-p", "--base", str(other)])
    shutil.rmtree(other.parent, ignore_errors=True)
    assert code == 2
    assert "hidden" in err.lower() or "in_features" in err
    assert "Traceback" not in err
    assert PatchStore().names() == before


def test_bad_unknown_patch_name(capsys, tiny_pairs, tiny_adapters):
    PatchStore().import_dir(tiny_adapters["llama"], name="llama-patch")
    code, err = _run(capsys, ["port", "llama-pach", "--base", str(tiny_pairs["llama"].new)])
    assert code == 2
    assert "llama-pach" in err and "llama-patch" in err
    assert len(err.strip().splitlines()) == 1
