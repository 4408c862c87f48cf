"""The bad-input corpus: declarative cases that the CLI must refuse with one clear line and exit 2.

How to add a case (any area)
----------------------------
Append a :class:`Case` to :data:`CASES` (or extend it from your own module at the
bottom of this file). A case has:

* ``id``: unique, ``area-what`` (e.g. ``patch-truncated-safetensors``);
* ``build(ctx)``: a function that creates the bad input under ``ctx.tmp``
  (a fresh folder per case) and may pre-fill the store of ``ctx.home``; it
  returns nothing. :class:`Ctx` helpers give copies of real tiny fixtures
  (``ctx.adapter()``, ``ctx.base()``) so a case breaks exactly one thing;
* ``argv``: the CLI arguments after ``portllm-edge``; ``{tmp}`` and ``{home}``
  are replaced by the case's folders;
* ``keywords``: substrings that stderr must contain (after the same
  replacement). Name the file/tensor/field and a word of the fix;
* ``exit_code``: 2 unless there is a reason.

``test_corpus.py`` runs each case in-process through
``portllm_edge.cli.main(argv)`` and asserts: the exit code, no ``Traceback``
on stderr, every keyword present, an ``error:`` line with a ``Fix:``, and the
home folder (store, models, runs) and ``ctx.tmp`` byte-for-byte unchanged (the
store's ``.lock`` file is ignored).

The builders below (``break_*``) also serve the unit tests of each area.
"""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Ctx:
    """What a case builder gets.

    Attributes:
        tmp: A fresh, empty folder for this case's inputs (and outputs the CLI must not create).
        home: The portllm-edge home of this test (``PORTLLM_EDGE_HOME``); its store starts empty.
        getfixture: ``request.getfixturevalue`` (lazy: only the fixtures a case uses get built).
    """

    tmp: Path
    home: Path
    getfixture: Callable[[str], Any]

    def adapter(self, family: str = "llama", name: str = "adapter") -> Path:
        """A fresh copy of the family's tiny, valid LoRA adapter at ``tmp/name``."""
        src = self.getfixture("tiny_adapters")[family]
        dst = self.tmp / name
        shutil.copytree(src, dst)
        return dst

    def base(self, family: str = "llama", version: str = "old", name: str = "base") -> Path:
        """A fresh copy of a tiny base model folder at ``tmp/name``."""
        pair = self.getfixture("tiny_pairs")[family]
        dst = self.tmp / name
        shutil.copytree(pair.old if version == "old" else pair.new, dst)
        return dst

    def store_patch(self, name: str = "sst2-llama", family: str = "llama") -> Path:
        """Import the family's tiny adapter into this test's store under ``name``; return the entry folder."""
        from portllm_edge.patches import PatchStore

        store = PatchStore()
        store.import_dir(self.getfixture("tiny_adapters")[family], name=name, task="sst2")
        return store.root / name


@dataclass(frozen=True)
class Case:
    """One bad input, the command that meets it, and what the user must be told."""

    id: str
    build: Callable[[Ctx], None]
    argv: tuple[str, ...]
    keywords: tuple[str, ...]
    exit_code: int = 2
    marks: tuple[Any, ...] = field(default=())


# --------------------------------------------------------------------------- builders (patch files)

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"


def break_missing_weights(d: Path) -> None:
    """Delete ``adapter_model.safetensors``."""
    (d / WEIGHTS).unlink()


def break_truncated(d: Path) -> None:
    """Cut the weights file to 60 % of its size (header intact, payload short)."""
    data = (d / WEIGHTS).read_bytes()
    (d / WEIGHTS).write_bytes(data[: int(len(data) * 0.6)])


def break_garbage_header(d: Path) -> None:
    """Keep the length field, replace the JSON header with bytes that aren't JSON."""
    data = (d / WEIGHTS).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    (d / WEIGHTS).write_bytes(data[:8] + b"\x00garbage!" * (n // 9) + b"#" * (n % 9) + data[8 + n :])


def break_huge_header(d: Path) -> None:
    """Declare a 1 TB header (a hostile file trying to make us allocate)."""
    data = (d / WEIGHTS).read_bytes()
    (d / WEIGHTS).write_bytes(struct.pack("<Q", 10**12) + data[8:])


def break_empty(d: Path) -> None:
    """Make the weights file 0 bytes."""
    (d / WEIGHTS).write_bytes(b"")


def _edit_header(d: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    data = (d / WEIGHTS).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    edit(header)
    raw = json.dumps(header).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)
    (d / WEIGHTS).write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n :])


def _first_lora_a(header: dict[str, Any]) -> str:
    return sorted(k for k in header if "lora_A" in k)[0]


def break_overlapping_offsets(d: Path) -> None:
    """Point the first lora_A's offsets at the same bytes as another tensor."""

    def edit(h: dict[str, Any]) -> None:
        names = sorted((k for k in h if k != "__metadata__"), key=lambda k: h[k]["data_offsets"])
        h[names[1]]["data_offsets"] = list(h[names[0]]["data_offsets"])
        if h[names[1]]["shape"] != h[names[0]]["shape"]:
            h[names[1]]["shape"] = list(h[names[0]]["shape"])

    _edit_header(d, edit)


def break_unknown_dtype(d: Path) -> None:
    """Give the first lora_A tensor a dtype that safetensors does not define."""
    _edit_header(d, lambda h: h[_first_lora_a(h)].update(dtype="F128"))


def _rewrite_tensor(d: Path, value: float) -> str:
    import torch
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(d / WEIGHTS))
    name = sorted(k for k in tensors if "lora_B" in k)[-1]
    t = tensors[name].clone()
    t.view(-1)[3] = value
    tensors[name] = t
    save_file(tensors, str(d / WEIGHTS), metadata={"format": "pt"})
    assert not torch.isfinite(t).all()
    return name


def break_nan(d: Path) -> None:
    """Put one NaN into the last lora_B tensor."""
    _rewrite_tensor(d, float("nan"))


def break_inf(d: Path) -> None:
    """Put one +Inf into the last lora_B tensor."""
    _rewrite_tensor(d, float("inf"))


def _edit_config(d: Path, **changes: Any) -> None:
    cfg = json.loads((d / CONFIG).read_text())
    cfg.update(changes)
    (d / CONFIG).write_text(json.dumps(cfg, indent=2))


