"""Vocabulary changes between base versions: compare tokenizers, carry embedding rows over.

Why this module exists: a new base version may grow its vocabulary (Mistral 7B
v0.2 → v0.3 went from 32000 to 32768 rows, appending control tokens) or re-map
tokens. A LoRA on attention/MLP layers does not care, but a patch that carries
*full* embedding or lm_head rows (peft ``modules_to_save=["embed_tokens", "lm_head"]``)
holds one row per *old* token id, and peft refuses to load it onto a matrix with a
different row count. We port those rows by token string: a token both
vocabularies share gets the patch's (fine-tuned) row at its new id; every other
row keeps the new base's value. Matrices never shrink.

What it must not do: read base weights other than the one embedding/lm_head
tensor being ported, or guess an id mapping without the old tokenizer (token
strings are the only safe key).
"""

from __future__ import annotations

import contextlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from portllm_edge.errors import CompatibilityError, PatchError
from portllm_edge.fsutil import atomic_dir
from portllm_edge.patches.adapter_format import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    AdapterConfig,
    canonical_key,
    read_adapter_layout,
    resolve_module,
)
from portllm_edge.porting.adapter_io import BaseIndex, read_base_index

if TYPE_CHECKING:  # pragma: no cover
    import torch

TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model")
"""Files :func:`read_vocab` understands, in the order it tries them."""

MAX_LISTED = 20
"""How many added/removed/re-mapped tokens a diff keeps for display."""


# --------------------------------------------------------------------------- reading vocabularies


def has_tokenizer(folder: Path | None) -> bool:
    """True when ``folder`` holds a tokenizer file :func:`read_vocab` can read."""
    return folder is not None and any((Path(folder) / f).is_file() for f in TOKENIZER_FILES)


def read_vocab(folder: Path) -> dict[str, int] | None:
    """Read a tokenizer's token-string → id map from its files, without loading a model.

    Tries ``tokenizer.json`` (``model.vocab`` as a map for BPE/WordPiece/WordLevel
    or a ``[piece, score]`` list for Unigram, plus ``added_tokens``), then
    ``vocab.json`` (+ ``added_tokens.json``), then a sentencepiece
    ``tokenizer.model``.

    Args:
        folder: A model or adapter folder.

    Returns:
        The map, or ``None`` when the folder has no tokenizer files.

    Raises:
        PatchError: a tokenizer file exists but cannot be parsed (names the file).
    """
    d = Path(folder)
    tj = d / "tokenizer.json"
    if tj.is_file():
        try:
            data = json.loads(tj.read_text(encoding="utf-8"))
            model = data.get("model") or {}
            raw = model.get("vocab")
            vocab: dict[str, int] = {}
            if isinstance(raw, dict):
                vocab = {str(k): int(v) for k, v in raw.items()}
            elif isinstance(raw, list):
                vocab = {str(item[0]): i for i, item in enumerate(raw)}
            for tok in data.get("added_tokens") or []:
                vocab[str(tok["content"])] = int(tok["id"])
            return vocab
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, IndexError) as exc:
            raise PatchError(
                f"{tj}: cannot read the vocabulary ({exc})", hint="re-save the tokenizer"
            ) from None
    vj = d / "vocab.json"
    if vj.is_file():
        try:
            vocab = {str(k): int(v) for k, v in json.loads(vj.read_text(encoding="utf-8")).items()}
            added = d / "added_tokens.json"
            if added.is_file():
                vocab.update(
                    {str(k): int(v) for k, v in json.loads(added.read_text(encoding="utf-8")).items()}
                )
            return vocab
        except (OSError, UnicodeDecodeError, ValueError, AttributeError, TypeError) as exc:
            raise PatchError(
                f"{vj}: cannot read the vocabulary ({exc})", hint="re-save the tokenizer"
            ) from None
    sp = d / "tokenizer.model"
    if sp.is_file():
        try:
            import sentencepiece

            proc = sentencepiece.SentencePieceProcessor(model_file=str(sp))
            return {proc.id_to_piece(i): i for i in range(proc.get_piece_size())}
        except Exception as exc:
            raise PatchError(
                f"{sp}: cannot read the sentencepiece model ({exc})", hint="re-save the tokenizer"
            ) from None
    return None


