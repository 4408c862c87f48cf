"""The one precision decision: which precision a base is loaded at, for a device and a job.

Why this module exists: ``plan``, ``pick``, ``port --precision auto``, the app's
default and the demo must give the same answer for the same model, device and
job. They all call :func:`decide_precision`; nothing else chooses a precision.

Rule (readable, in order):
    1. Candidates are the precisions a load can use on the device: nf4 and int8 where
       bitsandbytes has kernels for it, and the 16/32-bit types (fp16 only on CUDA, bf16 on
       a CPU only where it computes in bf16 natively).
    2. Keep those whose estimated peak fits the budget: for ``port``, inference plus the
       patch (:func:`portllm_edge.planning.pick.port_peak_bytes`);
       for ``inference``, the inference estimate.
    3. Take the highest-quality one (:func:`portllm_edge.planning.plan.precision_preference`:
       16-bit > int8 > nf4; the native half type over fp32).
    4. When nothing fits, the smallest candidate, with a reason that says it does not fit.
    Without a model the answer is the highest-quality candidate (nothing to size).

It reads ``config.json`` and probes the machine; it never imports torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from portllm_edge.hardware.compute import bitsandbytes_runs_on, device_kind
from portllm_edge.hardware.sizes import format_size
from portllm_edge.planning.arch import ModelArch
from portllm_edge.planning.budget import Budget, memory_budget
from portllm_edge.planning.estimate import Precision, estimate_inference_peak

Job = Literal["port", "inference"]


@dataclass(frozen=True)
class PrecisionDecision:
    """The answer of :func:`decide_precision`.

    Attributes:
        precision: The chosen precision.
        device: The device the load will use (``"cpu"``, ``"cuda"`` or ``"cuda:N"``), from the budget.
        job: ``port`` or ``inference``.
        budget: The budget it was judged against.
        needed_bytes: The chosen precision's estimated peak, bytes (``None`` without a model).
        fits: Whether it fits the budget.
        reason: One sentence a person can check.
    """

    precision: Precision
    device: str
    job: str
    budget: Budget
    needed_bytes: int | None
    fits: bool
    reason: str


def candidate_precisions(
    device: str, *, bf16_native: bool = True, assume_bitsandbytes: bool = False
) -> tuple[Precision, ...]:
    """Precisions a load can use on ``device`` (step 1 of the rule).

    CUDA: bf16, fp16, fp32; CPU: bf16 only where it computes in it natively, and fp32.
    ``assume_bitsandbytes``: deciding for a hardware profile (another machine), where
    bitsandbytes is assumed installed rather than looked up here.
    """
    cuda = device_kind(device) == "cuda"
    if cuda:
        out = [Precision.BF16, Precision.FP16, Precision.FP32]
    else:
        out = [Precision.BF16, Precision.FP32] if bf16_native else [Precision.FP32]
    if assume_bitsandbytes or bitsandbytes_runs_on(device):
        out += [Precision.INT8, Precision.NF4]
    return tuple(out)


def job_peak_bytes(
    arch: ModelArch, precision: Precision, budget: Budget, job: Job, context: int = 2048
) -> int:
    """Estimated peak of ``job`` at ``precision`` on the budget's device, bytes (step 2 of the rule)."""
    from portllm_edge.planning.pick import port_peak_bytes
    from portllm_edge.planning.plan import ModelSpec

    est = estimate_inference_peak(arch, precision, context, 1, device=budget.device)  # type: ignore[arg-type]
    if job == "inference":
        return est.total_bytes
    spec = ModelSpec(name=arch.source, kind="config", family=arch.model_type, arch=arch)
    return port_peak_bytes(spec, est)


def decide_precision(
    model: str | Path | Mapping[str, Any] | ModelArch | Any | None = None,
    *,
    device: str | None = None,
    job: Job = "port",
    budget: Budget | None = None,
    hardware_profile: str | None = None,
    context: int = 2048,
    allowed: tuple[Precision, ...] | None = None,
) -> PrecisionDecision:
    """Choose the precision to load ``model`` at for ``job`` on ``device`` (see the module rule).

    Args:
        model: A profile name, folder, store name, config dict, :class:`ModelArch` or
            :class:`~portllm_edge.planning.plan.ModelSpec`; ``None`` when there is nothing to size.
        device: ``cpu``, ``cuda`` or ``cuda:N``; default the budget's device (the probed GPU with
            the most free memory, else host RAM), which is also where the load goes.
        job: ``port`` (load + patch + evaluation) or ``inference``.
        budget: A ready budget (wins over ``device`` and ``hardware_profile``).
        hardware_profile: Decide for this profile instead of probing.
        context: Inference context in tokens.
        allowed: Only these precisions (a caller that offers fewer, e.g. the app's selector).

    Returns:
        A :class:`PrecisionDecision`.

    Raises:
        PlanningError: the model can't be resolved or sized. ConfigError: unknown hardware profile.
    """
    from portllm_edge.planning.plan import precision_preference, resolve_model_spec

    bud = budget if budget is not None else memory_budget(hardware_profile, device=device)
    load_dev = (
        device if device is not None and budget is None and hardware_profile is None else bud.load_device
    )
    cands = candidate_precisions(load_dev, bf16_native=bud.bf16, assume_bitsandbytes=bud.source == "profile")
    if allowed is not None:
        cands = tuple(p for p in cands if p in allowed) or cands
    ranked = sorted(cands, key=lambda p: precision_preference(p, bud.bf16), reverse=True)
    if model is None:
        best = ranked[0]
        return PrecisionDecision(
            best,
            load_dev,
            job,
            bud,
            None,
            True,
            f"{best.value}: the best quality {load_dev} loads; no model to size.",
        )
    arch = resolve_model_spec(model).arch
    needs = {p: job_peak_bytes(arch, p, bud, job, context) for p in cands}
    fitting = [p for p in ranked if bud.fits(needs[p])]
    if fitting:
        best = fitting[0]
        better = [
            p for p in ranked if precision_preference(p, bud.bf16) > precision_preference(best, bud.bf16)
        ]
        why = f"{best.value}: the best quality whose {job} peak ({format_size(needs[best])}) fits {bud.usable_human()} usable"
        if better:
            why += f"; {better[0].value} would need {format_size(needs[better[0]])}"
        return PrecisionDecision(best, load_dev, job, bud, needs[best], True, why + ".")
    best = min(cands, key=lambda p: needs[p])
    why = (
        f"{best.value}: nothing fits {bud.usable_human()} usable; the smallest {job} peak is "
        f"{format_size(needs[best])}"
    )
    return PrecisionDecision(best, load_dev, job, bud, needs[best], False, why + ".")