def break_wrong_r(d: Path) -> None:
    """Claim r=8 in the config while the tensors have rank 4."""
    _edit_config(d, r=8)


def break_unknown_peft_type(d: Path) -> None:
    """Claim an adapter type portllm-edge can't port."""
    _edit_config(d, peft_type="IA3")


def break_config_not_json(d: Path) -> None:
    """Replace adapter_config.json with text that is not JSON."""
    (d / CONFIG).write_text("{ r: 4, this is not json")


def break_missing_config(d: Path) -> None:
    """Delete adapter_config.json."""
    (d / CONFIG).unlink()


def break_pickled_only(d: Path) -> None:
    """Replace the safetensors weights by a pickled ``adapter_model.bin`` (torch.save)."""
    import torch
    from safetensors.torch import load_file

    torch.save(load_file(str(d / WEIGHTS)), d / "adapter_model.bin")
    (d / WEIGHTS).unlink()


def break_missing_lora_b(d: Path) -> None:
    """Drop one lora_B tensor (an incomplete export)."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(d / WEIGHTS))
    del tensors[sorted(k for k in tensors if "lora_B" in k)[0]]
    save_file(tensors, str(d / WEIGHTS), metadata={"format": "pt"})


# --------------------------------------------------------------------------- cases (patch area)


def _adapter_broken(breaker: Callable[[Path], None]) -> Callable[[Ctx], None]:
    def build(ctx: Ctx) -> None:
        breaker(ctx.adapter())

    build.__doc__ = breaker.__doc__
    return build


def _store_one(ctx: Ctx) -> None:
    ctx.store_patch("sst2-llama")


def _store_one_and_adapter(ctx: Ctx) -> None:
    ctx.store_patch("sst2-llama")
    ctx.adapter()


def _damaged_store(ctx: Ctx) -> None:
    entry = ctx.store_patch("sst2-llama")
    f = entry / "adapter" / WEIGHTS
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))


def _export_onto_non_adapter(ctx: Ctx) -> None:
    ctx.store_patch("sst2-llama")
    (ctx.tmp / "docs").mkdir()
    (ctx.tmp / "docs" / "thesis.tex").write_text("years of work")


def _exported_bad_manifest(ctx: Ctx) -> None:
    d = ctx.adapter()
    (d / "manifest.json").write_text(json.dumps({"schema_version": 1, "name": "x", "files": {}}))


def _archive_like_name(ctx: Ctx) -> None:
    ctx.adapter()


def _archive_with(member: str, kind: str) -> Callable[[Ctx], None]:
    """An otherwise valid patch archive plus one hostile member (``kind``: file or sym)."""

    def build(ctx: Ctx) -> None:
        import io
        import tarfile

        src = ctx.getfixture("tiny_adapters")["llama"]
        with tarfile.open(ctx.tmp / "patch.tar.gz", "w:gz") as tf:
            for f in sorted(src.iterdir()):
                tf.add(f, arcname=f"patch/{f.name}")
            info = tarfile.TarInfo(member)
            if kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tf.addfile(info)
            else:
                info.size = 4
                tf.addfile(info, io.BytesIO(b"evil"))

    return build


def _store_root_is_file(ctx: Ctx) -> None:
    ctx.adapter()
    (ctx.home / "patches").write_text("a file where the store folder should be")


PATCH_CASES: list[Case] = [
    Case(
        "patch-missing-weights",
        _adapter_broken(break_missing_weights),
        ("patch", "import", "{tmp}/adapter"),
        ("{tmp}/adapter", "adapter_model.safetensors", "save_pretrained"),
    ),
    Case(
        "patch-truncated-safetensors",
        _adapter_broken(break_truncated),
        ("patch", "import", "{tmp}/adapter"),
        ("adapter_model.safetensors", "truncated", "re-download or re-export"),
    ),
    Case(
        "patch-garbage-header",
        _adapter_broken(break_garbage_header),
        ("patch", "import", "{tmp}/adapter"),
        ("adapter_model.safetensors", "not valid JSON", "re-export"),
    ),
    Case(
        "patch-huge-header",
        _adapter_broken(break_huge_header),
        ("patch", "import", "{tmp}/adapter"),
        ("adapter_model.safetensors", "limit", "re-export"),
    ),
    Case(
        "patch-empty-safetensors",
        _adapter_broken(break_empty),
        ("patch", "import", "{tmp}/adapter"),
        ("adapter_model.safetensors", "is empty"),
    ),
    Case(
        "patch-overlapping-offsets",
        _adapter_broken(break_overlapping_offsets),
        ("patch", "import", "{tmp}/adapter"),
        ("adapter_model.safetensors", "overlaps", "tensor `"),
    ),
    Case(
        "patch-unknown-dtype",
        _adapter_broken(break_unknown_dtype),
        ("patch", "import", "{tmp}/adapter"),
        ("unknown dtype 'F128'", "lora_A"),
    ),
    Case(
        "patch-nan-tensor",
        _adapter_broken(break_nan),
        ("patch", "import", "{tmp}/adapter"),
        ("lora_B", "1 NaN", "retrain"),
    ),
    Case(
        "patch-inf-tensor",
        _adapter_broken(break_inf),
        ("patch", "import", "{tmp}/adapter"),
        ("lora_B", "1 Inf", "retrain"),
    ),
    Case(
        "patch-wrong-r",
        _adapter_broken(break_wrong_r),
        ("patch", "import", "{tmp}/adapter"),
        ("lora_A", "`r` is 8", "rank 4", "adapter_config.json"),
    ),
    Case(
        "patch-unknown-peft-type",
        _adapter_broken(break_unknown_peft_type),
        ("patch", "import", "{tmp}/adapter"),
        ("`peft_type`", "IA3", "LoRA"),
    ),
    Case(
        "patch-config-not-json",
        _adapter_broken(break_config_not_json),
        ("patch", "import", "{tmp}/adapter"),
        ("adapter_config.json", "not valid JSON"),
    ),
    Case(
        "patch-missing-config",
        _adapter_broken(break_missing_config),
        ("patch", "import", "{tmp}/adapter"),
        ("adapter_config.json", "save_pretrained"),
    ),
    Case(
        "patch-pickled-only",
        _adapter_broken(break_pickled_only),
        ("patch", "import", "{tmp}/adapter"),
        ("adapter_model.bin", "pickled", "weights_only=True", "patch convert"),
    ),
    Case(
        "patch-missing-lora-b",
        _adapter_broken(break_missing_lora_b),
        ("patch", "import", "{tmp}/adapter"),
        ("lora_A", "no matching `lora_B`"),
    ),
    Case(
        "patch-name-traversal",
        _archive_like_name,
        ("patch", "import", "{tmp}/adapter", "--name", "../../evil"),
        ("invalid patch name", "../../evil", "--name"),
    ),
    Case(
        "patch-name-absolute",
        _archive_like_name,
        ("patch", "import", "{tmp}/adapter", "--name", "/etc/evil"),
        ("invalid patch name", "/etc/evil"),
    ),
    Case(
        "patch-unknown-name",
        _store_one,
        ("patch", "show", "sst2-lama"),
        ("no patch named 'sst2-lama'", "did you mean 'sst2-llama'"),
    ),
    Case(
        "patch-exists-no-force",
        _store_one_and_adapter,
        ("patch", "import", "{tmp}/adapter", "--name", "sst2-llama"),
        ("already exists", "--force"),
    ),
    Case(
        "patch-store-checksum-mismatch",
        _damaged_store,
        ("patch", "verify", "--all"),
        ("sst2-llama", "sha256", "--force"),
    ),
    Case(
        "patch-export-onto-non-adapter",
        _export_onto_non_adapter,
        ("patch", "export", "sst2-llama", "{tmp}/docs", "--force"),
        ("{tmp}/docs", "not an adapter", "refusing"),
    ),
    Case(
        "patch-manifest-missing-keys",
        _exported_bad_manifest,
        ("patch", "import", "{tmp}/adapter"),
        ("manifest.json", "`adapter`", "required", "delete"),
    ),
    Case(
        "patch-remove-unknown",
        _store_one,
        ("patch", "remove", "sst2-llam", "--yes"),
        ("no patch named 'sst2-llam'", "did you mean"),
    ),
]


CASES: list[Case] = [*PATCH_CASES]
"""Every case of the corpus. Other areas: append your list here (``CASES += [...]``)."""


# --------------------------------------------------------------------------- cases (check / merge area)


def _check_edit_base_config(family: str, version: str, **changes: Any) -> Callable[[Ctx], None]:
    def build(ctx: Ctx) -> None:
        ctx.adapter(family)
        base = ctx.base(family, version)
        cfg = json.loads((base / "config.json").read_text())
        cfg.update(changes)
        (base / "config.json").write_text(json.dumps(cfg, indent=2))

    return build


def _check_adapter_and_base(
    adapter_family: str, base_family: str, breaker: Callable[[Path], None] | None = None
):
    def build(ctx: Ctx) -> None:
        ad = ctx.adapter(adapter_family)
        if breaker is not None:
            breaker(ad)
        ctx.base(base_family, "new")

    return build


def _check_rename_q_proj(d: Path) -> None:
    """Rename the q_proj factors to a module the base lacks (qkv_proj)."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(d / WEIGHTS))
    save_file(
        {k.replace("q_proj", "qkv_proj"): v for k, v in tensors.items()},
        str(d / WEIGHTS),
        metadata={"format": "pt"},
    )


