"""Data-free portability features of a patch between two base versions: weights and generic text only.

Why this module exists: a user who can no longer touch the task data still has the patch,
both bases and text that belongs to nobody. Each feature here is a candidate predictor of
the share of the patch's gain that survives the port (the recovered gain); which one
predicts it is measured in ``benchmarks/successive_updates.py`` and stored in
``calibration.json`` (see :mod:`portllm_edge.forecast.calibrate` and docs/forecast.md):

* ``drift_ratio``: the median over target modules of ‖W_new − W_old‖_F / ‖ΔW‖_F (what
  ``check`` and ``drift`` print, :func:`portllm_edge.porting.drift.compute_drift`);
* ``projected_ratio``: the median of ‖U_Bᵀ (W_new − W_old) V_A‖_F / ‖ΔW‖_F, the drift
  inside the patch's own column and row spaces;
* ``effect_cosine`` and ``effect_kept``: on generic text, the patch's effect on the
  next-token distribution over the old base, e_old = p(old + patch) − p(old), against its
  effect over the new base, e_new = p(new + patch) − p(new) (``p``: softmax probabilities
  at every position, ``[T, vocab]``): cosine(e_old, e_new) and ⟨e_new, e_old⟩ / ‖e_old‖²
  (the share of the old effect that the new one keeps, along it).

The generic text is the prose that ships with CPython (``pydoc_data.topics``), the topics
in reverse alphabetical order, so the demo's update (which trains on the start of the same
topics in alphabetical order) has not seen it. It must not read any task data.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

GENERIC_BLOCKS = 4
GENERIC_SEQ_LEN = 128
"""The generic text is cut into ``GENERIC_BLOCKS`` blocks of ``GENERIC_SEQ_LEN`` tokens (512 tokens)."""


@dataclass(frozen=True)
class ForecastFeatures:
    """The candidate features of one (patch, old base, new base).

    Attributes:
        base_drift: median relative drift ‖W_new − W_old‖_F / ‖W_old‖_F of the target modules.
        patch_size: median ‖ΔW‖_F / ‖W_old‖_F.
        drift_ratio: median per-module base_drift / patch_size (candidate c).
        projected_ratio: median per-module projected drift / patch_size (candidate a).
        effect_cosine: cosine of the patch's effects on generic text, old vs new base (candidate b),
            or ``None`` when not computed.
        effect_kept: ⟨e_new, e_old⟩ / ‖e_old‖², or ``None``.
        tokens: generic-text tokens the effects were measured on (0 when not computed).
    """

    base_drift: float
    patch_size: float
    drift_ratio: float
    projected_ratio: float
    effect_cosine: float | None = None
    effect_kept: float | None = None
    tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (an infinite ratio becomes ``None``)."""
        return {k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in asdict(self).items()}


