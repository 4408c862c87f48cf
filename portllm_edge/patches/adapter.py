"""Validate a peft LoRA adapter folder before anything trusts it.

Why this module exists: peft answers a broken adapter with a raw traceback (or
thousands of "missing keys" warnings) deep inside model loading. We check the
folder up front, without torch and without loading the base, and fail with one
line that names the file, tensor or field and says how to fix it:

* both ``adapter_config.json`` and ``adapter_model.safetensors`` exist
  (a folder with only a pickled ``adapter_model.bin`` is refused, with how to
  convert it);
* the config is a JSON object whose ``peft_type`` is ``LORA`` and whose ``r``,
  ``lora_alpha`` and ``target_modules`` are well-typed;
* the safetensors header is valid (:mod:`portllm_edge.tensorio`);
* every ``lora_A`` has its ``lora_B``, and their rank dimension equals the
  ``r`` that the config (or its ``rank_pattern``) gives that module
  (ΔW = (lora_alpha/r)·B·A with A: [r, in], B: [out, r]; peft ``tuners/lora/layer.py``);
* no tensor holds NaN or ±Inf.

It must not import torch or UI code, and never loads the base model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from portllm_edge import tensorio
from portllm_edge.errors import PatchError
from portllm_edge.patches.adapter_format import (
    CONFIG_NAME,
    PICKLED_WEIGHTS_NAMES,
    WEIGHTS_NAME,
    AdapterConfig,
    AdapterLayout,
    LoraModule,
    adapter_weights_file,
    lora_scale,
    parse_adapter_header,
)

_FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16"})


@dataclass(frozen=True)
class AdapterSummary:
    """What a valid adapter folder holds (read from its config and header only).

    Attributes:
        path: The adapter folder.
        peft_type: ``"LORA"``.
        r: Default rank from the config.
        lora_alpha: Scaling numerator (ΔW scale = lora_alpha / r, or / sqrt(r) with rsLoRA).
        target_modules: Module names, or peft's regex string.
        modules_to_save: Fully trained extra modules, or ``None``.
        use_dora: DoRA adapter.
        use_rslora: rank-stabilized scaling.
        peft_version: The peft version that saved it, or ``None``.
        base_model_name_or_path: The base recorded in the config, or ``None``.
        task_type: peft ``task_type`` (``"CAUSAL_LM"``, ...), or ``None``.
        lora_modules: Module paths that carry an A/B pair, sorted.
        num_tensors: Tensors in the weights file.
        nbytes: Tensor payload size in bytes.
        dtypes: The distinct tensor dtypes (safetensors names), sorted.
    """

    path: Path
    peft_type: str
    r: int
    lora_alpha: float
    target_modules: tuple[str, ...] | str
    modules_to_save: tuple[str, ...] | None
    use_dora: bool
    use_rslora: bool
    peft_version: str | None
    base_model_name_or_path: str | None
    task_type: str | None
    lora_modules: tuple[str, ...]
    num_tensors: int
    nbytes: int
    dtypes: tuple[str, ...]

    @property
    def scaling(self) -> float:
        """LoRA scale s in ΔW = s·B·A: lora_alpha/r (or lora_alpha/sqrt(r) with rsLoRA)."""
        return lora_scale(self.r, self.lora_alpha, use_rslora=self.use_rslora)


def _check_pairs(layout: AdapterLayout, weights: Path) -> None:
    """Every LoRA factor has its partner (``lora_A`` with ``lora_B``, embedding A with embedding B)."""
    if not layout.lora and not layout.incomplete:
        raise PatchError(
            f"{weights}: holds no LoRA tensors (no `lora_A`/`lora_B` keys among {len(layout.keys)} tensors)",
            hint="check that the file is a LoRA adapter saved by peft, not a full model",
        )
    if layout.incomplete:
        module = layout.incomplete[0]
        mine = [k for k in layout.keys if k.kind == "lora" and k.module == module]
        have = next((k for k in mine if k.part != "lora_magnitude_vector"), mine[0])
        lack = {
            "lora_A": "lora_B",
            "lora_B": "lora_A",
            "lora_embedding_A": "lora_embedding_B",
            "lora_embedding_B": "lora_embedding_A",
        }.get(have.part, "lora_A")
        raise PatchError(
            f"{weights}, tensor `{have.key}`: has no matching `{lack}` tensor",
            hint="the adapter file is incomplete; re-export it",
        )


def _check_rank(lm: LoraModule, config: AdapterConfig, d: Path, weights: Path) -> None:
    """Both factors' rank dimension equals the ``r`` peft gives the module (``rank_pattern`` aware)."""
    want, _ = config.rank_alpha(lm.module)
    src = "`rank_pattern`" if want != config.r else "`r`"
    hint = f"fix `r` in {d / CONFIG_NAME} to match the tensors, or re-export the adapter"
    a_rank = lm.a_shape[0] if len(lm.a_shape) == 2 else None
    b_rank = lm.b_shape[1] if len(lm.b_shape) == 2 else None
    if a_rank != want:
        raise PatchError(
            f"{weights}, tensor `{lm.a_key}`: shape {list(lm.a_shape)} has rank {a_rank}, "
            f"but {CONFIG_NAME} {src} is {want}",
            hint=hint,
        )
    if b_rank != want:
        raise PatchError(
            f"{weights}, tensor `{lm.b_key}`: shape {list(lm.b_shape)} has rank {b_rank}, "
            f"but {CONFIG_NAME} {src} is {want}",
            hint=hint,
        )


