"""PatchStore: import/list/get/verify/export/remove/add_lineage, names, force, recovery, lock timeout."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from portllm_edge import paths
from portllm_edge.errors import PatchError, StoreError
from portllm_edge.patches import LineageEntry, PatchStore
from portllm_edge.patches.store import ADAPTER_SUBDIR, sha256_file, validate_name


@pytest.fixture
def store() -> PatchStore:
    return PatchStore(lock_timeout=2)


@pytest.fixture
def src(tiny_adapters) -> Path:
    return tiny_adapters["llama"]


def test_default_root_is_home_patches(portllm_home: Path) -> None:
    assert PatchStore().root == portllm_home / "patches" == paths.patches_dir()


def test_import_records_manifest_and_checksums(store: PatchStore, src: Path, tiny_pairs) -> None:
    m = store.import_dir(src, name="sst2-llama", task="sst2")
    assert m.name == "sst2-llama" and m.task == "sst2" and m.schema_version == 1
    assert (m.adapter.r, m.adapter.lora_alpha, sorted(m.adapter.target_modules)) == (
        4,
        8.0,
        ["q_proj", "v_proj"],
    )
    assert m.adapter.peft_version == "0.21.2"
    assert m.source_base.id == str(tiny_pairs["llama"].old) and m.source_base.model_type == "llama"
    assert m.source_base.fingerprint is None  # the config's path may hold an updated model by now
    assert [e.kind for e in m.lineage] == ["import"]
    adapter = store.root / "sst2-llama" / ADAPTER_SUBDIR
    assert (
        set(m.files)
        == {p.name for p in adapter.iterdir()}
        >= {"adapter_config.json", "adapter_model.safetensors"}
    )
    for rel, digest in m.files.items():
        assert sha256_file(adapter / rel) == sha256_file(src / rel) == digest
    got = store.get("sst2-llama")
    assert got.adapter_dir == adapter and got.manifest == m
    assert [x.name for x in store.list()] == ["sst2-llama"]


def test_explicit_base_gets_fingerprint(store: PatchStore, src: Path, tiny_pairs) -> None:
    from portllm_edge.models.fingerprint import fingerprint_weights
    from portllm_edge.tensorio import list_weight_files

    old = tiny_pairs["llama"].old
    m = store.import_dir(src, name="p", source_base_id=str(old))
    assert m.source_base.fingerprint == fingerprint_weights(list_weight_files(old))
    assert m.lineage[0].base_fingerprint == m.source_base.fingerprint
    m2 = store.import_dir(
        src, name="q", source_base_id=str(old), source_base_fingerprint="w1:given", model_type="x"
    )
    assert (m2.source_base.fingerprint, m2.source_base.model_type) == ("w1:given", "x")


def test_default_name_from_folder(store: PatchStore, src: Path, tmp_path: Path) -> None:
    d = tmp_path / "my adapter (v1)"
    shutil.copytree(src, d)
    assert store.import_dir(d).name == "my-adapter--v1-"


def test_no_overwrite_without_force(store: PatchStore, src: Path, tiny_adapters) -> None:
    store.import_dir(src, name="p", task="a")
    with pytest.raises(StoreError, match="already exists"):
        store.import_dir(tiny_adapters["qwen2"], name="p")
    assert store.get("p").manifest.task == "a"
    m = store.import_dir(tiny_adapters["qwen2"], name="p", task="b", force=True)
    assert m.task == "b" and store.get("p").manifest.source_base.model_type == "qwen2"
    assert not [p for p in store.root.iterdir() if p.name.startswith(".tmp-")]


@pytest.mark.parametrize(
    "bad", ["../x", "..", "a/b", "/abs", "a\\b", ".hidden", "", "a..b", "x" * 129, "-lead", "sp ace", "nul\0"]
)
def test_invalid_names_refused(store: PatchStore, src: Path, bad: str) -> None:
    with pytest.raises(StoreError, match="invalid patch name"):
        store.import_dir(src, name=bad)
    with pytest.raises(StoreError, match="invalid patch name"):
        store.get(bad)
    with pytest.raises(StoreError, match="invalid patch name"):
        store.remove(bad)
    assert not store.root.exists() or store.names() == []


def test_valid_names() -> None:
    for ok in ["a", "sst2-llama3.1_r8", "user@v2+nf4", "A" * 128]:
        assert validate_name(ok) == ok


def test_unknown_name_did_you_mean(store: PatchStore, src: Path) -> None:
    with pytest.raises(StoreError) as ei:
        store.get("nothing")
    assert "store is empty" in (ei.value.hint or "")
    store.import_dir(src, name="sst2-llama")
    with pytest.raises(StoreError) as ei:
        store.get("sst2-lama")
    assert "no patch named 'sst2-lama'" in ei.value.message and "did you mean 'sst2-llama'" in (
        ei.value.hint or ""
    )


def test_invalid_adapter_leaves_store_untouched(store: PatchStore, src: Path, tmp_path: Path) -> None:
    d = tmp_path / "a"
    shutil.copytree(src, d)
    (d / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(PatchError):
        store.import_dir(d, name="p")
    assert not store.root.exists()


def test_pickles_and_hidden_files_not_copied(store: PatchStore, src: Path, tmp_path: Path) -> None:
    d = tmp_path / "a"
    shutil.copytree(src, d)
    (d / "training_args.bin").write_bytes(b"\x80\x04pickle")
    (d / ".DS_Store").write_bytes(b"x")
    (d / "sub").mkdir()
    m = store.import_dir(d, name="p")
    assert "training_args.bin" not in m.files and ".DS_Store" not in m.files and "sub" not in m.files


def test_verify_detects_each_kind_of_damage(store: PatchStore, src: Path) -> None:
    for n in ("a", "b", "c", "d", "e"):
        store.import_dir(src, name=n)
    root = store.root
    (root / "a" / ADAPTER_SUBDIR / "adapter_model.safetensors").write_bytes(b"changed")
    (root / "b" / ADAPTER_SUBDIR / "adapter_config.json").unlink()
    (root / "c" / "manifest.json").write_text("{")
    (root / "d" / ADAPTER_SUBDIR / "extra.txt").write_text("?")
    data = json.loads((root / "e" / "manifest.json").read_text())
    data["name"] = "other"
    (root / "e" / "manifest.json").write_text(json.dumps(data))
    (root / "f").mkdir()  # a folder with no manifest
    results = {r.name: r for r in store.verify()}
    assert {n for n, r in results.items() if not r.ok} == {"a", "b", "c", "d", "e", "f"}
    assert "sha256 does not match" in results["a"].problems[0]
    assert "adapter_config.json: missing" in results["b"].problems[0]
    assert "not valid JSON" in results["c"].problems[0]
    assert "extra.txt: not listed" in results["d"].problems[0]
    assert "names the patch 'other'" in results["e"].problems[0]
    assert "manifest not found" in results["f"].problems[0]
    with pytest.raises(StoreError, match="damaged"):
        store.get("a")
    assert [x.name for x in store.list()] == ["a", "b", "d"]  # c, f unreadable; e names another patch
    store.remove("a")  # damaged entries can still be removed
    assert "a" not in store.names()


def test_leftovers_reported_then_removed_by_next_write(store: PatchStore, src: Path) -> None:
    store.import_dir(src, name="p")
    (store.root / ".tmp-abc").mkdir()
    (store.root / ".tmp-abc" / "half").write_text("x")
    (store.root / "p" / ".tmp-manifest").write_text("{")
    results = store.verify()
    assert [(r.name, r.kind, r.ok) for r in results] == [
        ("p", "entry", True),
        (".tmp-abc", "leftover", True),
        (".tmp-manifest", "leftover", True),
    ]
    assert store.names() == ["p"]
    store.import_dir(src, name="q")
    assert [r.kind for r in store.verify()] == ["entry", "entry"]


def test_interrupted_force_replace_is_restored(store: PatchStore, src: Path) -> None:
    store.import_dir(src, name="p", task="keep-me")
    # What atomic_dir(overwrite=True) leaves when killed between its two renames:
    os.replace(store.root / "p", store.root / ".tmp-old-x1")
    (store.root / ".tmp-new").mkdir()
    r = {x.name: x for x in store.verify()}
    assert "p" not in r and "restores it" in r[".tmp-old-x1"].problems[0]
    actions = store.recover()
    assert any("restored 'p'" in a for a in actions)
    assert store.get("p").manifest.task == "keep-me"
    assert store.names() == ["p"] and not [x for x in store.root.iterdir() if x.name.startswith(".tmp-")]


def test_stale_old_copy_is_not_restored_over_an_entry(store: PatchStore, src: Path) -> None:
    store.import_dir(src, name="p", task="new")
    shutil.copytree(store.root / "p", store.root / ".tmp-old-y")
    store.recover()
    assert store.get("p").manifest.task == "new" and not (store.root / ".tmp-old-y").exists()


def test_export_reimport_keeps_lineage(store: PatchStore, src: Path, tmp_path: Path) -> None:
    store.import_dir(src, name="p", task="sst2")
    store.add_lineage("p", LineageEntry(kind="port", base_id="v2", precision="nf4", parent="p", run_id="r1"))
    out = store.export("p", tmp_path / "out")
    assert sorted(x.name for x in out.iterdir()) == sorted([*store.get("p").manifest.files, "manifest.json"])
    m = store.import_dir(out, name="p2")
    assert m.task == "sst2"
    assert [e.kind for e in m.lineage] == ["import", "port", "import"]
    assert m.lineage[1].run_id == "r1"
    with pytest.raises(StoreError, match="already exists"):
        store.export("p", out)
    assert store.export("p", out, force=True) == out


def test_export_refusals(store: PatchStore, src: Path, tmp_path: Path) -> None:
    store.import_dir(src, name="p")
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(StoreError, match="not a folder"):
        store.export("p", f, force=True)
    with pytest.raises(StoreError, match="into the store"):
        store.export("p", store.root / "q")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert store.export("p", empty, force=True) == empty


def test_add_lineage_and_remove(store: PatchStore, src: Path) -> None:
    store.import_dir(src, name="p")
    m = store.add_lineage("p", LineageEntry(kind="port", base_id="new", note="n"))
    assert [e.kind for e in m.lineage] == ["import", "port"]
    assert store.get("p").manifest.lineage[-1].note == "n"
    with pytest.raises(StoreError, match="no patch named"):
        store.add_lineage("zz", LineageEntry(kind="port"))
    store.remove("p")
    assert store.names() == [] and not [x for x in store.root.iterdir() if x.name != ".lock"]
    with pytest.raises(StoreError, match="no patch named 'p'"):
        store.remove("p")


def test_lock_timeout_is_a_clear_error(store: PatchStore, src: Path) -> None:
    from filelock import FileLock

    store.root.mkdir(parents=True)
    held = FileLock(str(store.root / ".lock"))
    held.acquire()
    try:
        quick = PatchStore(store.root, lock_timeout=0.2)
        with pytest.raises(StoreError) as ei:
            quick.import_dir(src, name="p")
        assert "busy" in ei.value.message and "waited 0.2 s" in ei.value.message
        assert "released automatically" in (ei.value.hint or "")
    finally:
        held.release()
    assert store.names() == []


def test_lock_timeout_from_env(monkeypatch) -> None:
    monkeypatch.setenv("PORTLLM_EDGE_LOCK_TIMEOUT", "7.5")
    assert PatchStore().lock_timeout == 7.5


def test_disk_full_is_a_store_error_and_leaves_nothing(store: PatchStore, src: Path, monkeypatch) -> None:
    import errno

    from portllm_edge.patches import store as store_mod

    real = store_mod._copy_hashing
    calls = {"n": 0}

    def full(a: Path, b: Path) -> str:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(b))
        return real(a, b)

    monkeypatch.setattr(store_mod, "_copy_hashing", full)
    with pytest.raises(StoreError) as ei:
        store.import_dir(src, name="p")
    assert "No space left on device" in ei.value.message and "free disk space" in (ei.value.hint or "")
    assert [p.name for p in store.root.iterdir()] == [".lock"]


def test_store_root_is_a_file(tmp_path: Path, src: Path) -> None:
    root = tmp_path / "patches"
    root.write_text("not a folder")
    with pytest.raises(StoreError, match="cannot write to"):
        PatchStore(root).import_dir(src, name="p")
    assert root.read_text() == "not a folder"


def test_symlinked_entry_is_flagged_and_never_cleaned_through(
    store: PatchStore, src: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    store.import_dir(src, name="real")
    shutil.copytree(store.root / "real", outside)
    (outside / ".tmp-precious").write_text("keep")
    (store.root / "linked").symlink_to(outside, target_is_directory=True)
    r = {x.name: x for x in store.verify()}
    assert not r["linked"].ok and "symbolic link" in r["linked"].problems[0]
    with pytest.raises(StoreError, match="damaged"):
        store.get("linked")
    store.recover()
    assert (outside / ".tmp-precious").read_text() == "keep"
    store.remove("linked")
    assert outside.is_dir() and (outside / "manifest.json").is_file()


# ----------------------------------------------------------------------------- archives


def _tar(path: Path, members: list[tuple[str, bytes | None, str]]) -> Path:
    """Write a tar with (name, data, kind) members; kind is file, dir, sym, lnk or fifo."""
    import io
    import tarfile

    with tarfile.open(path, "w:gz" if path.name.endswith("gz") else "w") as tf:
        for name, data, kind in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(data or b"")
                tf.addfile(info, io.BytesIO(data or b""))
                continue
            info.type = {
                "dir": tarfile.DIRTYPE,
                "sym": tarfile.SYMTYPE,
                "lnk": tarfile.LNKTYPE,
                "fifo": tarfile.FIFOTYPE,
            }[kind]
            info.linkname = "/etc/passwd" if kind in ("sym", "lnk") else ""
            tf.addfile(info)
    return path


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz", ".tgz"])
def test_archive_round_trip(store: PatchStore, src: Path, tmp_path: Path, suffix: str) -> None:
    store.import_dir(src, name="p", task="sst2")
    store.add_lineage("p", LineageEntry(kind="port", base_id="v2"))
    arc = store.export_archive("p", tmp_path / f"p{suffix}")
    again = store.export_archive("p", tmp_path / f"again{suffix}")
    if suffix == ".tar":  # deterministic bytes for the same patch
        assert arc.read_bytes() == again.read_bytes()
    with pytest.raises(StoreError, match="already exists"):
        store.export_archive("p", arc)
    m = store.import_archive(arc, name="q")
    assert m.task == "sst2" and [e.kind for e in m.lineage] == ["import", "port", "import"]
    assert m.files == store.get("p").manifest.files
    assert not list(tmp_path.glob(".tmp-*"))


def test_hand_made_flat_archive(store: PatchStore, src: Path, tmp_path: Path) -> None:
    files = [(f.name, f.read_bytes(), "file") for f in src.iterdir()]
    m = store.import_archive(_tar(tmp_path / "my-lora.tar", files))
    assert m.name == "my-lora"
    m2 = store.import_archive(
        _tar(tmp_path / "x.tar", [("top", None, "dir")] + [(f"top/{n}", d, k) for n, d, k in files])
    )
    assert m2.name == "top"


@pytest.mark.parametrize(
    ("member", "kind", "words"),
    [
        ("../../evil.txt", "file", "absolute path or '..'"),
        ("/etc/cron.d/evil", "file", "absolute path or '..'"),
        ("top/../../x", "file", "absolute path or '..'"),
        ("C:/evil", "file", "absolute path or '..'"),
        ("top/link", "sym", "is a link"),
        ("top/hard", "lnk", "is a link"),
        ("top/fifo", "fifo", "not a regular file"),
        ("top/a/b/deep", "file", "nested too deep"),
        ("top/.hidden", "file", "hidden or duplicated"),
    ],
)
def test_unsafe_archives_refused_before_writing(
    store: PatchStore, src: Path, tmp_path: Path, member, kind, words
):
    files = [(f"top/{f.name}", f.read_bytes(), "file") for f in src.iterdir()]
    arc = _tar(tmp_path / "bad.tar", [*files, (member, b"x", kind)])
    with pytest.raises(StoreError) as ei:
        store.import_archive(arc, name="p")
    assert words in ei.value.message and str(arc) in ei.value.message
    assert not store.root.exists() or store.names() == []
    assert not (tmp_path / "evil.txt").exists() and not Path("/etc/cron.d/evil").exists()


def test_archive_limits_and_garbage(store: PatchStore, src: Path, tmp_path: Path, monkeypatch) -> None:
    from portllm_edge.patches import store as store_mod

    files = [(f.name, f.read_bytes(), "file") for f in src.iterdir()]
    monkeypatch.setattr(store_mod, "ARCHIVE_MAX_BYTES", 1000)
    with pytest.raises(StoreError, match="unpacks to more than 1000 bytes"):
        store.import_archive(_tar(tmp_path / "big.tar", files))
    monkeypatch.setattr(store_mod, "ARCHIVE_MAX_BYTES", 10**9)
    monkeypatch.setattr(store_mod, "ARCHIVE_MAX_MEMBERS", 2)
    with pytest.raises(StoreError, match="more than 2 members"):
        store.import_archive(_tar(tmp_path / "many.tar", files))
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a tar at all" * 10)
    with pytest.raises(StoreError, match="not a readable tar archive"):
        store.import_archive(junk)
    with pytest.raises(StoreError, match="unsupported archive type"):
        store.import_archive(tmp_path / "x.zip")


def test_archived_bad_adapter_names_the_archive(store: PatchStore, src: Path, tmp_path: Path) -> None:
    files = [
        (f.name, f.read_bytes()[:100] if f.suffix == ".safetensors" else f.read_bytes(), "file")
        for f in src.iterdir()
    ]
    arc = _tar(tmp_path / "trunc.tar", files)
    with pytest.raises(PatchError) as ei:
        store.import_archive(arc, name="p")
    assert f"{arc}/adapter_model.safetensors" in ei.value.message
