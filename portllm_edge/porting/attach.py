"""Attach a stored patch, unmerged and without training, to a loaded base, and prove it took effect.

PortLLM (Khan et al., ICLR 2025, §3): a LoRA patch ΔW = (lora_alpha/r)·B·A learned
on an old base is applied unchanged to the updated base: W_new + ΔW. We attach it
with peft (``PeftModel.from_pretrained``, inference mode) and then check three
post-conditions that peft itself does not enforce (it only warns):

1. 100 % of the patch's tensors landed in a module of the base, with equal values;
2. the output differs from the bare base (the patch is not a silent no-op);
3. no logit is NaN or Inf.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from portllm_edge.errors import PatchError, PortingError
from portllm_edge.patches.adapter_format import model_state_keys

PROBE_TEXT = "The patch was ported onto the updated base model, and the answer is"


@dataclass(frozen=True)
class AttachReport:
    """What attaching a patch did.

    Attributes:
        total_tensors: tensors in ``adapter_model.safetensors``.
        matched_tensors: of those, loaded into a module with equal values.
        unmatched: names of tensors that matched no module (first 20).
        max_abs_logit_change: max |logits(base+patch) − logits(base)| on a probe text.
        relative_logit_change: that change divided by max |logits(base)|.
        finite: all probe logits finite.
        seconds: wall time of attaching and checking, seconds.
    """

    total_tensors: int
    matched_tensors: int
    unmatched: tuple[str, ...]
    max_abs_logit_change: float
    relative_logit_change: float
    finite: bool
    seconds: float

    @property
    def match_fraction(self) -> float:
        """matched / total (1.0 for a complete port)."""
        return self.matched_tensors / self.total_tensors if self.total_tensors else 0.0


@dataclass
class PortedModel:
    """A base with a patch attached (peft ``PeftModel``), plus the attach report."""

    model: Any
    tokenizer: Any
    report: AttachReport
    extras: dict[str, Any] = field(default_factory=dict)


def verify_loaded_tensors(
    peft_model: Any, adapter_file: Path, adapter_name: str = "default"
) -> tuple[int, int, list[str]]:
    """Compare every tensor of ``adapter_file`` with the parameter it was loaded into.

    Returns:
        ``(total, matched, unmatched_names)``; a tensor matches when a parameter of the
        same shape holds the same values (after casting to the parameter's dtype).
    """
    import torch
    from safetensors import safe_open

    params = dict(peft_model.named_parameters())
    total, matched, unmatched = 0, 0, []
    with safe_open(str(adapter_file), framework="pt") as fh:
        for key in fh.keys():
            total += 1
            tensor = fh.get_tensor(key)
            hit = False
            for cand in model_state_keys(key, adapter_name):
                p = params.get(cand)
                if p is not None and tuple(p.shape) == tuple(tensor.shape):
                    hit = bool(torch.equal(p.detach().cpu(), tensor.to(p.dtype)))
                    if hit:
                        break
            if hit:
                matched += 1
            else:
                unmatched.append(key)
    return total, matched, unmatched


def probe_logits(model: Any, tokenizer: Any, text: str = PROBE_TEXT) -> Any:
    """Logits of ``model`` on ``text``, shape ``[1, seq, vocab]``, float32 on CPU."""
    import torch

    enc = tokenizer(text, return_tensors="pt")
    device = next(model.parameters()).device
    with torch.inference_mode():
        out = model(**{k: v.to(device) for k, v in enc.items()})
    return out.logits.float().cpu()


def attach_patch(
    base_model: Any,
    tokenizer: Any,
    adapter_dir: str | Path,
    *,
    adapter_name: str = "default",
    min_relative_change: float = 1e-6,
) -> PortedModel:
    """Attach the LoRA adapter in ``adapter_dir`` to ``base_model`` (unmerged) and verify it.

    Args:
        base_model: a loaded ``transformers`` causal LM (any precision).
        tokenizer: its tokenizer.
        adapter_dir: a peft adapter folder (``adapter_config.json``, ``adapter_model.safetensors``).
        adapter_name: peft adapter name.
        min_relative_change: the smallest max-|Δlogit| / max-|logit| that counts as "the patch changed
            the output"; below it the port fails as a no-op.

    Returns:
        A :class:`PortedModel` (peft model in eval mode plus its :class:`AttachReport`).

    Raises:
        PatchError: the adapter folder is incomplete.
        PortingError: a tensor matched no module, the output did not change, or it is NaN/Inf;
            or a 4-bit base whose weights a CPU forward pass already repacked (bitsandbytes'
            AVX512-BF16 layout, :mod:`portllm_edge.porting.quant`: its outputs are not the NF4
            math's; :func:`~portllm_edge.porting.load.load_base_model` never lets that happen).
    """
    from peft import PeftModel

    adapter_dir = Path(adapter_dir)
    weights = _weights_file(adapter_dir)
    _refuse_repacked(base_model)
    start = time.perf_counter()
    base_logits = probe_logits(base_model, tokenizer)
    with _quiet_peft():
        try:
            from portllm_edge.porting.offload import is_offloaded, peft_from_pretrained

            attach = peft_from_pretrained if is_offloaded(base_model) else PeftModel.from_pretrained
            model = attach(base_model, str(adapter_dir), adapter_name=adapter_name, is_trainable=False)
        except (ValueError, RuntimeError, KeyError, TypeError) as exc:
            raise _attach_error(adapter_dir, exc) from exc
    model.eval()
    report = _check_attached(model, tokenizer, weights, adapter_name, base_logits, start, min_relative_change)
    return PortedModel(model=model, tokenizer=tokenizer, report=report)


class PatchSwapper:
    """One base in memory, one patch active at a time: the fleet port's attach step.

    The first patch wraps the bare base with ``PeftModel.from_pretrained``; each later one is
    added with ``load_adapter`` and ``set_adapter``, and every other adapter is removed with
    ``delete_adapter`` (peft's multi-adapter API), so the output is the base plus that patch
    alone. Each patch passes the same checks as :func:`attach_patch`, against the bare base's
    probe logits computed once here.

    bitsandbytes' CPU repacking of 4-bit weights (see :mod:`portllm_edge.porting.quant`) is
    switched off first: after a repacking forward pass, a patch added with ``load_adapter``
    gave outputs unlike the same patch attached alone (max |Δlogit| 0.58 on SmolLM2-135M at
    NF4, measured); without repacking they are equal.

    Args:
        base_model: a loaded causal LM (any precision); it is wrapped in place.
        tokenizer: its tokenizer.

    Raises:
        PortingError: a 4-bit base that a forward pass already repacked (see :func:`attach_patch`).
    """

    def __init__(self, base_model: Any, tokenizer: Any) -> None:
        _refuse_repacked(base_model)
        self.model = base_model
        self.tokenizer = tokenizer
        self.base_logits = probe_logits(base_model, tokenizer)
        self._count = 0

    def attach(self, adapter_dir: str | Path, *, min_relative_change: float = 1e-6) -> PortedModel:
        """Make ``adapter_dir`` the one active patch and verify it.

        Returns:
            A :class:`PortedModel` whose ``model`` is ``self.model`` with this patch active.

        Raises:
            PatchError: the adapter folder is incomplete.
            PortingError: peft could not load it, a tensor matched no module, the output did
                not change, or it is NaN/Inf. A later :meth:`attach` removes the failed patch.
        """
        from peft import PeftModel

        adapter_dir = Path(adapter_dir)
        weights = _weights_file(adapter_dir)
        self._count += 1
        name = f"patch_{self._count}"
        start = time.perf_counter()
        with _quiet_peft():
            try:
                if isinstance(self.model, PeftModel):
                    self.model.load_adapter(str(adapter_dir), adapter_name=name, is_trainable=False)
                    self.model.set_adapter(name)
                    for other in [n for n in self.model.peft_config if n != name]:
                        self.model.delete_adapter(other)
                else:
                    self.model = PeftModel.from_pretrained(
                        self.model, str(adapter_dir), adapter_name=name, is_trainable=False
                    )
            except (ValueError, RuntimeError, KeyError, TypeError) as exc:
                raise _attach_error(adapter_dir, exc) from exc
        self.model.eval()
        report = _check_attached(
            self.model, self.tokenizer, weights, name, self.base_logits, start, min_relative_change
        )
        return PortedModel(model=self.model, tokenizer=self.tokenizer, report=report)


def _refuse_repacked(base_model: Any) -> None:
    """Raise on a 4-bit base already repacked by bitsandbytes on CPU; else switch repacking off."""
    from portllm_edge.porting.quant import disable_cpu_repacking, repacked_modules

    packed = repacked_modules(base_model)
    if packed:
        raise PortingError(
            f"{len(packed)} 4-bit layers of the base were repacked by a CPU forward pass "
            f"(first: {packed[0]}); their outputs differ from the NF4 weights'.",
            hint="load the base with portllm_edge.porting.load.load_base_model, which keeps the NF4 layout",
        )
    disable_cpu_repacking(base_model)


def _weights_file(adapter_dir: Path) -> Path:
    weights = adapter_dir / "adapter_model.safetensors"
    if not weights.is_file():
        raise PatchError(
            f"{adapter_dir}: no adapter_model.safetensors.",
            hint="pass a peft LoRA adapter folder saved with save_pretrained()",
        )
    return weights


@contextmanager
def _quiet_peft() -> Iterator[None]:
    """peft's warnings (missing keys, ...) are turned into our own checks; silence them meanwhile."""
    peft_logger = logging.getLogger("peft")
    level = peft_logger.level
    peft_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        peft_logger.setLevel(level)


def _attach_error(adapter_dir: Path, exc: Exception) -> PortingError:
    return PortingError(
        f"{adapter_dir}: peft could not attach the patch ({type(exc).__name__}: {str(exc)[:200]}).",
        hint="run `portllm-edge check PATCH --base BASE` to see which check fails",
    )


def _check_attached(
    model: Any,
    tokenizer: Any,
    weights: Path,
    adapter_name: str,
    base_logits: Any,
    start: float,
    min_relative_change: float,
) -> AttachReport:
    """The three post-conditions of the module docstring, on the attached ``model``."""
    import torch

    total, matched, unmatched = verify_loaded_tensors(model, weights, adapter_name)
    if matched != total:
        raise PortingError(
            f"{weights}: {total - matched} of {total} patch tensors matched no module of the base "
            f"(first: {unmatched[0]}).",
            hint="run `portllm-edge check PATCH --base BASE`; the patch was trained on another architecture "
            "or its keys use another prefix",
        )
    ported_logits = probe_logits(model, tokenizer)
    finite = bool(torch.isfinite(ported_logits).all())
    if not finite:
        raise PortingError(
            f"{weights}: the ported model produces NaN or Inf logits.",
            hint="check the patch with `portllm-edge patch verify`; try --precision bf16 or fp32",
        )
    change = float((ported_logits - base_logits).abs().max())
    scale = float(base_logits.abs().max()) or 1.0
    rel = change / scale
    if rel < min_relative_change:
        raise PortingError(
            f"{weights}: attaching the patch did not change the output (max |Δlogit| = {change:.3g}).",
            hint="the patch is a no-op (lora_B all zero?): train it first, or check target_modules",
        )
    return AttachReport(
        total_tensors=total,
        matched_tensors=matched,
        unmatched=tuple(unmatched[:20]),
        max_abs_logit_change=change,
        relative_logit_change=rel,
        finite=finite,
        seconds=time.perf_counter() - start,
    )
