"""`portllm-edge patch ...` in-process: outputs, JSON shapes, exit codes, convert."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from bad_inputs import cases

from portllm_edge import paths
from portllm_edge.cli import main
from portllm_edge.patches import PatchStore


def run(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out = capsys.readouterr()
    paths.set_home(None)
    return code, out.out, out.err


def test_import_list_show_verify_export_remove(capsys, tiny_adapters, tmp_path: Path) -> None:
    src = tiny_adapters["mistral"]
    code, out, err = run(capsys, "patch", "import", str(src), "--name", "m1", "--task", "sst2")
    assert code == 0, err
    assert "imported 'm1': LoRA r=4 alpha=8" in out

    code, out, _ = run(capsys, "patch", "list")
    assert code == 0 and "m1" in out and "sst2" in out
    code, out, _ = run(capsys, "patch", "list", "--json")
    listed = json.loads(out)
    assert [m["name"] for m in listed] == ["m1"] and listed[0]["adapter"]["r"] == 4

    code, out, _ = run(capsys, "patch", "show", "m1", "--json")
    shown = json.loads(out)
    assert shown["task"] == "sst2" and shown["source_base"]["model_type"] == "mistral"
    assert Path(shown["adapter_dir"]).is_dir() and shown["lineage"][0]["kind"] == "import"
    code, out, _ = run(capsys, "patch", "show", "m1")
    assert "r=4 alpha=8" in out and "adapter_model.safetensors" in out

    code, out, _ = run(capsys, "patch", "verify", "m1")
    assert code == 0 and "1 entry consistent" in out
    code, out, _ = run(capsys, "patch", "verify", "--all", "--json")
    assert code == 0 and json.loads(out) == [
        {"name": "m1", "path": str(PatchStore().root / "m1"), "kind": "entry", "ok": True, "problems": []}
    ]
    code, _, err = run(capsys, "patch", "verify", "m1", "--all")
    assert code == 2 and "not both" in err

    dest = tmp_path / "exported"
    code, out, _ = run(capsys, "patch", "export", "m1", str(dest))
    assert code == 0 and (dest / "manifest.json").is_file() and (dest / "adapter_model.safetensors").is_file()

    code, _, err = run(capsys, "patch", "remove", "m1")  # stdin is not a terminal under pytest
    assert code == 2 and "--yes" in err and PatchStore().names() == ["m1"]
    code, out, _ = run(capsys, "patch", "remove", "m1", "--yes")
    assert code == 0 and "removed 'm1'" in out and PatchStore().names() == []
    code, out, _ = run(capsys, "patch", "list")
    assert code == 0 and "no patches" in out


def test_verify_clean_and_empty(capsys, tiny_adapters) -> None:
    code, out, _ = run(capsys, "patch", "verify", "--all")
    assert code == 0 and "empty" in out
    store = PatchStore()
    store.import_dir(tiny_adapters["llama"], name="p")
    (store.root / ".tmp-zz").mkdir()
    code, out, _ = run(capsys, "patch", "verify", "--all")
    assert code == 0 and "leftover" in out and ".tmp-zz" in out
    code, out, _ = run(capsys, "patch", "verify", "--all", "--clean")
    assert code == 0 and "clean: removed" in out and not (store.root / ".tmp-zz").exists()


def test_home_flag_selects_store(capsys, tiny_adapters, tmp_path: Path) -> None:
    other = tmp_path / "other-home"
    code, _, err = run(
        capsys, "--home", str(other), "patch", "import", str(tiny_adapters["qwen2"]), "--name", "q"
    )
    assert code == 0, err
    assert (other / "patches" / "q" / "manifest.json").is_file()
    assert PatchStore().names() == []


def test_convert_pickled_adapter(capsys, tiny_adapters, tmp_path: Path) -> None:
    d = tmp_path / "pickled"
    shutil.copytree(tiny_adapters["gemma2"], d)
    cases.break_pickled_only(d)
    out_dir = tmp_path / "converted"
    code, out, err = run(capsys, "patch", "convert", str(d), "--out", str(out_dir))
    assert code == 0, err
    assert "weights_only=True" in out and "8 tensors" in out
    assert not (out_dir / "adapter_model.bin").exists()
    code, _, err = run(capsys, "patch", "import", str(out_dir), "--name", "g")
    assert code == 0, err
    from portllm_edge.patches.store import sha256_file

    stored = PatchStore().get("g").manifest.files["adapter_model.safetensors"]
    assert stored == sha256_file(out_dir / "adapter_model.safetensors")
    # the converted tensors are bit-identical to the original safetensors
    import torch
    from safetensors.torch import load_file

    a = load_file(str(tiny_adapters["gemma2"] / "adapter_model.safetensors"))
    b = load_file(str(out_dir / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    code, out, err = run(capsys, "patch", "convert", str(d))  # in place
    assert code == 0 and (d / "adapter_model.safetensors").is_file()
    code, _, err = run(capsys, "patch", "convert", str(d))
    assert code == 2 and "already exists" in err


@pytest.mark.parametrize("argv", [("patch", "convert", "{tmp}/nope"), ("patch", "convert", "{tmp}")])
def test_convert_refusals(capsys, tmp_path: Path, argv) -> None:
    code, _, err = run(capsys, *(a.replace("{tmp}", str(tmp_path)) for a in argv))
    assert code == 2 and "Traceback" not in err and "Fix:" in err


def test_newer_manifest_warns_on_one_line(capsys, tiny_adapters, tmp_path: Path) -> None:
    store = PatchStore()
    store.import_dir(tiny_adapters["llama"], name="p")
    exported = store.export("p", tmp_path / "exp")
    data = json.loads((exported / "manifest.json").read_text())
    data["schema_version"] = 2
    data["signed_by"] = "future"
    (exported / "manifest.json").write_text(json.dumps(data))
    code, _out, err = run(capsys, "patch", "import", str(exported), "--name", "p2")
    assert code == 0, err
    lines = [line for line in err.splitlines() if line]
    assert all(line.startswith("warning: ") for line in lines) and len(lines) == 2
    assert "signed_by" in err and "schema_version 2" in err
    assert PatchStore().get("p2").manifest.schema_version == 1


def test_archive_export_import_via_cli(capsys, tiny_adapters, tmp_path: Path) -> None:
    PatchStore().import_dir(tiny_adapters["llama"], name="p", task="sst2")
    arc = tmp_path / "p.tar.gz"
    code, out, err = run(capsys, "patch", "export", "p", str(arc))
    assert code == 0 and arc.is_file(), err
    # the serve line passed the tarball to PeftModel.from_pretrained, which loads a folder only:
    # it now unpacks the archive and loads the folder inside (run here; peft reads its config)
    import shlex
    import subprocess

    from peft import PeftConfig

    serve = next(line for line in out.splitlines() if line.startswith("serve with: "))[len("serve with: ") :]
    unpack, load = serve.split(" && ")
    assert unpack == f"tar -xf {arc} -C {tmp_path}"
    assert load.endswith(f'{str(tmp_path / "p")!r})"')
    subprocess.run(shlex.split(unpack), check=True)
    assert PeftConfig.from_pretrained(str(tmp_path / "p")).r == 4
    code, out, err = run(capsys, "patch", "import", str(arc), "--name", "p-copy")
    assert code == 0, err
    assert "from archive" in out
    assert PatchStore().get("p-copy").manifest.task == "sst2"


def test_patch_list_says_what_its_port_count_counts(capsys, tiny_adapters) -> None:
    """The column was headed `ports`; it counts the port steps in the patch's own lineage
    (how many base updates the patch has been carried across), not the ported copies made of it."""
    from portllm_edge.patches.manifest import LineageEntry

    store = PatchStore()
    src = tiny_adapters["llama"]
    store.import_dir(src, name="p")
    once = [LineageEntry(kind="import"), LineageEntry(kind="port", parent="p", base_id="v2")]
    store.import_dir(src, name="p-v2", lineage=once)
    twice = [*once, LineageEntry(kind="port", parent="p-v2", base_id="v3")]
    store.import_dir(src, name="p-v3", lineage=twice)
    code, out, _ = run(capsys, "patch", "list")
    assert code == 0
    lines = out.splitlines()
    head = next(line for line in lines if "name" in line)
    assert "times ported" in head and " ports " not in head
    col = head.index("times ported")
    counts = {
        line.split()[0]: line[col : col + 12].strip()
        for line in lines
        if line.split()[:1] in (["p"], ["p-v2"], ["p-v3"])
    }
    assert counts == {"p": "0", "p-v2": "1", "p-v3": "2"}
    code, out, _ = run(capsys, "patch", "list", "--help")
    assert "times ported: the port steps in the patch's own lineage" in " ".join(out.split())


def test_patch_list_fits_100_columns_with_every_name_whole(capsys, tiny_adapters) -> None:
    """`patch list` was 159 columns when piped (a 100-column terminal cut the names): it now fits
    100 columns, the name (the field users type) whole on one line, the other columns wrapped."""
    store = PatchStore()
    long_name = "sst2-smollm2-135m-instruct-v2-nf4-1"
    store.import_dir(
        tiny_adapters["llama"],
        name=long_name,
        task="animal-or-vehicle/dev.jsonl",
        source_base_id="/home/someone/models/SmolLM2-135M-Instruct-demo-v1-snapshot-2026-11-30",
    )
    store.import_dir(tiny_adapters["mistral"], name="m1", task="sst2")
    code, out, _ = run(capsys, "patch", "list")
    assert code == 0
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 100, out
    assert sum(line.startswith(long_name + " ") for line in lines) == 1
    assert any(line.startswith("m1 ") and " sst2 " in line for line in lines)
    assert "created" in next(line for line in lines if line.startswith("name"))
    # a name too long for 100 columns widens the table rather than being cut
    store.import_dir(tiny_adapters["llama"], name="x" * 90)
    code, out, _ = run(capsys, "patch", "list")
    assert sum(line.startswith("x" * 90 + " ") for line in out.splitlines()) == 1