def _check_vocab_shrink(ctx: Ctx) -> None:
    """A patch with embedding rows for Mistral-v0.3-like 268 tokens, onto the 260-token old base."""
    import factories

    pair = ctx.getfixture("tiny_pairs")["mistral"]
    factories.build_lora_adapter(pair.new, ctx.tmp / "adapter", modules_to_save=["embed_tokens"])
    ctx.base("mistral", "old")


CHECK_ARGV = ("check", "{tmp}/adapter", "--base", "{tmp}/base")

CHECK_CASES: list[Case] = [
    Case(
        "check-architecture-mismatch",
        _check_adapter_and_base("llama", "qwen2"),
        CHECK_ARGV,
        ("`architecture`", "`llama`", "`qwen2`", "`model_type`", "same model family"),
    ),
    Case(
        "check-target-module-absent",
        _check_adapter_and_base("llama", "llama", _check_rename_q_proj),
        CHECK_ARGV,
        ("`target_modules`", "qkv_proj", "absent", "same architecture"),
    ),
    Case(
        "check-hidden-size-mismatch",
        _check_edit_base_config("llama", "new", hidden_size=32),
        CHECK_ARGV,
        ("`hidden_size`", "`hidden_size` is 32", "same model size"),
    ),
    Case(
        "check-rank-mismatch",
        _check_adapter_and_base("llama", "llama", lambda d: _edit_config(d, r=8)),
        CHECK_ARGV,
        ("`rank`", "lora_A", "r=8", "rank_pattern"),
    ),
    Case(
        "check-vocab-shrink",
        _check_vocab_shrink,
        CHECK_ARGV,
        ("`modules_to_save`", "embed_tokens", "268", "only 260", "shrink"),
    ),
    Case(
        "check-tied-config-without-lm-head",
        _check_edit_base_config("gemma2", "new", tie_word_embeddings=False),
        CHECK_ARGV,
        ("`tied_embeddings`", "lm_head.weight", "tie_word_embeddings"),
    ),
    Case(
        "check-unknown-config-key",
        _check_adapter_and_base("llama", "llama", lambda d: _edit_config(d, lora_scale_mode="sqrt")),
        CHECK_ARGV,
        ("`adapter_config`", "lora_scale_mode", "upgrade peft"),
    ),
    Case(
        "check-dora-patch",
        _check_adapter_and_base("llama", "llama", lambda d: _edit_config(d, use_dora=True)),
        CHECK_ARGV,
        ("`additive`", "DoRA", "plain LoRA"),
    ),
    Case(
        "merge-quantized-base",
        _check_edit_base_config(
            "llama", "new", quantization_config={"quant_method": "bitsandbytes", "load_in_4bit": True}
        ),
        ("merge", "{tmp}/adapter", "--base", "{tmp}/base", "--out", "{tmp}/out"),
        ("{tmp}/base", "quantized", "4-bit", "separate step"),
    ),
    Case(
        "merge-bad-dtype",
        _check_adapter_and_base("llama", "llama"),
        ("merge", "{tmp}/adapter", "--base", "{tmp}/base", "--out", "{tmp}/out", "--dtype", "nf4"),
        ("merge dtype `nf4`", "bf16", "fp32"),
    ),
]