def old_vocab_source(
    adapter_dir: Path, adapter_config: AdapterConfig, old_base_dir: Path | None
) -> Path | None:
    """Where the patch's (old) vocabulary comes from, or ``None`` when unknown.

    In order: the adapter folder's own tokenizer files, ``old_base_dir``, and the
    adapter's ``base_model_name_or_path`` when it is a local folder.
    """
    if has_tokenizer(adapter_dir):
        return Path(adapter_dir)
    if old_base_dir is not None and has_tokenizer(old_base_dir):
        return Path(old_base_dir)
    ref = adapter_config.base_model_name_or_path
    if ref:
        with contextlib.suppress(OSError, ValueError):
            p = Path(ref)
            if p.is_dir() and has_tokenizer(p):
                return p
    return None


@dataclass(frozen=True)
class VocabDiff:
    """How two vocabularies differ (by token string).

    Attributes:
        old_size / new_size: Number of tokens in each.
        shared: Tokens present in both.
        added_count / removed_count / remapped_count: Totals.
        added / removed: Up to :data:`MAX_LISTED` token strings, by id.
        remapped: Up to :data:`MAX_LISTED` ``(token, old_id, new_id)``.
    """

    old_size: int
    new_size: int
    shared: int
    added_count: int
    removed_count: int
    remapped_count: int
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    remapped: list[tuple[str, int, int]] = field(default_factory=list)

    @property
    def same(self) -> bool:
        """True when both vocabularies map the same strings to the same ids."""
        return self.added_count == 0 and self.removed_count == 0 and self.remapped_count == 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "old_size": self.old_size,
            "new_size": self.new_size,
            "shared": self.shared,
            "added_count": self.added_count,
            "removed_count": self.removed_count,
            "remapped_count": self.remapped_count,
            "added": self.added,
            "removed": self.removed,
            "remapped": [list(x) for x in self.remapped],
        }


def compare_vocabs(old: dict[str, int], new: dict[str, int]) -> VocabDiff:
    """Compare two token-string → id maps."""
    shared = old.keys() & new.keys()
    added = sorted(new.keys() - old.keys(), key=lambda t: new[t])
    removed = sorted(old.keys() - new.keys(), key=lambda t: old[t])
    remapped = sorted(((t, old[t], new[t]) for t in shared if old[t] != new[t]), key=lambda x: x[1])
    return VocabDiff(
        old_size=len(old),
        new_size=len(new),
        shared=len(shared),
        added_count=len(added),
        removed_count=len(removed),
        remapped_count=len(remapped),
        added=added[:MAX_LISTED],
        removed=removed[:MAX_LISTED],
        remapped=remapped[:MAX_LISTED],
    )


# --------------------------------------------------------------------------- carrying rows


def row_mapping(
    old_vocab: dict[str, int], new_vocab: dict[str, int], old_rows: int, new_rows: int
) -> list[tuple[int, int]]:
    """Pairs ``(old_row, new_row)`` for every token both vocabularies share, by string.

    Tokens whose id falls outside either matrix (e.g. tokenizer entries past a
    padded matrix) are skipped.
    """
    pairs = []
    for tok, oid in old_vocab.items():
        nid = new_vocab.get(tok)
        if nid is not None and 0 <= oid < old_rows and 0 <= nid < new_rows:
            pairs.append((oid, nid))
    pairs.sort(key=lambda p: p[1])
    return pairs


def carry_rows(
    patch_rows: torch.Tensor, base_rows: torch.Tensor, pairs: list[tuple[int, int]]
) -> torch.Tensor:
    """New matrix = the new base's rows, with the patch's rows copied to shared tokens' new ids.

    Args:
        patch_rows: ``[old_rows, ...]`` from the patch.
        base_rows: ``[new_rows, ...]`` from the new base (``new_rows >= old_rows``).
        pairs: From :func:`row_mapping`.

    Returns:
        A ``[new_rows, ...]`` tensor in ``patch_rows``' dtype.
    """
    import torch

    out = base_rows.to(patch_rows.dtype).clone()
    if pairs:
        src = torch.tensor([p[0] for p in pairs], dtype=torch.long)
        dst = torch.tensor([p[1] for p in pairs], dtype=torch.long)
        out[dst] = patch_rows[src]
    return out


@dataclass(frozen=True)
class RowCarry:
    """What happened to one vocabulary-sized tensor of the patch.

    Attributes:
        tensor: Base tensor name (``model.embed_tokens.weight``, ``lm_head.weight``).
        old_rows / new_rows: Row counts in the patch and in the new base.
        carried: Rows copied from the patch (shared tokens).
        from_base: Rows kept from the new base (``new_rows - carried``).
    """

    tensor: str
    old_rows: int
    new_rows: int
    carried: int
    from_base: int


