"""``pick``: rank (base model, precision) pairs that fit a budget, best first, with reasons.

Why this module exists: it is how the app "picks quantized base models" — the
CLI's ``pick`` and the TUI's Models screen show this same ranking. Rule: the
largest model first, then the highest-quality precision that fits with
headroom. A bigger model at 4-bit beats a smaller one at 16-bit for the same
memory ("The case for 4-bit precision: k-bit Inference Scaling Laws",
Dettmers & Zettlemoyer, ICML 2023), and NF4 beats FP4 (QLoRA §3). Reads only
``config.json`` and profiles; never imports torch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from portllm_edge.hardware.sizes import format_size
from portllm_edge.planning.budget import DEFAULT_HEADROOM, Budget, memory_budget
from portllm_edge.planning.estimate import (
    ALL_PRECISIONS,
    MemoryBreakdown,
    Precision,
    as_precision,
    estimate_inference_peak,
)
from portllm_edge.planning.plan import ModelSpec, precision_preference, profile_model_specs, store_model_specs

PORT_PATCH_RANK = 16
PORT_PATCH_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class RankedChoice:
    """One (base model, precision) pair in the ranking.

    Attributes:
        rank: 1-based position (best first).
        model: The model.
        precision: Base precision.
        inference: Inference estimate at the asked context.
        port_peak_bytes: Estimated peak of porting a patch onto this base (see :func:`port_peak_bytes`).
        fits: Porting a patch onto it (:func:`port_peak_bytes`) fits the budget with headroom.
        spare_bytes: ``usable - inference total``.
        reason: Why it sits where it does, in one or two sentences.
    """

    rank: int
    model: ModelSpec
    precision: Precision
    inference: MemoryBreakdown
    port_peak_bytes: int
    fits: bool
    spare_bytes: int
    reason: str

    @property
    def name(self) -> str:
        return self.model.name

    def port_human(self) -> str:
        return format_size(self.port_peak_bytes)


def port_peak_bytes(spec: ModelSpec, inference: MemoryBreakdown, r: int = PORT_PATCH_RANK) -> int:
    """Memory of porting a LoRA patch onto this base: inference peak + patch + merge transient.

    ``inference.total + L·Σ r·(in+out)·4`` (an r=16 all-projection patch in fp32)
    ``+ 2·max n·4`` (ΔW = (α/r)·B·A for the largest projection in fp32, and the
    dequantized/upcast weight it is added to; PortLLM, Khan et al., ICLR 2025).
    """
    arch = spec.arch
    patch = arch.num_layers * sum(r * (s.in_features + s.out_features) for s in arch.linears()) * 4
    merge = 2 * arch.max_linear().numel * 4
    return inference.total_bytes + patch + merge


def _params_human(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"


def pick_models(
    *,
    family: str | None = None,
    hardware_profile: str | None = None,
    budget: Budget | None = None,
    headroom_fraction: float = DEFAULT_HEADROOM,
    context: int = 2048,
    batch: int = 1,
    precisions: Iterable[Precision | str] = ALL_PRECISIONS,
    include_store: bool = True,
    all_precisions: bool = False,
    include_unfit: bool = False,
    models: Iterable[ModelSpec] | None = None,
) -> list[RankedChoice]:
    """Rank the (model, precision) pairs from the profiles and the local store for a budget.

    Order: fitting pairs first; among them larger models first (parameters), then the
    preferred precision (16-bit > int8 > nf4 > fp4; bf16/fp16 over fp32), then less memory.

    Args:
        family: Only this family (profile family name or ``model_type``).
        hardware_profile: Rank for this profile instead of probing.
        budget: A ready budget (wins over ``hardware_profile``).
        headroom_fraction: Kept-back fraction when the budget is built here.
        context: Inference context in tokens.
        batch: Inference batch.
        precisions: Precisions to consider.
        include_store: Also rank models in the local store.
        all_precisions: List every fitting precision of a model, not just its best.
        include_unfit: Append the pairs that do not fit (after all fitting ones).
        models: Rank these instead of profiles/store (tests, TUI).

    Returns:
        Ranked choices, best first.

    Raises:
        ConfigError: Unknown hardware profile.
    """
    bud = budget if budget is not None else memory_budget(hardware_profile, headroom_fraction)
    precs = [as_precision(p) for p in precisions]
    if models is None:
        specs = profile_model_specs(family)
        store_specs = store_model_specs() if include_store else []
        specs += [s for s in store_specs if family is None or (s.family or "").lower() == family.lower()]
        if family is not None and not specs:
            from portllm_edge.catalog.loader import did_you_mean
            from portllm_edge.errors import ConfigError

            known = sorted({s.family for s in [*profile_model_specs(None), *store_specs] if s.family})
            guess = did_you_mean(family, known)
            raise ConfigError(
                f"unknown model family {family!r} (known: {', '.join(known)}).",
                hint=f"did you mean `--family {guess}`?" if guess else "run `portllm-edge profiles list`",
            )
    else:
        specs = [s for s in models if family is None or (s.family or "").lower() == family.lower()]

    rows: list[tuple[ModelSpec, Precision, MemoryBreakdown, bool]] = []
    for spec in specs:
        ests = [
            estimate_inference_peak(spec.arch, p, context, batch, device=bud.device)  # type: ignore[arg-type]
            for p in precs
        ]
        # A pair fits when porting a patch onto it fits (inference + patch + transient), not inference alone.
        fitting = [e for e in ests if bud.fits(port_peak_bytes(spec, e))]
        fitting.sort(key=lambda e: precision_preference(e.precision, bud.bf16), reverse=True)
        chosen = fitting if all_precisions else fitting[:1]
        rows += [(spec, e.precision, e, True) for e in chosen]
        if include_unfit:
            unfit = [e for e in ests if not bud.fits(port_peak_bytes(spec, e))]
            unfit.sort(key=lambda e: e.total_bytes)
            rows += [
                (spec, e.precision, e, False)
                for e in (unfit if all_precisions else unfit[:1])
                if not fitting or all_precisions
            ]

    def key(
        row: tuple[ModelSpec, Precision, MemoryBreakdown, bool],
    ) -> tuple[int, int, tuple[int, int], int, str]:
        spec, prec, est, fits = row
        return (
            0 if fits else 1,
            -spec.params,
            tuple(-x for x in precision_preference(prec, bud.bf16)),
            est.total_bytes,
            spec.name,
        )  # type: ignore[return-value]

    rows.sort(key=key)
    out: list[RankedChoice] = []
    for i, (spec, prec, est, fits) in enumerate(rows, start=1):
        spare = bud.spare_bytes(est.total_bytes)
        reason = _reason(spec, prec, est, fits, spare, bud, precs, context, batch, first=(i == 1))
        out.append(RankedChoice(i, spec, prec, est, port_peak_bytes(spec, est), fits, spare, reason))
    return out


def _reason(
    spec: ModelSpec,
    prec: Precision,
    est: MemoryBreakdown,
    fits: bool,
    spare: int,
    bud: Budget,
    precs: list[Precision],
    context: int,
    batch: int,
    *,
    first: bool,
) -> str:
    size = _params_human(spec.params)
    if not fits:
        return f"{size} at {prec.value} needs {est.total_human()}, {format_size(-spare)} more than the {bud.usable_human()} usable."
    text = f"{size} at {prec.value}: {est.total_human()} of {bud.usable_human()} usable ({format_size(spare)} spare)."
    better = [p for p in precs if precision_preference(p, bud.bf16) > precision_preference(prec, bud.bf16)]
    if better:
        top = max(better, key=lambda p: precision_preference(p, bud.bf16))
        need = estimate_inference_peak(spec.arch, top, context, batch, device=bud.device).total_bytes  # type: ignore[arg-type]
        text += f" {top.value} would need {format_size(need)}."
    if first:
        text += " Largest model that fits, at its best fitting precision."
    elif prec.quality_rank < 3:
        text += " Ranked by size: a larger model at lower precision beats a smaller one at 16-bit (Dettmers & Zettlemoyer 2023)."
    return text