CASES += CHECK_CASES


# --------------------------------------------------------------------------- cases (bases, config files, runtime limits)


def _base_for_port(breaker: Callable[[Path], None]) -> Callable[[Ctx], None]:
    """A stored patch ``sst2-llama`` and a copy of the llama base at ``{tmp}/base`` broken by ``breaker``."""

    def build(ctx: Ctx) -> None:
        ctx.store_patch()
        breaker(ctx.base("llama", "new"))

    return build


def _drop_config(d: Path) -> None:
    (d / "config.json").unlink()


def _garbage_tokenizer(d: Path) -> None:
    (d / "tokenizer.json").write_text("{ this is not a tokenizer")


def _pickle_only(d: Path) -> None:
    (d / "model.safetensors").unlink()
    (d / "pytorch_model.bin").write_bytes(b"\x80\x04pickled weights would run code")


def _fake_gguf(ctx: Ctx) -> None:
    (ctx.tmp / "model.gguf").write_bytes(b"PK\x03\x04 this is a zip file renamed to .gguf")


def _user_hardware_profile(text: str) -> Callable[[Ctx], None]:
    def build(ctx: Ctx) -> None:
        folder = ctx.home / "profiles" / "hardware"
        folder.mkdir(parents=True)
        (folder / "my-card.toml").write_text(text)

    return build


def _eval_file(text: str, name: str = "dev.tsv") -> Callable[[Ctx], None]:
    def build(ctx: Ctx) -> None:
        ctx.base("llama", "new")
        (ctx.tmp / name).write_text(text)

    return build


def _nothing(ctx: Ctx) -> None:
    ctx.base("llama", "new")


PORT_ARGV = ("port", "sst2-llama", "--base", "{tmp}/base")

BASE_RUNTIME_CASES: list[Case] = [
    Case(
        "base-missing-config",
        _base_for_port(_drop_config),
        PORT_ARGV,
        ("{tmp}/base", "config.json", "folder"),
    ),
    Case(
        "base-unreadable-tokenizer",
        _base_for_port(_garbage_tokenizer),
        PORT_ARGV,
        ("{tmp}/base", "tokenizer"),
    ),
    Case(
        "base-pickle-only",
        _base_for_port(_pickle_only),
        PORT_ARGV,
        ("pytorch_model.bin", "safetensors", "convert"),
    ),
    Case(
        "base-not-a-gguf",
        _fake_gguf,
        ("models", "import-gguf", "{tmp}/model.gguf"),
        ("{tmp}/model.gguf", "not a GGUF file", ".gguf"),
    ),
    Case(
        "base-unknown-store-name",
        lambda ctx: ctx.store_patch(),
        ("port", "sst2-llama", "--base", "no-such-model"),
        ("no-such-model", "folder"),
    ),
    Case(
        "config-profile-unknown-key",
        _user_hardware_profile(
            'name = "my-card"\ndisplay_name = "My card"\nkind = "cuda"\nmemroy = "8GiB"\n'
        ),
        ("plan", "SmolLM2-135M", "--hardware", "my-card"),
        ("my-card.toml", "memroy", "did you mean"),
    ),
    Case(
        "config-profile-negative-memory",
        _user_hardware_profile(
            'name = "my-card"\ndisplay_name = "My card"\nkind = "cuda"\nmemory = "-8GiB"\n'
        ),
        ("plan", "SmolLM2-135M", "--hardware", "my-card"),
        ("my-card.toml", "memory"),
    ),
    Case(
        "runtime-plan-nothing-fits",
        _nothing,
        ("plan", "Mistral-7B-v0.3", "--hardware", "jetson-orin-nano-8gb", "--context", "400000"),
        ("Mistral-7B-v0.3", "does not fit", "--context"),
    ),
    Case(
        "runtime-pick-nothing-fits",
        _nothing,
        ("pick", "--hardware", "rtx-4060-8gb", "--context", "400000"),
        ("nothing fits", "--context"),
    ),
    Case(
        "runtime-port-unknown-precision",
        lambda ctx: (ctx.store_patch(), ctx.base("llama", "new")) and None,
        ("port", "sst2-llama", "--base", "{tmp}/base", "--precision", "nf3"),
        ("nf3", "--precision", "nf4"),
    ),
    Case(
        "runtime-eval-wrong-columns",
        _eval_file("review\tlabel\nfine movie\t1\n"),
        ("eval", "--task", "sst2", "--data", "{tmp}/dev.tsv", "--base", "{tmp}/base", "--limit", "1"),
        ("{tmp}/dev.tsv", "sentence", "label"),
    ),
    Case(
        "runtime-eval-test-split-without-labels",
        _eval_file("index\tsentence\n0\tfine movie\n", "test.tsv"),
        ("eval", "--task", "sst2", "--data", "{tmp}/test.tsv", "--base", "{tmp}/base"),
        ("{tmp}/test.tsv", "label"),
    ),
    Case(
        "runtime-train-bad-rank",
        _nothing,
        (
            "train",
            "--base",
            "{tmp}/base",
            "--task",
            "sst2",
            "--data",
            "{tmp}/none.tsv",
            "--name",
            "x",
            "--r",
            "0",
        ),
        ("`r`", "positive"),
    ),
    Case(
        "runtime-update-missing-corpus",
        _nothing,
        (
            "simulate-update",
            "{tmp}/base",
            "--corpus",
            "{tmp}/no-such-dir",
            "--out",
            "{tmp}/v2",
            "--steps",
            "1",
        ),
        ("{tmp}/no-such-dir", "corpus", "plain-text"),
    ),
]

CASES += BASE_RUNTIME_CASES


# --------------------------------------------------------------------------- cases (hostile-user findings)
# Each case below was found by trying to break the CLI as a careless or hostile user would;
# before its fix it crashed with a traceback, succeeded silently, or changed the store/outputs.