@dataclass(frozen=True)
class PortedAdapter:
    """A patch rewritten to fit a new base.

    Attributes:
        adapter_dir: The written folder (a normal peft adapter).
        rows: One :class:`RowCarry` per vocabulary-sized tensor that changed size or mapping.
        renamed_keys: Keys whose name changed (prefix, ``.default`` infix, wrapper).
        dropped_config_keys: ``adapter_config.json`` keys the installed peft does not know, removed.
    """

    adapter_dir: Path
    rows: list[RowCarry]
    renamed_keys: int
    dropped_config_keys: list[str]

    @property
    def rows_carried(self) -> int:
        """Total rows carried over from the patch."""
        return sum(r.carried for r in self.rows)


def is_vocab_tensor(name: str, index: BaseIndex) -> bool:
    """True for the input embedding and the lm_head (their rows are token ids)."""
    return name == index.embedding_name() or name.endswith("lm_head.weight") or name.endswith("lm_head.bias")


def base_tensor(index: BaseIndex, name: str) -> torch.Tensor:
    """Read one base tensor (``lm_head.weight`` of a tied model reads the embedding)."""
    from safetensors import safe_open

    if name not in index.tensors and name.endswith("lm_head.weight") and index.tied:
        emb = index.embedding_name()
        if emb is not None:
            name = emb
    bt = index.tensors[name]
    with safe_open(str(bt.file), framework="pt", device="cpu") as fh:
        return fh.get_tensor(name)


def base_tensor_shape(index: BaseIndex, name: str) -> tuple[int, ...] | None:
    """Header shape of a base tensor (the embedding's for a tied, unstored ``lm_head.weight``)."""
    if name in index.tensors:
        return index.tensors[name].info.shape
    if name.endswith("lm_head.weight") and index.tied:
        emb = index.embedding_name()
        if emb is not None:
            return index.tensors[emb].info.shape
    return None


def resolve_saved_name(name: str, index: BaseIndex) -> str | None:
    """Map a saved tensor's normalized name (``<module>.weight``) onto a base tensor name."""
    module, _, param = name.rpartition(".")
    modules = {n.rpartition(".")[0] for n in index.tensors}
    if index.tied:
        modules.add("lm_head")
    base_module, _ = resolve_module(module, modules)
    return None if base_module is None else f"{base_module}.{param}"


