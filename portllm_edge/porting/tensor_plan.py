"""What happens to each tensor of a patch on a new base: keep, carry by token, drop or refuse.

Why this module exists: the preflight (what it reports), the port rewrite
(:func:`portllm_edge.porting.vocab.port_adapter`, what it writes) and the
streaming merge (:mod:`portllm_edge.porting.merge`, what it adds) must take the
same decision for every saved tensor, or ``check`` promises what ``port`` does
not do. :func:`plan_tensors` takes that decision once, as a pure function of the
adapter's header layout, the base's header index and the two vocabularies.

A tensor whose rows (or columns) are token ids is carried *by token string*,
never by old id: a ``modules_to_save`` embedding/lm_head (rows), a LoRA on the
input embedding (``lora_embedding_A`` ``[r, vocab]``: columns) and a LoRA on
``lm_head`` (``lora_B`` ``[vocab, r]``: rows). Shared tokens keep the patch's
values at their new id; a token the old vocabulary lacks gets the new base's
row (full tensors) or zero (LoRA factors: no update for a token the patch never
saw). Vocabularies never shrink.

The old vocabulary is found one way, :func:`find_old_vocab_dir` (the patch
folder's tokenizer files, ``--old``, then the adapter's
``base_model_name_or_path`` when it is a local folder).

What it must not do: read tensor data, or import torch.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from portllm_edge.patches.adapter_format import (
    AdapterConfig,
    AdapterLayout,
    LoraModule,
    canonical_key,
    resolve_module,
)
from portllm_edge.porting.adapter_io import BaseIndex

Action = Literal["keep", "carry", "drop", "refuse"]


@dataclass(frozen=True)
class TensorDecision:
    """The decision for one adapter tensor.

    Attributes:
        key: The key in the patch's ``adapter_model.safetensors``.
        action: ``keep`` (copied unchanged under ``new_key``), ``carry`` (re-indexed by
            token string along ``axis``), ``drop`` (not written: a copy of the old
            base's weight) or ``refuse`` (the port cannot express it).
        reason: One line naming the tensor and why.
        new_key: peft's canonical key on the new base (``None`` for drop/refuse).
        target: The base tensor it patches or replaces (``model.embed_tokens.weight``), or ``None``.
        hint: How to fix a refusal.
        axis: For ``carry``: the token axis (0 = rows, 1 = columns).
        old_size / new_size: For ``carry``: the token axis length in the patch and on the new base.
        pairs: For ``carry``: ``(old_index, new_index)`` per shared token, sorted by new index.
        fill: For ``carry``: what unshared positions hold, ``"base"`` (the new base's rows) or ``"zero"``.
        problem: For ``refuse``: ``"missing"`` (no base module), ``"shape"``, ``"shrink"``,
            ``"tokenizer"`` (rows must move but a vocabulary is unknown) or ``"unknown"`` (not LoRA).
    """

    key: str
    action: Action
    reason: str
    new_key: str | None = None
    target: str | None = None
    hint: str | None = None
    axis: int = 0
    old_size: int = 0
    new_size: int = 0
    pairs: tuple[tuple[int, int], ...] = ()
    fill: Literal["base", "zero"] = "base"
    problem: str | None = None


@dataclass
class TensorPlan:
    """Every adapter tensor's decision, in file order.

    Attributes:
        decisions: One :class:`TensorDecision` per adapter key.
        targets: Adapter module path -> base module path, for LoRA modules that resolve.
        old_vocab_dir: Where the old vocabulary came from, or ``None``.
    """

    decisions: list[TensorDecision] = field(default_factory=list)
    targets: dict[str, str] = field(default_factory=dict)
    old_vocab_dir: Path | None = None

    @property
    def refusals(self) -> list[TensorDecision]:
        """The decisions that refuse a tensor."""
        return [d for d in self.decisions if d.action == "refuse"]

    @property
    def carries(self) -> list[TensorDecision]:
        """The decisions that re-index a tensor by token string."""
        return [d for d in self.decisions if d.action == "carry"]

    def get(self, key: str) -> TensorDecision:
        """The decision for adapter key ``key``.

        Raises:
            KeyError: no such key.
        """
        for d in self.decisions:
            if d.key == key:
                return d
        raise KeyError(key)

    @property
    def rewrites(self) -> bool:
        """True when a peft-loadable copy differs from the patch file (renamed, carried or dropped tensors)."""
        return any(d.action in ("carry", "drop") or d.new_key != d.key for d in self.decisions)


def find_old_vocab_dir(adapter_dir: Path, config: AdapterConfig, old_base_dir: Path | None) -> Path | None:
    """Where the patch's (old) vocabulary comes from, or ``None`` when unknown.

    In order: the adapter folder's own tokenizer files, ``old_base_dir``, and the
    adapter's ``base_model_name_or_path`` when it is a local folder.
    """
    from portllm_edge.porting.vocab import has_tokenizer

    if has_tokenizer(adapter_dir):
        return Path(adapter_dir)
    if old_base_dir is not None and has_tokenizer(old_base_dir):
        return Path(old_base_dir)
    ref = config.base_model_name_or_path
    if ref:
        with contextlib.suppress(OSError, ValueError):
            p = Path(ref)
            if p.is_dir() and has_tokenizer(p):
                return p
    return None


def token_pairs(
    old_vocab: dict[str, int], new_vocab: dict[str, int], old_size: int, new_size: int
) -> list[tuple[int, int]]:
    """``(old_index, new_index)`` for every token both vocabularies share, by string, sorted by new index.

    Tokens whose id falls outside either matrix (tokenizer entries past a padded matrix) are skipped.
    """
    pairs = [
        (oid, new_vocab[tok])
        for tok, oid in old_vocab.items()
        if tok in new_vocab and 0 <= oid < old_size and 0 <= new_vocab[tok] < new_size
    ]
    pairs.sort(key=lambda p: p[1])
    return pairs


@dataclass(frozen=True)
class Vocabs:
    """The two vocabularies (token string -> id), either ``None`` when its tokenizer is unknown."""

    old: dict[str, int] | None
    new: dict[str, int] | None

    @property
    def differ(self) -> bool:
        """Both known and not identical."""
        return self.old is not None and self.new is not None and self.old != self.new


def is_vocab_tensor(name: str, index: BaseIndex) -> bool:
    """True for the input embedding and the lm_head (their rows are token ids)."""
    return name == index.embedding_name() or name.endswith("lm_head.weight") or name.endswith("lm_head.bias")


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


def _vocab_decision(
    key: str, new_key: str, target: str, axis: int, old_size: int, new_size: int, vocabs: Vocabs, fill: str
) -> TensorDecision:
    """keep / carry / refuse for a tensor whose ``axis`` is indexed by token id."""
    if old_size == new_size and not vocabs.differ:
        return TensorDecision(key, "keep", f"`{key}`: same vocabulary", new_key, target)
    if new_size < old_size:
        return TensorDecision(
            key,
            "refuse",
            f"`{key}` has {old_size} vocabulary rows but the base's `{target}` has only {new_size}: "
            "the vocabulary would shrink (a vocabulary never shrinks when porting)",
            target=target,
            hint="port onto a base whose vocabulary contains the patch's (a newer version), never a smaller one",
            problem="shrink",
        )
    if vocabs.old is None or vocabs.new is None:
        which = "old" if vocabs.old is None else "new"
        return TensorDecision(
            key,
            "refuse",
            f"`{key}` has {old_size} vocabulary rows, the base's `{target}` {new_size}, and the {which} "
            "tokenizer is not available to map rows by token",
            target=target,
            hint="pass --old OLD_BASE (or copy the old tokenizer files into the patch folder)",
            problem="tokenizer",
        )
    pairs = tuple(token_pairs(vocabs.old, vocabs.new, old_size, new_size))
    how = "grew" if new_size > old_size else "was re-mapped"
    return TensorDecision(
        key,
        "carry",
        f"`{key}`: vocabulary {how} {old_size} → {new_size}; {len(pairs)} shared tokens carried by token string",
        new_key,
        target,
        axis=axis,
        old_size=old_size,
        new_size=new_size,
        pairs=pairs,
        fill="base" if fill == "base" else "zero",
    )


def _lora_decisions(
    lm: LoraModule, target: str, base: BaseIndex, vocabs: Vocabs, embed_module: str | None, shapes: bool
) -> list[TensorDecision]:
    """Decisions for one LoRA module's tensors (the token-indexed factor of embed/lm_head is carried)."""
    have = tuple(base.modules[target])
    vocab_axis: tuple[str, int] | None = None
    if lm.kind == "embedding" and target == embed_module:
        vocab_axis = ("lora_embedding_A", 1)  # ΔE = (B A)ᵀ: column t of A is token t's update
    elif lm.kind == "linear" and target.rpartition(".")[2] == "lm_head":
        vocab_axis = ("lora_B", 0)  # ΔW = B A: row t of B is token t's logit update
    want = lm.weight_shape(base.config.get("model_type"), target)
    comparable = (have[1:], want[1:]) if vocab_axis else (have, want)
    if shapes and comparable[0] != comparable[1]:
        why = (
            f"`{target}.weight` is {list(have)} but the patch's ΔW is {list(want)} "
            f"(`{lm.b_key}` {list(lm.b_shape)} · `{lm.a_key}` {list(lm.a_shape)})"
        )
        hint = "port onto a base of the same size (in_features/out_features must match)"
        return [
            TensorDecision(k, "refuse", why, target=target, hint=hint, problem="shape")
            for k in lm.slots.values()
        ]
    out = []
    for slot, key in lm.slots.items():
        new_key = canonical_key(target, slot)
        if vocab_axis is not None and slot.partition(".")[0] == vocab_axis[0]:
            axis = vocab_axis[1] if slot == vocab_axis[0] else 0
            shape = lm.a_shape if slot == "lora_embedding_A" else lm.b_shape
            out.append(
                _vocab_decision(key, new_key, f"{target}.weight", axis, shape[axis], have[0], vocabs, "zero")
            )
        else:
            out.append(TensorDecision(key, "keep", f"`{key}` → `{new_key}`", new_key, f"{target}.weight"))
    return out


def _saved_decision(
    name: str, key: str, shape: tuple[int, ...], base: BaseIndex, vocabs: Vocabs
) -> TensorDecision:
    """keep / carry / refuse for a full ``modules_to_save`` tensor."""
    target = resolve_saved_name(name, base)
    have = base_tensor_shape(base, target) if target else None
    if target is None or have is None:
        return TensorDecision(
            key,
            "refuse",
            f"saved tensor `{key}` has no counterpart in the base",
            hint="port onto a base that has this module",
            problem="missing",
        )
    new_key = canonical_key(*target.rsplit(".", 1))
    if is_vocab_tensor(target, base) and tuple(shape[1:]) == tuple(have[1:]):
        return _vocab_decision(key, new_key, target, 0, shape[0], have[0], vocabs, "base")
    if tuple(shape) != tuple(have):
        return TensorDecision(
            key,
            "refuse",
            f"saved tensor `{key}` is {list(shape)} but the base's `{target}` is {list(have)}",
            target=target,
            hint="this tensor cannot be ported onto this base; retrain the patch on it",
            problem="shape",
        )
    return TensorDecision(key, "keep", f"`{key}` replaces `{target}`", new_key, target)


def plan_tensors(layout: AdapterLayout, base: BaseIndex, vocabs: Vocabs) -> TensorPlan:
    """Decide every adapter tensor's fate on ``base`` (pure: headers and vocabularies only).

    Args:
        layout: The adapter's parsed header.
        base: The new base's header index.
        vocabs: The patch's and the new base's vocabularies.

    Returns:
        A :class:`TensorPlan` with one decision per adapter key.
    """
    plan = TensorPlan()
    embed = base.embedding_name()
    embed_module = embed.rpartition(".")[0] if embed else None
    modules = base.modules
    shapes = base.quantized_storage() is None  # packed 4-bit shapes are not comparable
    by_key: dict[str, TensorDecision] = {}
    for module, lm in layout.lora.items():
        target, _ = resolve_module(module, modules)
        if target is None:
            for key in lm.slots.values():
                by_key[key] = TensorDecision(
                    key,
                    "refuse",
                    f"LoRA module `{module}` has no counterpart in the base",
                    hint="the patch targets modules this base does not have; port onto the same architecture",
                    problem="missing",
                )
            continue
        plan.targets[module] = target
        by_key.update((d.key, d) for d in _lora_decisions(lm, target, base, vocabs, embed_module, shapes))
    for name, st in layout.saved.items():
        by_key[st.key] = _saved_decision(name, st.key, st.shape, base, vocabs)
    for key in layout.base_copies:
        by_key[key] = TensorDecision(
            key,
            "drop",
            f"`{key}` is a copy of the old base's weight (save_embedding_layers); the new base's is used",
        )
    for key in [*layout.unknown, *(k for m in layout.incomplete for k in _keys_of(layout, m))]:
        by_key[key] = TensorDecision(
            key,
            "refuse",
            f"`{key}` is not a complete LoRA factor pair or a saved module",
            hint="only plain LoRA adapters can be ported; re-export the patch with peft (peft_type LORA)",
            problem="unknown",
        )
    plan.decisions = [by_key[k.key] for k in layout.keys if k.key in by_key]
    return plan


def _keys_of(layout: AdapterLayout, module: str) -> list[str]:
    return [k.key for k in layout.keys if k.kind == "lora" and k.module == module]


def needs_vocab(layout: AdapterLayout) -> bool:
    """True when some adapter tensor may be indexed by token id (embedding, lm_head, saved modules)."""
    return bool(layout.saved) or any(
        lm.kind == "embedding" or lm.module.rpartition(".")[2] == "lm_head" for lm in layout.lora.values()
    )


def read_tensor_plan(
    adapter_dir: Path,
    config: AdapterConfig,
    layout: AdapterLayout,
    base: BaseIndex,
    old_base_dir: Path | None,
) -> TensorPlan:
    """:func:`plan_tensors` with the vocabularies read from disk (only when a tensor needs them).

    Raises:
        PatchError: a tokenizer file exists but cannot be parsed.
    """
    from portllm_edge.porting.vocab import read_vocab

    src = find_old_vocab_dir(adapter_dir, config, old_base_dir)
    vocabs = Vocabs(None, None)
    if needs_vocab(layout):
        vocabs = Vocabs(read_vocab(src) if src is not None else None, read_vocab(base.model_dir))
    plan = plan_tensors(layout, base, vocabs)
    plan.old_vocab_dir = src
    return plan


__all__ = [
    "TensorDecision",
    "TensorPlan",
    "Vocabs",
    "base_tensor_shape",
    "find_old_vocab_dir",
    "is_vocab_tensor",
    "needs_vocab",
    "plan_tensors",
    "read_tensor_plan",
    "resolve_saved_name",
    "token_pairs",
]