def _int8_factors(d: Path) -> None:
    """Store every LoRA factor as int8 (a quantized export peft can't attach)."""
    import torch
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(d / WEIGHTS))
    save_file({k: v.to(torch.int8) for k, v in tensors.items()}, str(d / WEIGHTS), metadata={"format": "pt"})


def _edit_json(path: Path, **changes: Any) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data, indent=2))


def _file_at(rel: str, text: str = "x") -> Callable[[Ctx], None]:
    def build(ctx: Ctx) -> None:
        (ctx.tmp / rel).write_text(text)

    return build


def _jsonl_for_eval(ctx: Ctx) -> None:
    ctx.base("llama", "new")
    (ctx.tmp / "d.jsonl").write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n')


def _stored_patch_and_base(ctx: Ctx) -> None:
    ctx.store_patch()
    ctx.base("llama", "new")
    (ctx.tmp / "d.tsv").write_text("sentence\tlabel\nfine movie\t1\nbad movie\t0\n")
    (ctx.tmp / "taken.txt").write_text("not a model folder")


def _base_and_corpus(ctx: Ctx) -> None:
    ctx.base("llama", "new")
    (ctx.tmp / "corpus.txt").write_text("hello world. " * 200)


def _one_recorded_run(ctx: Ctx) -> None:
    from portllm_edge.history import record_run

    record_run("eval", {"task": "sst2"}, {"accuracy": 0.5, "n": 2}, versions={}, hardware={})
    (ctx.tmp / "rep.txt").write_text("an existing file")


JSONL_EVAL = ("eval", "--task", "jsonl", "--data", "{tmp}/d.jsonl", "--base", "{tmp}/base")
UPDATE_ARGV = ("simulate-update", "{tmp}/base", "--corpus", "{tmp}/corpus.txt", "--out", "{tmp}/v2")
TRAIN_ARGV = ("train", "--base", "{tmp}/base", "--task", "sst2", "--data", "{tmp}/none.tsv", "--name", "x")
PORT_MERGE = ("port", "sst2-llama", "--base", "{tmp}/base", "--precision", "fp32")
EVAL_PREDICTIONS = (
    "eval", "--base", "{tmp}/base", "--task", "sst2", "--data", "{tmp}/d.tsv", "--precision", "fp32",
    "--no-record", "--predictions",
)  # fmt: skip
BENCH_ARGV = (
    "bench", "sst2-llama", "--base", "{tmp}/base", "--task", "sst2",
    "--train-data", "{tmp}/d.tsv", "--eval-data", "{tmp}/d.tsv",
)  # fmt: skip

HOSTILE_CASES: list[Case] = [
    Case(
        "patch-alpha-zero",
        _adapter_broken(lambda d: _edit_config(d, lora_alpha=0)),
        ("patch", "import", "{tmp}/adapter"),
        ("adapter_config.json", "`lora_alpha` is 0", "positive", "trained with"),
    ),
    Case(
        "patch-alpha-negative",
        _adapter_broken(lambda d: _edit_config(d, lora_alpha=-16)),
        ("patch", "import", "{tmp}/adapter"),
        ("adapter_config.json", "`lora_alpha` is -16", "positive", "flips its sign", "trained with"),
    ),
    Case(
        "patch-alpha-nan",
        _adapter_broken(lambda d: _edit_config(d, lora_alpha=float("nan"))),
        ("patch", "import", "{tmp}/adapter"),
        ("adapter_config.json", "`lora_alpha` is nan", "finite"),
    ),
    Case(
        "patch-target-modules-empty",
        _adapter_broken(lambda d: _edit_config(d, target_modules=[])),
        ("patch", "import", "{tmp}/adapter"),
        ("adapter_config.json", "`target_modules` is empty", "q_proj"),
    ),
    Case(
        "patch-target-modules-bad-regex",
        _adapter_broken(lambda d: _edit_config(d, target_modules="(((")),
        ("patch", "import", "{tmp}/adapter"),
        ("adapter_config.json", "'((('", "not a valid regular expression", "fix the regex"),
    ),
    Case(
        "patch-alpha-pattern-not-number",
        _adapter_broken(lambda d: _edit_config(d, alpha_pattern={"q_proj": "x"})),
        ("patch", "import", "{tmp}/adapter"),
        ("adapter_config.json", "`alpha_pattern`", "positive alphas"),
    ),
    Case(
        "patch-integer-factors",
        _adapter_broken(_int8_factors),
        ("patch", "import", "{tmp}/adapter"),
        ("adapter_model.safetensors", "lora_A", "dtype I8", "floating-point", "re-export"),
    ),
    Case(
        "patch-export-zip-name",
        _store_one,
        ("patch", "export", "sst2-llama", "{tmp}/out.zip"),
        ("{tmp}/out.zip", "unsupported archive type", ".tar.gz"),
    ),
    Case(
        "home-empty-string",
        lambda ctx: None,
        ("--home", "", "patch", "list"),
        ("--home is empty", "data folder"),
    ),
    Case(
        "home-is-a-file",
        _file_at("homefile"),
        ("--home", "{tmp}/homefile", "runs", "list"),
        ("--home {tmp}/homefile", "is a file", "point --home at a folder"),
    ),
    Case(
        "eval-template-single-brace",
        _jsonl_for_eval,
        (*JSONL_EVAL, "--template", "{text} {"),
        ("`--template`", "Single '{'", "{{"),
    ),
    Case(
        "eval-template-attribute-access",
        _jsonl_for_eval,
        (*JSONL_EVAL, "--template", "{text.__class__}"),
        ("{text.__class__}", "not a plain field name"),
    ),
    Case(
        "eval-template-format-spec",
        _jsonl_for_eval,
        (*JSONL_EVAL, "--template", "{text:>999999999}"),
        ("{text:>999999999}", "not a plain field name"),
    ),
    Case(
        "eval-predictions-is-folder",
        _eval_file("sentence\tlabel\nfine movie\t1\nbad movie\t0\n"),
        (
            "eval",
            "--task",
            "sst2",
            "--data",
            "{tmp}/dev.tsv",
            "--base",
            "{tmp}/base",
            "--predictions",
            "{tmp}",
        ),
        ("--predictions {tmp}", "is a folder", "file path"),
    ),
    Case(
        "base-config-size-is-string",
        _check_edit_base_config("llama", "new", hidden_size="64"),
        CHECK_ARGV,
        ("{tmp}/base/config.json", "`hidden_size` is '64'", "positive integer", "original config.json"),
    ),
    Case(
        "base-config-zero-heads",
        _base_for_port(lambda d: _edit_json(d / "config.json", num_attention_heads=0)),
        PORT_ARGV,
        ("{tmp}/base/config.json", "`num_attention_heads` is 0"),
    ),
    Case(
        "port-merge-dtype-before-save",
        _stored_patch_and_base,
        (*PORT_MERGE, "--merge-to", "{tmp}/merged", "--merge-dtype", "int8"),
        ("merge dtype `int8`", "bf16"),
    ),
    Case(
        "port-merge-to-existing-before-save",
        _stored_patch_and_base,
        (*PORT_MERGE, "--merge-to", "{tmp}/taken.txt"),
        ("{tmp}/taken.txt", "already exists", "--overwrite"),  # port's flag for --merge-to, not --force
    ),
    Case(
        "train-max-steps-negative",
        _nothing,
        (*TRAIN_ARGV, "--max-steps", "-5"),
        ("`max_steps`", "-5", "--max-steps 1"),
    ),
    Case(
        "train-max-steps-zero",
        _nothing,
        (*TRAIN_ARGV, "--max-steps", "0"),
        ("`max_steps`", "at least 1"),
    ),
    Case(
        "update-out-is-base",
        _base_and_corpus,
        ("simulate-update", "{tmp}/base", "--corpus", "{tmp}/corpus.txt", "--out", "{tmp}/base", "--force"),
        ("{tmp}/base", "`--out`", "replace the base", "new folder"),
    ),
    Case(
        "update-seq-len-one",
        _base_and_corpus,
        (*UPDATE_ARGV, "--seq-len", "1"),
        ("`--seq-len`", "at least 2"),
    ),
    Case(
        "update-batch-size-zero",
        _base_and_corpus,
        (*UPDATE_ARGV, "--batch-size", "0"),
        ("`--batch-size`", "at least 1"),
    ),
    Case(
        "update-steps-zero",
        _base_and_corpus,
        (*UPDATE_ARGV, "--steps", "0"),
        ("`--steps`", "at least 1"),
    ),
    Case(
        "update-lr-negative",
        _base_and_corpus,
        (*UPDATE_ARGV, "--lr", "-1"),
        ("`--lr`", "-1.0", "positive"),
    ),
    Case(
        "report-no-runs",
        lambda ctx: None,
        ("report", "--out", "{tmp}/rep"),
        ("no compare/eval/bench/port/train runs", "runs.sqlite", "`train` first"),
    ),
    Case(
        "report-last-zero",
        lambda ctx: None,
        ("report", "--out", "{tmp}/rep", "--last", "0"),
        ("`--last`", "at least 1"),
    ),
    Case(
        "report-out-is-file",
        _one_recorded_run,
        ("report", "--out", "{tmp}/rep.txt", "--no-budget"),
        ("{tmp}/rep.txt", "is a file", "--out"),
    ),
    Case(
        "report-unknown-hardware",
        lambda ctx: None,
        ("report", "--out", "{tmp}/rep", "--hardware", "rtx-4060"),
        ("unknown hardware profile 'rtx-4060'", "did you mean"),
    ),
    Case(
        "bench-repeats-zero",
        _stored_patch_and_base,
        (*BENCH_ARGV, "--repeats", "0"),
        ("`--repeats`", "at least 1"),
    ),
    Case(
        "pick-unknown-family",
        lambda ctx: None,
        ("pick", "--family", "lama"),
        ("unknown model family 'lama'", "--family llama"),
    ),
]