def port_adapter(
    adapter_dir: Path,
    base_dir: Path,
    out_dir: Path,
    *,
    old_vocab_dir: Path | None = None,
    overwrite: bool = False,
) -> PortedAdapter:
    """Write a copy of a patch that fits ``base_dir``: normalized keys, vocabulary rows carried over.

    LoRA factors are copied unchanged under peft's canonical names
    (``base_model.model.<base module>.lora_A.weight``). Full ``modules_to_save``
    tensors keep their shape when it already matches; vocabulary-sized tensors
    (embedding, lm_head) whose row count grew are rebuilt with :func:`carry_rows`
    (token-string matching against the old tokenizer). ``adapter_config.json`` is
    copied with keys unknown to the installed peft removed (the preflight has
    already refused the ones that change the math) and ``base_model_name_or_path``
    pointing at the new base. The folder is written atomically.

    Args:
        adapter_dir: The patch (peft adapter folder).
        base_dir: The new base (HF model folder).
        out_dir: Destination folder (must not exist unless ``overwrite``).
        old_vocab_dir: Folder with the old tokenizer; default: see :func:`old_vocab_source`.
        overwrite: Replace an existing ``out_dir``.

    Returns:
        A :class:`PortedAdapter` (rows carried, keys renamed, config keys dropped).

    Raises:
        CompatibilityError: a saved tensor has no base counterpart, a
            non-vocabulary tensor changed shape, the vocabulary would shrink, or
            rows must be remapped but no old tokenizer is found.
        PatchError / BaseModelError: unreadable inputs.
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    adapter_dir, base_dir = Path(adapter_dir), Path(base_dir)
    config = AdapterConfig.read(adapter_dir, refuse_unknown=False)
    layout = read_adapter_layout(adapter_dir)
    index = read_base_index(base_dir)
    base_modules = index.modules
    new_vocab = read_vocab(base_dir)
    src = old_vocab_dir if old_vocab_dir is not None else old_vocab_source(adapter_dir, config, None)
    old_vocab = read_vocab(src) if src is not None else None

    tensors: dict[str, torch.Tensor] = {}
    rows: list[RowCarry] = []
    renamed = 0
    with safe_open(str(layout.path), framework="pt", device="cpu") as fh:
        for module, lm in layout.lora.items():
            target, _ = resolve_module(module, base_modules)
            if target is None:
                raise CompatibilityError(
                    f"{layout.path}: LoRA module `{module}` has no counterpart in {base_dir}",
                    hint="run `portllm-edge check` to see which target modules are missing",
                )
            for slot, key in lm.slots.items():
                new_key = canonical_key(target, slot)
                renamed += int(new_key != key)
                tensors[new_key] = fh.get_tensor(key)
        for name, st in layout.saved.items():
            target_name = resolve_saved_name(name, index)
            shape = base_tensor_shape(index, target_name) if target_name else None
            if target_name is None or shape is None:
                raise CompatibilityError(
                    f"{layout.path}: saved tensor `{st.key}` has no counterpart in {base_dir}",
                    hint="remove it from the patch or port onto a base with that module",
                )
            new_key = canonical_key(target_name.rpartition(".")[0], target_name.rpartition(".")[2])
            renamed += int(new_key != st.key)
            patch_t = fh.get_tensor(st.key)
            vocab_like = is_vocab_tensor(target_name, index)
            if tuple(st.shape) == tuple(shape) and (
                not vocab_like or old_vocab is None or new_vocab is None or old_vocab == new_vocab
            ):
                tensors[new_key] = patch_t
                continue
            if not vocab_like or tuple(st.shape[1:]) != tuple(shape[1:]):
                raise CompatibilityError(
                    f"{layout.path}: saved tensor `{st.key}` is {list(st.shape)} but the base's "
                    f"`{target_name}` is {list(shape)}",
                    hint="this tensor cannot be ported; retrain the patch on the new base",
                )
            if shape[0] < st.shape[0]:
                raise CompatibilityError(
                    f"{layout.path}: saved tensor `{st.key}` has {st.shape[0]} rows but the new base's "
                    f"`{target_name}` has only {shape[0]}; a vocabulary never shrinks when porting",
                    hint="port onto a base whose vocabulary contains the patch's, or retrain the patch",
                )
            if old_vocab is None or new_vocab is None:
                raise CompatibilityError(
                    f"{layout.path}: saved tensor `{st.key}` needs its rows re-mapped from {st.shape[0]} to "
                    f"{shape[0]}, but the {'old' if old_vocab is None else 'new'} tokenizer was not found",
                    hint="pass --old OLD_BASE (or put the old tokenizer files in the patch folder)",
                )
            pairs = row_mapping(old_vocab, new_vocab, st.shape[0], shape[0])
            tensors[new_key] = carry_rows(patch_t, base_tensor(index, target_name), pairs)
            rows.append(RowCarry(target_name, st.shape[0], shape[0], len(pairs), shape[0] - len(pairs)))

    dropped = [*config.dropped, *config.refused]
    new_config = {k: v for k, v in config.known.items() if k not in config.refused}
    new_config["base_model_name_or_path"] = str(base_dir)
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        save_file(
            {k: v.contiguous() for k, v in tensors.items()},
            str(tmp / WEIGHTS_NAME),
            metadata={"format": "pt"},
        )
        (tmp / CONFIG_NAME).write_text(
            json.dumps(new_config, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        readme = adapter_dir / "README.md"
        if readme.is_file():
            shutil.copy2(readme, tmp / "README.md")
        (tmp / "portllm_port.json").write_text(
            json.dumps(
                {
                    "source_adapter": str(adapter_dir),
                    "base": str(base_dir),
                    "rows": [r.__dict__ for r in rows],
                    "renamed_keys": renamed,
                    "dropped_config_keys": dropped,
                },
                indent=2,
            )
            + "\n",
            encoding="utf-8",
        )
    return PortedAdapter(Path(out_dir), rows, renamed, dropped)


__all__ = [
    "PortedAdapter",
    "RowCarry",
    "VocabDiff",
    "carry_rows",
    "compare_vocabs",
    "has_tokenizer",
    "old_vocab_source",
    "port_adapter",
    "read_vocab",
    "row_mapping",
]
