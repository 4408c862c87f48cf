"""tensorio: header validation against hostile/damaged files, shard listing, pickle refusal, finiteness."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from portllm_edge import tensorio
from portllm_edge.errors import BaseModelError, PatchError


def _write(path: Path, header: dict, payload: bytes) -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + payload)
    return path


@pytest.fixture
def good(tmp_path: Path) -> Path:
    p = tmp_path / "good.safetensors"
    save_file(
        {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.ones(4, dtype=torch.bfloat16)},
        str(p),
        metadata={"format": "pt"},
    )
    return p


def test_reads_header_without_loading(good: Path) -> None:
    h = tensorio.read_safetensors_header(good)
    assert isinstance(h, dict)
    assert set(h) == {"a", "b"}
    assert h["a"] == tensorio.TensorInfo("a", "F32", (2, 3), h["a"].data_offsets, 24)
    assert h["b"].dtype == "BF16" and h["b"].nbytes == 8 and h["b"].numel == 4
    assert h.metadata == {"format": "pt"}
    assert h.payload_bytes == 32
    assert h.file_size == good.stat().st_size == h.payload_offset + 32


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (lambda b: b"", ["is empty"]),
        (lambda b: b[:5], ["only 5 bytes"]),
        (lambda b: b[:-3], ["truncated"]),
        (lambda b: struct.pack("<Q", 10**12) + b[8:], ["limit"]),
        (lambda b: struct.pack("<Q", 2000) + b[8:], ["truncated"]),
        (lambda b: b[:8] + b"\xff" * (len(b) - 8), ["not valid JSON"]),
        (lambda b: b + b"junk", ["bytes after the last tensor"]),
    ],
    ids=["empty", "tiny", "truncated-payload", "huge-header", "header-past-eof", "garbage", "trailing"],
)
def test_damaged_files_raise_naming_file(good: Path, mutate, words) -> None:
    good.write_bytes(mutate(good.read_bytes()))
    with pytest.raises(PatchError) as ei:
        tensorio.read_safetensors_header(good)
    msg = ei.value.one_line()
    assert str(good) in msg
    for w in words:
        assert w in msg
    assert "Fix:" in msg


@pytest.mark.parametrize(
    ("header", "payload", "words"),
    [
        ([1, 2], b"", ["list, not an object"]),
        ({"t": {"dtype": "F99", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4, ["unknown dtype", "`t`"]),
        ({"t": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4, ["invalid shape", "`t`"]),
        ({"t": {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]}}, b"\0" * 4, ["invalid shape"]),
        ({"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"\0" * 4, ["8 bytes", "span 4"]),
        ({"t": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}, b"\0" * 4, ["invalid data_offsets"]),
        ({"t": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 4]}}, b"\0" * 4, ["span 4"]),
        (
            {
                "t": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                "u": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
            },
            b"\0" * 4,
            ["overlaps"],
        ),
        ({"t": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8, ["gap of 4"]),
        ({"__metadata__": {"a": 1}}, b"", ["__metadata__"]),
        ({"t": "x"}, b"", ["not an object", "`t`"]),
    ],
    ids=[
        "list",
        "dtype",
        "neg-shape",
        "bool-shape",
        "span",
        "reversed",
        "huge-shape",
        "overlap",
        "gap",
        "meta",
        "entry",
    ],
)
def test_malformed_headers(tmp_path: Path, header, payload, words) -> None:
    p = _write(tmp_path / "x.safetensors", header, payload)
    with pytest.raises(PatchError) as ei:
        tensorio.read_safetensors_header(p)
    for w in words:
        assert w in ei.value.message


def test_duplicate_keys_refused(tmp_path: Path) -> None:
    raw = b'{"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    p = tmp_path / "d.safetensors"
    p.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 4)
    with pytest.raises(PatchError, match="duplicate key"):
        tensorio.read_safetensors_header(p)


def test_error_class_is_selectable(tmp_path: Path) -> None:
    p = tmp_path / "e.safetensors"
    p.write_bytes(b"")
    with pytest.raises(BaseModelError):
        tensorio.read_safetensors_header(p, error_cls=BaseModelError)
    with pytest.raises(BaseModelError, match="file not found"):
        tensorio.read_safetensors_header(tmp_path / "missing.safetensors", error_cls=BaseModelError)


def test_iter_tensors_one_at_a_time(good: Path) -> None:
    got = dict(tensorio.iter_tensors(good))
    assert torch.equal(got["a"], torch.arange(6, dtype=torch.float32).reshape(2, 3))
    assert [n for n, _ in tensorio.iter_tensors(good, ["b"])] == ["b"]
    with pytest.raises(PatchError, match="no tensor named 'zz'"):
        list(tensorio.iter_tensors(good, ["zz"]))


def test_check_finite_names_first_bad_tensor(tmp_path: Path) -> None:
    p = tmp_path / "nan.safetensors"
    bad = torch.ones(10)
    bad[3] = float("nan")
    bad[5] = float("inf")
    save_file({"ok": torch.ones(3), "z.bad": bad, "ints": torch.arange(3)}, str(p))
    with pytest.raises(PatchError) as ei:
        tensorio.check_finite(p)
    assert "`z.bad`" in ei.value.message and "1 NaN and 1 Inf of 10" in ei.value.message
    found = tensorio.first_nonfinite([("x", torch.zeros(2)), ("y", torch.tensor([float("-inf")]))])
    assert found == tensorio.NonFiniteTensor("y", 0, 1, 1)
    assert tensorio.first_nonfinite([("i", torch.arange(4))]) is None
    tensorio.check_finite([("a", torch.ones(2, dtype=torch.bfloat16))])


def test_list_weight_files_plain_and_index(tmp_path: Path) -> None:
    save_file({"a": torch.ones(1)}, str(tmp_path / "model-00002-of-00002.safetensors"))
    save_file({"b": torch.ones(1)}, str(tmp_path / "model-00001-of-00002.safetensors"))
    (tmp_path / ".tmp-x.safetensors").write_bytes(b"")
    assert [f.name for f in tensorio.list_weight_files(tmp_path)] == [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ]
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"b": "model-00001-of-00002.safetensors"}})
    )
    assert [f.name for f in tensorio.list_weight_files(tmp_path)] == ["model-00001-of-00002.safetensors"]


@pytest.mark.parametrize(
    ("shard", "words"),
    [
        ("../evil.safetensors", "not a plain file name"),
        ("/etc/passwd", "not a plain file name"),
        ("gone.safetensors", "missing"),
    ],
)
def test_index_escape_and_missing(tmp_path: Path, shard: str, words: str) -> None:
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": shard}}))
    with pytest.raises(BaseModelError, match=words):
        tensorio.list_weight_files(tmp_path)


def test_pickle_only_folder_refused_then_converted(tmp_path: Path) -> None:
    sd = {"w": torch.randn(3, 2), "tied": None}
    sd["tied"] = sd["w"]  # shared storage: safetensors refuses aliasing; conversion clones
    torch.save(sd, tmp_path / "pytorch_model.bin")
    with pytest.raises(BaseModelError) as ei:
        tensorio.list_weight_files(tmp_path)
    assert "pytorch_model.bin" in ei.value.message and "pickled" in ei.value.message
    assert "weights_only=True" in (ei.value.hint or "")
    out = tensorio.convert_pickle_to_safetensors(
        tmp_path / "pytorch_model.bin", tmp_path / "model.safetensors"
    )
    assert set(tensorio.read_safetensors_header(out)) == {"w", "tied"}
    assert torch.equal(dict(tensorio.iter_tensors(out))["tied"], sd["w"])
    assert tensorio.list_weight_files(tmp_path) == [out]


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_convert_refuses_arbitrary_objects(tmp_path: Path) -> None:
    import pickle

    src = tmp_path / "evil.bin"
    with open(src, "wb") as fh:
        pickle.dump({"w": _Evil()}, fh)
    with pytest.raises(PatchError, match="weights_only=True"):
        tensorio.convert_pickle_to_safetensors(src, tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()
    assert not list(tmp_path.glob(".tmp-*"))


@pytest.mark.parametrize(
    "dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.float8_e5m2]
)
def test_file_scan_counts_nan_and_inf_per_dtype(tmp_path: Path, dtype: torch.dtype) -> None:
    bad = torch.zeros(7, dtype=torch.float32)
    bad[[1, 4]] = float("nan")
    bad[2] = float("-inf")
    p = tmp_path / "s.safetensors"
    save_file(
        {"a.ok": torch.full((5,), 1000.0).to(dtype), "b.bad": bad.to(dtype), "c.int": torch.arange(3)},
        str(p),
    )
    assert tensorio.find_nonfinite_in_file(p) == tensorio.NonFiniteTensor("b.bad", 2, 1, 7)
    assert tensorio.find_nonfinite_in_file(p, ["a.ok", "c.int"]) is None


def test_file_scan_e4m3_nan(tmp_path: Path) -> None:
    t = torch.tensor([1.0, float("nan"), 448.0]).to(torch.float8_e4m3fn)
    p = tmp_path / "f8.safetensors"
    save_file({"w": t}, str(p))
    assert tensorio.find_nonfinite_in_file(p) == tensorio.NonFiniteTensor("w", 1, 0, 3)


def test_file_scan_chunks(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(tensorio, "_SCAN_CHUNK_BYTES", 64)
    t = torch.zeros(100)
    t[90] = float("inf")
    t[3] = float("nan")
    p = tmp_path / "c.safetensors"
    save_file({"w": t}, str(p))
    assert tensorio.find_nonfinite_in_file(p) == tensorio.NonFiniteTensor("w", 1, 1, 100)


def test_deeply_nested_header_and_json(tmp_path: Path) -> None:
    raw = b"[" * 200_000 + b"]" * 200_000
    p = tmp_path / "deep.safetensors"
    p.write_bytes(struct.pack("<Q", len(raw)) + raw)
    with pytest.raises(PatchError, match="nested too deeply"):
        tensorio.read_safetensors_header(p)
    j = tmp_path / "deep.json"
    j.write_bytes(raw)
    with pytest.raises(ValueError, match="nested too deeply"):
        tensorio.read_small_json(j)
    with pytest.raises(ValueError, match="above the 10-byte limit"):
        tensorio.read_small_json(j, max_bytes=10)


def test_importing_tensorio_and_patches_loads_no_heavy_library() -> None:
    import subprocess
    import sys

    code = (
        "import sys, portllm_edge.tensorio, portllm_edge.patches, portllm_edge.cli.patch_cmds;"
        "print(sorted(m for m in ('torch', 'safetensors', 'transformers', 'peft', 'textual') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