def validate_adapter_dir(path: str | os.PathLike[str]) -> AdapterSummary:
    """Check a LoRA adapter folder end to end, without torch and without the base.

    Args:
        path: A peft adapter folder.

    Returns:
        An :class:`AdapterSummary`.

    Raises:
        PatchError: naming the folder, file, tensor or config field, with a fix;
            see the module docstring for the checks.
    """
    d = Path(path)
    weights = adapter_weights_file(d)
    cfg = AdapterConfig.read(d)
    header = tensorio.read_safetensors_header(weights, error_cls=PatchError)
    layout = parse_adapter_header(header, weights)
    _check_pairs(layout, weights)
    for module in sorted(layout.lora):
        _check_rank(layout.lora[module], cfg, d, weights)
    lora_keys = sorted(k.key for k in layout.keys if k.kind == "lora")
    not_float = [k for k in lora_keys if header[k].dtype not in _FLOAT_DTYPES]
    if not_float:
        raise PatchError(
            f"{weights}, tensor `{not_float[0]}`: dtype {header[not_float[0]].dtype} is not a floating-point type "
            f"({len(not_float)} such tensors); LoRA factors are F32, F16 or BF16",
            hint="re-export the adapter from the trained (unquantized) peft model with `save_pretrained`",
        )
    tensorio.check_finite(
        weights,
        error_cls=PatchError,
        hint="the patch diverged in training or is corrupt; retrain it (lower learning rate) or re-export it",
    )
    return AdapterSummary(
        path=d,
        peft_type=cfg.peft_type,
        r=cfg.r,
        lora_alpha=cfg.lora_alpha,
        target_modules=cfg.target_modules,
        modules_to_save=cfg.modules_to_save,
        use_dora=cfg.use_dora,
        use_rslora=cfg.use_rslora,
        peft_version=cfg.peft_version,
        base_model_name_or_path=cfg.base_model_name_or_path,
        task_type=cfg.task_type,
        lora_modules=tuple(sorted(layout.lora)),
        num_tensors=len(header),
        nbytes=header.payload_bytes,
        dtypes=tuple(sorted({t.dtype for t in header.values()})),
    )


__all__ = [
    "CONFIG_NAME",
    "PICKLED_WEIGHTS_NAMES",
    "WEIGHTS_NAME",
    "AdapterSummary",
    "validate_adapter_dir",
]