CASES += HOSTILE_CASES


# --------------------------------------------------------------------------- cases (second hostile pass)

HOSTILE2_CASES: list[Case] = [
    Case(
        "check-target-modules-regex-selects-nothing",
        _check_adapter_and_base("llama", "llama", lambda d: _edit_config(d, target_modules="q_proj")),
        CHECK_ARGV,
        ("`target_modules` 'q_proj'", "does not select", "whole module path"),
    ),
    Case(
        "check-layers-to-transform-drops-layers",
        _check_adapter_and_base("llama", "llama", lambda d: _edit_config(d, layers_to_transform=[0])),
        CHECK_ARGV,
        ("model.layers.1.self_attn", "does not select", "`layers_to_transform`"),
    ),
    Case(
        "patch-alpha-pattern-bad-regex",
        _check_adapter_and_base("llama", "llama", lambda d: _edit_config(d, alpha_pattern={"q_proj[": 16})),
        ("check", "{tmp}/adapter", "--base", "{tmp}/base"),
        ("adapter_config.json", "`alpha_pattern` key 'q_proj['", "regular expression", "regex"),
    ),
    Case(
        "patch-rslora-string-false",
        _adapter_broken(lambda d: _edit_config(d, use_rslora="false")),
        ("patch", "import", "{tmp}/adapter"),
        ("adapter_config.json", "`use_rslora` is 'false'", "true or false"),
    ),
    Case(
        "port-name-is-source-overwrite",
        _stored_patch_and_base,
        ("port", "sst2-llama", "--base", "{tmp}/base", "--name", "sst2-llama", "--overwrite"),
        ("--name 'sst2-llama'", "patch being ported", "--name NEW"),
    ),
    Case(
        "patch-export-out-inside-file",
        _stored_patch_and_base,
        ("patch", "export", "sst2-llama", "--format", "vllm", "--out", "{tmp}/taken.txt/x"),
        ("{tmp}/taken.txt/x", "{tmp}/taken.txt is a file", "folder you can write to"),
    ),
    Case(
        # the merge's checks run before the adapter export writes anything (a new user was left with --out)
        "patch-export-merge-to-base-not-from-gguf",
        _stored_patch_and_base,
        (
            "patch",
            "export",
            "sst2-llama",
            "--base",
            "{tmp}/base",
            "--format",
            "peft",
            "--out",
            "{tmp}/out",
            "--merge-to",
            "{tmp}/merged.gguf",
        ),
        ("{tmp}/base", "was not imported from a GGUF file"),
    ),
    Case(
        "merge-out-inside-file",
        _stored_patch_and_base,
        ("merge", "sst2-llama", "--base", "{tmp}/base", "--out", "{tmp}/taken.txt/sub/m"),
        ("{tmp}/taken.txt/sub/m", "{tmp}/taken.txt is a file", "folder you can write to"),
    ),
]

