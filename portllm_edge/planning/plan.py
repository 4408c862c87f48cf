"""``plan``: every precision's estimate for one model against one budget, and the best that fits.

Why this module exists: it joins the three inputs — which model (a profile
name, a local folder with ``config.json``, or a local-store name), which budget
(probe or hardware profile) and which workload (context, batch, fine-tuning
settings) — into one :class:`Plan` record the CLI and the TUI format. Reads only
``config.json``; never loads weights, never imports torch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from portllm_edge.errors import PlanningError
from portllm_edge.planning.arch import ModelArch
from portllm_edge.planning.budget import DEFAULT_HEADROOM, Budget, memory_budget
from portllm_edge.planning.estimate import (
    ALL_PRECISIONS,
    MemoryBreakdown,
    Precision,
    as_precision,
    estimate_inference_peak,
    estimate_lora_finetune_peak,
)


@dataclass(frozen=True)
class ModelSpec:
    """A model to plan for, sized from its config.

    Attributes:
        name: Display name (profile version name, folder name or store name).
        kind: ``profile``, ``folder``, ``store`` or ``config`` (a dict passed directly).
        family: Family name (profile family, else ``model_type``), or ``None``.
        arch: The sizes.
        path: The folder, when one was read.
    """

    name: str
    kind: str
    family: str | None
    arch: ModelArch
    path: Path | None = None

    @property
    def params(self) -> int:
        return self.arch.total_params


def _read_config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PlanningError(
            f"{path}: can't read config.json ({exc}).", hint="point at a valid Hugging Face model folder."
        ) from None
    if not isinstance(data, dict):
        raise PlanningError(
            f"{path}: config.json is not a JSON object.", hint="point at a valid Hugging Face model folder."
        )
    return data


def spec_from_folder(folder: Path, *, kind: str = "folder", name: str | None = None) -> ModelSpec:
    """Size a local model folder from its ``config.json``. Raises PlanningError when missing or unreadable."""
    cfg_path = folder / "config.json" if folder.is_dir() else folder
    if not cfg_path.is_file():
        raise PlanningError(
            f"{folder}: no config.json.", hint="pass a Hugging Face model folder (with config.json)."
        )
    cfg = _read_config(cfg_path)
    arch = ModelArch.from_config(cfg, str(cfg_path))
    return ModelSpec(
        name=name or cfg_path.parent.name, kind=kind, family=arch.model_type, arch=arch, path=cfg_path.parent
    )


def store_model_specs() -> list[ModelSpec]:
    """Every local-store model (``<home>/models/<name>/config.json``) that can be sized; others are skipped."""
    from portllm_edge import paths

    root = paths.models_dir()
    out: list[ModelSpec] = []
    if not root.is_dir():
        return out
    for folder in sorted(root.iterdir()):
        if folder.is_dir() and not folder.name.startswith(".") and (folder / "config.json").is_file():
            try:
                out.append(spec_from_folder(folder, kind="store", name=folder.name))
            except PlanningError:
                continue
    return out


def profile_model_specs(family: str | None = None) -> list[ModelSpec]:
    """Every model version in the profiles (optionally one family)."""
    from portllm_edge.catalog import load_catalog

    out = []
    for fam, ver in load_catalog().versions():
        if family is not None and fam.family.lower() != family.lower():
            continue
        arch = ModelArch.from_config(ver.architecture.to_config(), f"profile {ver.name}")
        out.append(ModelSpec(name=ver.name, kind="profile", family=fam.family, arch=arch))
    return out


def resolve_model_spec(model: str | Path | Mapping[str, Any] | ModelArch | ModelSpec) -> ModelSpec:
    """Resolve a model reference: a profile name or hub id, a folder with ``config.json``, or a store name.

    Raises:
        PlanningError: Nothing matched (the hint names the closest profile or store model).
    """
    if isinstance(model, ModelSpec):
        return model
    if isinstance(model, ModelArch):
        return ModelSpec(name=model.source, kind="config", family=model.model_type, arch=model)
    if isinstance(model, Mapping):
        arch = ModelArch.from_config(model, "config")
        return ModelSpec(
            name=str(model.get("_name_or_path") or arch.model_type),
            kind="config",
            family=arch.model_type,
            arch=arch,
        )
    from portllm_edge import paths
    from portllm_edge.catalog import did_you_mean, load_catalog

    text = str(model)
    path = Path(text).expanduser()
    if path.exists():
        return spec_from_folder(path)
    catalog = load_catalog()
    found = catalog.find_version(text)
    if found is not None:
        fam, ver = found
        arch = ModelArch.from_config(ver.architecture.to_config(), f"profile {ver.name}")
        return ModelSpec(name=ver.name, kind="profile", family=fam.family, arch=arch)
    store = paths.models_dir() / text
    if "/" not in text and (store / "config.json").is_file():
        return spec_from_folder(store, kind="store", name=text)
    names = catalog.version_names() + [s.name for s in store_model_specs()]
    guess = did_you_mean(text, names)
    raise PlanningError(
        f"model {text!r}: not a profile, a folder with config.json, or a local-store model.",
        hint=f"did you mean `{guess}`?" if guess else "run `portllm-edge profiles list` for profile names.",
    )


@dataclass(frozen=True)
class PlanOption:
    """One estimate judged against the budget.

    Attributes:
        breakdown: The estimate.
        fits: ``total <= budget.usable_bytes``.
        spare_bytes: ``usable - total`` (negative when it does not fit).
        label: Short label, e.g. ``"nf4"`` or ``"QLoRA nf4 (checkpointed)"``.
    """

    breakdown: MemoryBreakdown
    fits: bool
    spare_bytes: int
    label: str


@dataclass(frozen=True)
class Plan:
    """Estimates for one model against one budget.

    Attributes:
        model: The model.
        budget: The budget.
        inference: One option per precision, in the order asked.
        finetune: LoRA bf16 (with/without checkpointing) and QLoRA nf4 options.
        best: The precision :func:`portllm_edge.planning.decide_precision` chooses for ``job``
            on this budget, or ``None`` when nothing fits.
        job: ``port`` or ``inference``: what ``best`` was decided for.
        reason: Why ``best`` (one sentence).
    """

    model: ModelSpec
    budget: Budget
    inference: tuple[PlanOption, ...]
    finetune: tuple[PlanOption, ...]
    best: Precision | None
    job: str = "port"
    reason: str = ""

    def option(self, precision: Precision | str) -> PlanOption:
        """The inference option of ``precision``. Raises KeyError if it was not planned."""
        p = as_precision(precision)
        for opt in self.inference:
            if opt.breakdown.precision is p:
                return opt
        raise KeyError(p.value)


def precision_preference(p: Precision, bf16_native: bool) -> tuple[int, int]:
    """Sort key, higher is better: quality tier, then within 16/32-bit the native half type first.

    Within the lossless tier bf16 (fp16 where bf16 is not native, e.g. a T4) beats fp32, which
    costs twice the memory for no quality gain over the released 16-bit weights.
    """
    if p.quality_rank == 3:
        native = {
            Precision.BF16: 2 if bf16_native else 0,
            Precision.FP16: 1 if bf16_native else 2,
            Precision.FP32: 0,
        }
        return 3, native[p] if p is not Precision.FP32 else -1
    return p.quality_rank, 0


def plan_model(
    model: str | Path | Mapping[str, Any] | ModelArch | ModelSpec,
    *,
    hardware_profile: str | None = None,
    budget: Budget | None = None,
    headroom_fraction: float = DEFAULT_HEADROOM,
    context: int = 2048,
    batch: int = 1,
    precisions: Iterable[Precision | str] = ALL_PRECISIONS,
    double_quant: bool = True,
    lora_r: int = 16,
    lora_targets: Iterable[str] = ("q_proj", "v_proj"),
    train_seq_len: int = 512,
    train_batch: int = 1,
    job: str = "port",
    device: str | None = None,
) -> Plan:
    """Plan one model: inference at each precision, LoRA/QLoRA fine-tuning, best fitting precision.

    Args:
        model: Profile name/hub id, folder, store name, config dict, ModelArch or ModelSpec.
        hardware_profile: Plan for this profile instead of probing (ignored when ``budget`` is given).
        budget: A ready budget.
        headroom_fraction: Kept-back fraction when the budget is built here.
        context: Inference tokens per sequence.
        batch: Inference batch.
        precisions: Inference precisions to estimate.
        double_quant: 4-bit double quantization.
        lora_r: LoRA rank for the fine-tuning rows.
        lora_targets: LoRA target modules.
        train_seq_len: Fine-tuning sequence length.
        train_batch: Fine-tuning micro-batch.
        job: ``port`` or ``inference``: the job ``best`` is decided for (:func:`decide_precision`).
        device: ``cpu``, ``cuda`` or ``cuda:N`` to plan for when probing (default: where a load goes).

    Raises:
        PlanningError: Unknown model or bad sizes. ConfigError: Unknown hardware profile.
    """
    from portllm_edge.planning.decide import decide_precision

    spec = resolve_model_spec(model)
    bud = budget if budget is not None else memory_budget(hardware_profile, headroom_fraction, device=device)
    asked = [as_precision(p) for p in precisions]
    decision = decide_precision(spec, budget=bud, job=job, context=context, allowed=tuple(asked))  # type: ignore[arg-type]
    kind = bud.device
    inference = []
    for p in asked:
        b = estimate_inference_peak(spec.arch, p, context, batch, double_quant=double_quant, device=kind)  # type: ignore[arg-type]
        inference.append(
            PlanOption(b, bud.fits(b.total_bytes), bud.spare_bytes(b.total_bytes), b.precision.value)
        )
    targets = tuple(lora_targets)
    half = Precision.BF16 if bud.bf16 else Precision.FP16
    ft_cases = [
        (half, False, f"LoRA {half.value}"),
        (half, True, f"LoRA {half.value} (checkpointed)"),
        (Precision.NF4, True, "QLoRA nf4 (checkpointed)"),
    ]
    finetune = []
    for prec, gc, label in ft_cases:
        b = estimate_lora_finetune_peak(
            spec.arch,
            prec,
            lora_r,
            targets,
            train_seq_len,
            train_batch,
            gc,
            double_quant=double_quant,
            device=kind,  # type: ignore[arg-type]
        )
        finetune.append(PlanOption(b, bud.fits(b.total_bytes), bud.spare_bytes(b.total_bytes), label))
    return Plan(
        model=spec,
        budget=bud,
        inference=tuple(inference),
        finetune=tuple(finetune),
        best=decision.precision if decision.fits and decision.precision in asked else None,
        job=job,
        reason=decision.reason,
    )