def generic_text() -> str:
    """The generic prose the effect features are measured on (``pydoc_data.topics``, reverse key order)."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics, reverse=True))


def _generic_blocks(tokenizer: Any) -> Any:
    import torch

    from portllm_edge.training.batches import chunk_text

    blocks = chunk_text(tokenizer, [generic_text()], GENERIC_SEQ_LEN, max_blocks=GENERIC_BLOCKS)
    return torch.tensor(blocks[:GENERIC_BLOCKS])


def _effect(base_dir: Path, adapter_dir: Path, old_base_dir: Path | None, ids: Any) -> Any:
    """``p(base + patch) − p(base)`` on ``ids`` (``[blocks, T]``) as a ``[blocks·T, vocab]`` float32 tensor."""
    import torch

    from portllm_edge.porting.attach import attach_patch
    from portllm_edge.porting.load import load_base_model
    from portllm_edge.porting.port import checked_adapter

    loaded = load_base_model(str(base_dir), "fp32", device="cpu")
    with tempfile.TemporaryDirectory(prefix="portllm-forecast-") as tmp:
        attach_dir, _ = checked_adapter(adapter_dir, base_dir, Path(tmp), old_base_dir=old_base_dir)
        ported = attach_patch(loaded.model, loaded.tokenizer, attach_dir)
    model = ported.model
    with torch.inference_mode():
        with_patch = torch.softmax(model(input_ids=ids).logits.float(), dim=-1)
        with model.disable_adapter():
            without = torch.softmax(model(input_ids=ids).logits.float(), dim=-1)
    return (with_patch - without).reshape(-1, with_patch.shape[-1])


def _shared_tokens(old_base_dir: Path, new_base_dir: Path, ids: Any) -> tuple[Any, Any, Any]:
    """The tokens both vocabularies share, by string: their old ids, their new ids, and ``ids`` in new ids.

    Identical (or unreadable) vocabularies: every column and ``ids`` unchanged. A grown or
    re-mapped vocabulary (Mistral v0.2 -> v0.3): the effects are compared on the shared
    tokens only, and the new base reads the same text through its own ids.

    Raises:
        CompatibilityError: the generic text uses a token the new vocabulary lacks.
    """
    import torch

    from portllm_edge.errors import CompatibilityError
    from portllm_edge.porting.vocab import read_vocab

    old_v, new_v = read_vocab(old_base_dir), read_vocab(new_base_dir)
    if old_v is None or new_v is None or old_v == new_v:
        return slice(None), slice(None), ids
    shared = sorted(old_v.keys() & new_v.keys(), key=old_v.__getitem__)
    to_new = {old_v[t]: new_v[t] for t in shared}
    lacking = sorted({int(i) for i in ids.flatten().tolist()} - to_new.keys())
    if lacking:
        raise CompatibilityError(
            f"{new_base_dir}: the vocabulary lacks {len(lacking)} tokens of the old base's that the generic "
            f"text uses (old ids {lacking[:5]}), so the patch's effects can't be compared on the same text.",
            hint="use a forecast calibrated on a weights-only feature, or evaluate the port on task data",
        )
    old_cols = torch.tensor([old_v[t] for t in shared])
    new_cols = torch.tensor([new_v[t] for t in shared])
    new_ids = torch.tensor([[to_new[int(i)] for i in row] for row in ids.tolist()], dtype=ids.dtype)
    return old_cols, new_cols, new_ids


_OLD_EFFECT: dict[tuple[str, str, Any], Any] = {}
"""The last old-base effect, so several new versions of one lineage reuse it in one process."""


def effect_agreement(adapter_dir: Path, old_base_dir: Path, new_base_dir: Path) -> tuple[float, float, int]:
    """``(cosine, kept, tokens)`` of the patch's effects on generic text over the old and the new base.

    Loads each base at fp32 on CPU in turn (one in memory at a time) and attaches the patch
    with the port's own preflight and rewrite. When the vocabulary changed, the effects are
    compared over the tokens both share (:func:`_shared_tokens`).

    Raises:
        BaseModelError, CompatibilityError, PortingError: as loading and porting the patch.
    """
    from transformers import AutoTokenizer

    ids = _generic_blocks(AutoTokenizer.from_pretrained(old_base_dir))
    key = (str(Path(adapter_dir).resolve()), str(Path(old_base_dir).resolve()), ids.shape)
    if key not in _OLD_EFFECT:
        _OLD_EFFECT.clear()  # one entry: [512, vocab] float32 is ~100 MB for a 49k vocabulary
        _OLD_EFFECT[key] = _effect(old_base_dir, adapter_dir, None, ids)
    old_cols, new_cols, new_ids = _shared_tokens(old_base_dir, new_base_dir, ids)
    e_old = _OLD_EFFECT[key][:, old_cols]
    e_new = _effect(new_base_dir, adapter_dir, old_base_dir, new_ids)[:, new_cols]
    dot = float((e_old.double() * e_new.double()).sum())
    n_old, n_new = float(e_old.double().norm()), float(e_new.double().norm())
    cosine = dot / (n_old * n_new) if n_old > 0 and n_new > 0 else 0.0
    kept = dot / n_old**2 if n_old > 0 else 0.0
    return cosine, kept, int(ids.numel())


def candidate_features(
    adapter_dir: str | Path, old_base_dir: str | Path, new_base_dir: str | Path, *, effects: bool = True
) -> ForecastFeatures:
    """Every candidate feature of a patch between ``old_base_dir`` and ``new_base_dir``.

    Args:
        adapter_dir: The patch (a peft LoRA folder), trained on the old base.
        old_base_dir, new_base_dir: Local model folders of one architecture.
        effects: Also run the forward passes of the generic-text effects (4 forward passes of
            512 tokens; weights-only features otherwise).

    Raises:
        CompatibilityError: the bases differ in architecture or lack a target module.
        BaseModelError, PatchError, PortingError: unreadable inputs.
    """
    from portllm_edge.porting.drift import compute_drift

    adapter, old, new = Path(adapter_dir), Path(old_base_dir), Path(new_base_dir)
    drift = compute_drift(adapter, old, new)
    cosine = kept = None
    tokens = 0
    if effects:
        cosine, kept, tokens = effect_agreement(adapter, old, new)
    return ForecastFeatures(
        base_drift=drift.median_base_drift,
        patch_size=drift.median_patch_size,
        drift_ratio=drift.median_ratio,
        projected_ratio=drift.median_projected_ratio,
        effect_cosine=cosine,
        effect_kept=kept,
        tokens=tokens,
    )