CASES += HOSTILE2_CASES


# --------------------------------------------------------------------------- cases (third hostile pass)


def _chain_out_holds_a_model(ctx: Ctx) -> None:
    """A chain's --out whose v2 is a folder the user made (another model), not a chain version."""
    _base_and_corpus(ctx)
    (ctx.tmp / "chain" / "v2").mkdir(parents=True)
    (ctx.tmp / "chain" / "v2" / "NOTE.txt").write_text("my own model, not a chain version")


def _base_corpus_and_file(ctx: Ctx) -> None:
    _base_and_corpus(ctx)
    (ctx.tmp / "taken.txt").write_text("a file, not a folder")


def _report_run_and_file(ctx: Ctx) -> None:
    _one_recorded_run(ctx)
    (ctx.tmp / "taken.txt").write_text("a file, not a folder")


def _forecast_inputs(breaker: Callable[[Path], None] | None = None) -> Callable[[Ctx], None]:
    def build(ctx: Ctx) -> None:
        ad = ctx.adapter()
        if breaker is not None:
            breaker(ad)
        ctx.base("llama", "new")
        ctx.base("llama", "old", name="old")

    return build


def _forecast_inputs_nan_base(ctx: Ctx) -> None:
    """The new base's layer-0 q_proj weight holds one NaN (a corrupt download)."""
    from safetensors.torch import load_file, save_file

    _forecast_inputs()(ctx)
    f = ctx.tmp / "base" / "model.safetensors"
    tensors = load_file(str(f))
    name = "model.layers.0.self_attn.q_proj.weight"
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[5] = float("nan")
    save_file(tensors, str(f), metadata={"format": "pt"})


CHAIN_ARGV = (
    "simulate-update", "{tmp}/base", "--corpus", "{tmp}/corpus.txt", "--chain", "1:1e-3",
    "--seq-len", "8", "--batch-size", "1",
)  # fmt: skip
FORECAST_ARGV = ("forecast", "{tmp}/adapter", "--base", "{tmp}/base", "--old", "{tmp}/old")

HOSTILE3_CASES: list[Case] = [
    Case(
        "update-chain-out-holds-another-model",
        _chain_out_holds_a_model,
        (*CHAIN_ARGV, "--out", "{tmp}/chain"),
        ("{tmp}/chain/v2", "not a version of this chain", "--force"),
    ),
    Case(
        "update-chain-stage-steps-zero",  # names the --chain item, not --steps (unused with --chain)
        _base_and_corpus,
        (*CHAIN_ARGV[:5], "2:1e-3,0:1e-3", *CHAIN_ARGV[6:], "--out", "{tmp}/chain"),
        ("STEPS of `--chain` item '0:0.001'", "at least 1", "--chain 10:2e-5"),
    ),
    Case(
        "update-chain-out-inside-file",
        _base_corpus_and_file,
        (*CHAIN_ARGV, "--out", "{tmp}/taken.txt/chain"),
        ("{tmp}/taken.txt/chain/v2", "{tmp}/taken.txt is a file", "folder you can write to"),
    ),
    Case(
        "update-out-inside-file",
        _base_corpus_and_file,
        (*UPDATE_ARGV[:-1], "{tmp}/taken.txt/v2", "--steps", "1"),
        ("{tmp}/taken.txt/v2", "{tmp}/taken.txt is a file", "folder you can write to"),
    ),
    Case(
        "report-out-inside-file",
        _report_run_and_file,
        ("report", "--out", "{tmp}/taken.txt/rep", "--no-budget"),
        ("{tmp}/taken.txt/rep", "{tmp}/taken.txt is a file", "--out"),
    ),
    Case(
        "forecast-nan-patch",
        _forecast_inputs(break_nan),
        FORECAST_ARGV,
        ("{tmp}/adapter/adapter_model.safetensors", "lora_B", "non-finite"),
    ),
    Case(
        "forecast-rank-disagrees-with-r",
        _forecast_inputs(break_wrong_r),
        FORECAST_ARGV,
        ("{tmp}/adapter", "rank 4", "`r` is 8"),
    ),
    Case(
        "check-new-base-nan-weight",  # was: `compatible`, a nan% drift row and a median that skipped it
        _forecast_inputs_nan_base,
        ("check", "{tmp}/adapter", "--base", "{tmp}/base", "--old", "{tmp}/old"),
        (
            "{tmp}/base/model.safetensors",
            "`model.layers.0.self_attn.q_proj.weight`",
            "NaN or Inf",
            "re-download",
        ),
    ),
    Case(
        "forecast-new-base-nan-weight",
        _forecast_inputs_nan_base,
        FORECAST_ARGV,
        ("{tmp}/base/model.safetensors", "`model.layers.0.self_attn.q_proj.weight`", "NaN or Inf"),
    ),
    Case(
        "patch-export-folder-nan",  # a folder (not stored, so never validated on import) was exported as is
        _forecast_inputs(break_nan),
        ("patch", "export", "{tmp}/adapter", "--format", "vllm", "--out", "{tmp}/out", "--base", "{tmp}/old"),
        ("{tmp}/adapter/adapter_model.safetensors", "non-finite"),
    ),
    Case(
        "patch-export-folder-rank-disagrees-with-r",  # the GGUF was written with alpha/r for r=8
        _forecast_inputs(break_wrong_r),
        (
            "patch",
            "export",
            "{tmp}/adapter",
            "--format",
            "gguf-lora",
            "--out",
            "{tmp}/p.gguf",
            "--base",
            "{tmp}/old",
        ),
        ("{tmp}/adapter", "rank 4", "`r` is 8"),
    ),
    Case(
        "drift-nan-patch",  # printed a table with a nan patch size and exit 0
        _forecast_inputs(break_nan),
        ("drift", "{tmp}/adapter", "--base", "{tmp}/base", "--old", "{tmp}/old"),
        ("{tmp}/adapter/adapter_model.safetensors", "non-finite"),
    ),
    Case(
        "forecast-old-is-the-new-base",
        _forecast_inputs(),
        ("forecast", "{tmp}/adapter", "--base", "{tmp}/base", "--old", "{tmp}/base"),
        ("--old {tmp}/base", "same weights", "--base"),
    ),
    Case(
        # the converted copy became a folder without a manifest inside the patch store
        "patch-convert-out-into-the-patch-store",
        _adapter_broken(break_pickled_only),
        ("patch", "convert", "{tmp}/adapter", "--out", "{home}/patches/converted"),
        ("{home}/patches/converted", "inside the patch store", "patch import"),
    ),
    Case(
        # the predictions JSON replaced the stored patch's adapter_config.json (the store lost the patch)
        "eval-predictions-into-the-patch-store",
        _stored_patch_and_base,
        (*EVAL_PREDICTIONS, "{home}/patches/sst2-llama/adapter/adapter_config.json"),
        ("--predictions", "{home}/patches/sst2-llama/adapter/adapter_config.json", "inside the patch store"),
    ),
    Case(
        # the predictions JSON replaced the run history (every recorded run lost)
        "eval-predictions-onto-the-run-history",
        _stored_patch_and_base,
        (*EVAL_PREDICTIONS, "{home}/runs.sqlite"),
        ("--predictions", "{home}/runs.sqlite", "run history"),
    ),
    Case(
        # an empty --name silently imported under the folder's name (patch import and port refuse it)
        "models-import-empty-name",
        _base_and_corpus,
        ("models", "import", "{tmp}/base", "--name", ""),
        ("model name ''", "not allowed"),
    ),
    Case(
        # `$` matched before a trailing newline: a store folder named 'v2\n' was created
        "models-import-name-with-a-newline",
        _base_and_corpus,
        ("models", "import", "{tmp}/base", "--name", "v2\n"),
        ("model name 'v2\\n'", "not allowed"),
    ),
    Case(
        # the port stored a patch whose lineage records a port step across no update (times ported 1)
        "port-old-is-the-new-base",
        _stored_patch_and_base,
        (*PORT_MERGE, "--old", "{tmp}/base", "--name", "same"),
        ("--old {tmp}/base", "same weights", "no update to port across"),
    ),
    Case(
        # --overwrite replaced the stored patch being ported with the merged model (the store lost it)
        "port-merge-to-into-the-patch-store",
        _stored_patch_and_base,
        (*PORT_MERGE, "--merge-to", "{home}/patches/sst2-llama", "--overwrite", "--no-save"),
        ("{home}/patches/sst2-llama", "inside the patch store"),
    ),
    Case(
        "merge-out-is-the-patch-store",
        _stored_patch_and_base,
        ("merge", "sst2-llama", "--base", "{tmp}/base", "--out", "{home}", "--overwrite"),
        ("{home}", "holds the patch store", "delete the stored patches"),
    ),
    Case(
        "patch-export-into-the-patch-store",
        _stored_patch_and_base,
        ("patch", "export", "sst2-llama", "--format", "vllm", "--out", "{home}/patches/other", "--force"),
        ("{home}/patches/other", "inside the patch store"),
    ),
]

