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
    read_adapter_layout,
)
from portllm_edge.porting.adapter_io import BaseIndex, read_base_index
from portllm_edge.porting.tensor_plan import TensorDecision, read_tensor_plan

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


def carry_tokens(
    patch: torch.Tensor, decision: TensorDecision, base_rows: torch.Tensor | None = None
) -> torch.Tensor:
    """Re-index a patch tensor's token axis by token string, as :func:`portllm_edge.porting.tensor_plan.plan_tensors` decided.

    Args:
        patch: The patch's tensor; its ``decision.axis`` has ``decision.old_size`` entries.
        decision: A ``carry`` decision (axis, sizes, ``(old, new)`` index pairs, fill).
        base_rows: For ``fill="base"``: the new base's tensor ``[new_size, ...]``.

    Returns:
        A tensor in ``patch``'s dtype whose token axis has ``decision.new_size`` entries: the patch's
        values at shared tokens' new indices, the new base's rows (or zeros) elsewhere.
    """
    import torch

    if decision.fill == "base" and base_rows is not None:
        out = base_rows.to(patch.dtype).clone()
    else:
        shape = list(patch.shape)
        shape[decision.axis] = decision.new_size
        out = torch.zeros(shape, dtype=patch.dtype)
    if decision.pairs:
        src = torch.tensor([p[0] for p in decision.pairs], dtype=torch.long)
        dst = torch.tensor([p[1] for p in decision.pairs], dtype=torch.long)
        out.index_copy_(decision.axis, dst, patch.index_select(decision.axis, src))
    return out


@dataclass(frozen=True)
class RowCarry:
    """What happened to one token-indexed tensor of the patch.

    Attributes:
        tensor: The base tensor it patches (``model.embed_tokens.weight``, ``lm_head.weight``).
        old_rows / new_rows: Token-axis length in the patch and on the new base.
        carried: Entries copied from the patch (shared tokens).
        from_base: Entries not in the patch (``new_rows - carried``): the new base's rows for a
            saved tensor, zero (no update) for a LoRA factor.
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


def port_adapter(
    adapter_dir: Path,
    base_dir: Path,
    out_dir: Path,
    *,
    old_vocab_dir: Path | None = None,
    overwrite: bool = False,
) -> PortedAdapter:
    """Write a copy of a patch that fits ``base_dir``: canonical keys, token-indexed tensors carried over.

    Every tensor gets the fate :func:`portllm_edge.porting.tensor_plan.plan_tensors`
    decides: copied unchanged under peft's canonical name
    (``base_model.model.<base module>.lora_A.weight``), re-indexed by token string
    with :func:`carry_tokens` (``modules_to_save`` embedding/lm_head rows, LoRA
    factors on them), or dropped (copies of the old base's weights). ``adapter_config.json`` is
    copied with keys unknown to the installed peft removed (the preflight has
    already refused the ones that change the math) and ``base_model_name_or_path``
    pointing at the new base. The folder is written atomically.

    Args:
        adapter_dir: The patch (peft adapter folder).
        base_dir: The new base (HF model folder).
        out_dir: Destination folder (must not exist unless ``overwrite``).
        old_vocab_dir: The old base (or a folder with the patch's tokenizer); see
            :func:`portllm_edge.porting.tensor_plan.find_old_vocab_dir`.
        overwrite: Replace an existing ``out_dir``.

    Returns:
        A :class:`PortedAdapter` (rows carried, keys renamed, config keys dropped).

    Raises:
        CompatibilityError: the plan refuses a tensor (no base counterpart, another
            shape, a shrinking vocabulary, rows to move without a tokenizer).
        PatchError / BaseModelError: unreadable inputs.
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    adapter_dir, base_dir = Path(adapter_dir), Path(base_dir)
    config = AdapterConfig.read(adapter_dir, refuse_unknown=False)
    layout = read_adapter_layout(adapter_dir)
    index = read_base_index(base_dir)
    plan = read_tensor_plan(adapter_dir, config, layout, index, old_vocab_dir)
    if plan.refusals:
        first = plan.refusals[0]
        raise CompatibilityError(f"{layout.path}: {first.reason}", hint=first.hint)
    tensors: dict[str, torch.Tensor] = {}
    rows: list[RowCarry] = []
    with safe_open(str(layout.path), framework="pt", device="cpu") as fh:
        for d in plan.decisions:
            if d.new_key is None:  # dropped copy of the old base's weight
                continue
            t = fh.get_tensor(d.key)
            if d.action == "carry":
                base_rows = base_tensor(index, d.target) if d.fill == "base" and d.target else None
                t = carry_tokens(t, d, base_rows)
                rows.append(
                    RowCarry(
                        d.target or d.key, d.old_size, d.new_size, len(d.pairs), d.new_size - len(d.pairs)
                    )
                )
            tensors[d.new_key] = t
    renamed = sum(1 for d in plan.decisions if d.new_key is not None and d.new_key != d.key)
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
    "carry_tokens",
    "compare_vocabs",
    "has_tokenizer",
    "port_adapter",
    "read_vocab",
]
