"""``pick``: rank (base model, precision) pairs that fit a budget, best first, with reasons.

Why this module exists: it is how the app "picks quantized base models" — the
CLI's ``pick`` and the TUI's Models screen show this same ranking. Each model's
precision is the one precision decision's (:func:`portllm_edge.planning.decide_precision`,
job ``port``). The ranking rule, in order:

1. pairs whose port fits the budget before those that don't;
2. pairs that decode at least :data:`MIN_TOKENS_PER_S` (estimated, bandwidth-bound:
   memory bandwidth ÷ bytes read per token) before slower ones -- a model that fits
   in RAM but answers at a token a second is not one a person can use;
3. larger models first: a bigger model at 4-bit beats a smaller one at 16-bit for the
   same memory ("The case for 4-bit precision: k-bit Inference Scaling Laws",
   Dettmers & Zettlemoyer, ICML 2023), and NF4 beats FP4 (QLoRA §3);
4. the higher-quality precision, then less memory.

Step 2 applies when the budget knows its bandwidth (probe measures it on CPU and
reads it from NVML on a GPU; hardware profiles carry the data-sheet figure).
Reads only ``config.json`` and profiles; never imports torch.
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
    decode_bytes_per_token,
    estimate_inference_peak,
)
from portllm_edge.planning.plan import ModelSpec, precision_preference, profile_model_specs, store_model_specs

MIN_TOKENS_PER_S = 5.0
"""Estimated decode speed below which a pair ranks after the usable ones (about reading speed)."""
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
        tokens_per_s: Estimated decode speed, tokens/s (bandwidth ÷ :func:`decode_bytes_per_token`),
            or ``None`` when the budget's bandwidth is unknown.
    """

    rank: int
    model: ModelSpec
    precision: Precision
    inference: MemoryBreakdown
    port_peak_bytes: int
    fits: bool
    spare_bytes: int
    reason: str
    tokens_per_s: float | None = None

    @property
    def name(self) -> str:
        return self.model.name

    def port_human(self) -> str:
        return format_size(self.port_peak_bytes)


def port_peak_bytes(
    spec: ModelSpec,
    inference: MemoryBreakdown,
    r: int = PORT_PATCH_RANK,
    target_modules: Iterable[str] = PORT_PATCH_TARGETS,
) -> int:
    """Memory of porting a LoRA patch onto this base: inference peak + the patch in fp32.

    ``inference.total + L·Σ_targets r·(in+out)·4`` (an r=16 all-projection patch by
    default). The port's worker loads, attaches and evaluates; the streaming merge runs
    afterwards in another process with the model freed and a far smaller peak
    (:mod:`portllm_edge.porting.merge`), so no merge term is added here. Calibrated
    against ``benchmarks/scale.py`` (README, performance).
    """
    from portllm_edge.planning.estimate import lora_param_count

    return inference.total_bytes + lora_param_count(spec.arch, r, target_modules) * 4


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

    Order: the module's rule (fits, usable speed, size, precision quality, memory).

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

    from portllm_edge.planning.decide import decide_precision

    rows: list[tuple[ModelSpec, Precision, MemoryBreakdown, bool]] = []
    for spec in specs:
        ests = [
            estimate_inference_peak(spec.arch, p, context, batch, device=bud.device)  # type: ignore[arg-type]
            for p in precs
        ]
        # A pair fits when porting a patch onto it fits (inference + patch + transient), not inference alone.
        fitting = [e for e in ests if bud.fits(port_peak_bytes(spec, e))]
        fitting.sort(key=lambda e: precision_preference(e.precision, bud.bf16), reverse=True)
        decided = decide_precision(spec, budget=bud, job="port", context=context).precision
        fitting.sort(key=lambda e: e.precision is not decided)  # the one decision first, stable otherwise
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

    def speed(spec: ModelSpec, prec: Precision) -> float | None:
        if not bud.bandwidth_bytes_per_s:
            return None
        return bud.bandwidth_bytes_per_s / decode_bytes_per_token(spec.arch, prec, context)

    def key(
        row: tuple[ModelSpec, Precision, MemoryBreakdown, bool],
    ) -> tuple[int, int, int, tuple[int, int], int, str]:
        spec, prec, est, fits = row
        tps = speed(spec, prec)
        return (
            0 if fits else 1,
            1 if tps is not None and tps < MIN_TOKENS_PER_S else 0,
            -spec.params,
            tuple(-x for x in precision_preference(prec, bud.bf16)),
            est.total_bytes,
            spec.name,
        )  # type: ignore[return-value]

    rows.sort(key=key)
    out: list[RankedChoice] = []
    for i, (spec, prec, est, fits) in enumerate(rows, start=1):
        spare = bud.spare_bytes(est.total_bytes)
        tps = speed(spec, prec)
        reason = _reason(spec, prec, est, fits, spare, bud, precs, context, batch, first=(i == 1), tps=tps)
        out.append(RankedChoice(i, spec, prec, est, port_peak_bytes(spec, est), fits, spare, reason, tps))
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
    tps: float | None = None,
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
    if tps is not None and tps < MIN_TOKENS_PER_S:
        text += (
            f" Decodes at about {tps:.1f} tokens/s at most here (bandwidth-bound), under {MIN_TOKENS_PER_S:g}:"
            " ranked after the models that run at a usable speed."
        )
        return text
    if first:
        text += " Largest model that fits and decodes at a usable speed, at its best fitting precision."
    elif prec.quality_rank < 3:
        text += " Ranked by size: a larger model at lower precision beats a smaller one at 16-bit (Dettmers & Zettlemoyer 2023)."
    return text