CASES += HOSTILE3_CASES


# --------------------------------------------------------------------------- cases (fourth hostile pass)

HOSTILE4_CASES: list[Case] = [
    Case(
        "update-chain-with-steps",  # --steps was silently unused with --chain
        _base_and_corpus,
        (*CHAIN_ARGV, "--out", "{tmp}/chain", "--steps", "5"),
        ("`--steps`", "`--chain`", "STEPS:LR", "--chain 5:"),
    ),
    Case(
        "update-chain-with-lr",
        _base_and_corpus,
        (*CHAIN_ARGV, "--out", "{tmp}/chain", "--lr", "1e-4"),
        ("`--lr`", "`--chain`", "STEPS:LR", ":0.0001"),
    ),
    Case(
        "update-chain-empty-item",  # `2:1e-4,,` ran one stage, ignoring the empty items
        _base_and_corpus,
        (*CHAIN_ARGV[:5], "2:1e-4,,", *CHAIN_ARGV[6:], "--out", "{tmp}/chain"),
        ("`--chain` '2:1e-4,,'", "item 2 is empty", "--chain 10:2e-5"),
    ),
    Case(
        "update-chain-empty",
        _base_and_corpus,
        (*CHAIN_ARGV[:5], " ", *CHAIN_ARGV[6:], "--out", "{tmp}/chain"),
        ("`--chain` ' '", "item 1 is empty", "--chain 10:2e-5"),
    ),
    # Destinations inside the model store, refused like the patch store (only the store writes there)
    Case(
        "merge-out-into-the-model-store",
        _stored_patch_and_base,
        ("merge", "sst2-llama", "--base", "{tmp}/base", "--out", "{home}/models/merged"),
        ("{home}/models/merged", "inside the model store", "models import"),
    ),
    Case(
        "merge-out-holds-the-model-store",
        _stored_patch_and_base,
        ("merge", "sst2-llama", "--base", "{tmp}/base", "--out", "{home}/models", "--overwrite"),
        ("{home}/models", "inside the model store"),
    ),
    Case(
        "port-merge-to-into-the-model-store",
        _stored_patch_and_base,
        (*PORT_MERGE, "--merge-to", "{home}/models/merged", "--no-save"),
        ("{home}/models/merged", "inside the model store"),
    ),
    Case(
        "update-out-into-the-model-store",
        _base_and_corpus,
        (*UPDATE_ARGV[:-1], "{home}/models/v2", "--steps", "1"),
        ("{home}/models/v2", "inside the model store", "models import"),
    ),
    Case(
        "update-chain-out-into-the-model-store",
        _base_and_corpus,
        (*CHAIN_ARGV, "--out", "{home}/models/chain"),
        ("{home}/models/chain", "inside the model store"),
    ),
    Case(
        "patch-export-into-the-model-store",
        _stored_patch_and_base,
        ("patch", "export", "sst2-llama", "--format", "vllm", "--out", "{home}/models/other", "--force"),
        ("{home}/models/other", "inside the model store"),
    ),
    Case(
        "report-out-into-the-model-store",
        _one_recorded_run,
        ("report", "--out", "{home}/models/rep", "--no-budget"),
        ("{home}/models/rep", "inside the model store"),
    ),
]

CASES += HOSTILE4_CASES
