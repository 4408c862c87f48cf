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

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from portllm_edge import tensorio
from portllm_edge.errors import PatchError

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PICKLED_WEIGHTS_NAMES = ("adapter_model.bin", "adapter_model.pt", "adapter_model.pth")
SUPPORTED_PEFT_TYPES = ("LORA",)

_LORA_KEY = re.compile(
    r"^(?P<module>.+)\.(?P<kind>lora_A|lora_B|lora_embedding_A|lora_embedding_B)(?:\.[^.]+)?$"
)
_FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16"})
_PAIR = {"lora_A": "lora_B", "lora_embedding_A": "lora_embedding_B"}


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
        return self.lora_alpha / (self.r**0.5 if self.use_rslora else self.r)


def _config_error(path: Path, problem: str, hint: str | None = None) -> PatchError:
    return PatchError(
        f"{path}: {problem}",
        hint=hint or "re-export the adapter with peft's `save_pretrained` (a LoRA adapter_config.json)",
    )


def read_adapter_config(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``adapter_config.json`` and check the fields portllm-edge relies on.

    Raises:
        PatchError: missing, not a JSON object, ``peft_type`` not LoRA, or
            ``r`` / ``lora_alpha`` / ``target_modules`` missing or mistyped.
    """
    d = Path(folder)
    cfg_path = d / CONFIG_NAME
    if not cfg_path.is_file():
        raise PatchError(
            f"{d}: no {CONFIG_NAME} in the adapter folder",
            hint="point to a folder saved by peft's `save_pretrained` (adapter_config.json + adapter_model.safetensors)",
        )
    try:
        cfg = tensorio.read_small_json(cfg_path)
    except (OSError, ValueError) as exc:
        raise _config_error(cfg_path, f"is not valid JSON ({exc})") from None
    if not isinstance(cfg, dict):
        raise _config_error(cfg_path, f"holds a JSON {type(cfg).__name__}, not an object")
    peft_type = cfg.get("peft_type")
    if not isinstance(peft_type, str) or peft_type.upper() not in SUPPORTED_PEFT_TYPES:
        raise _config_error(
            cfg_path,
            f"`peft_type` is {peft_type!r}; portllm-edge ports LoRA adapters only (peft_type 'LORA')",
            hint="train the patch as a LoRA adapter (peft LoraConfig), or use a LoRA export of it",
        )
    r = cfg.get("r")
    if not isinstance(r, int) or isinstance(r, bool) or r <= 0:
        raise _config_error(cfg_path, f"`r` is {r!r}; it must be a positive integer")
    alpha = cfg.get("lora_alpha")
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool):
        raise _config_error(cfg_path, f"`lora_alpha` is {alpha!r}; it must be a number")
    if not math.isfinite(alpha) or alpha == 0:
        raise _config_error(
            cfg_path,
            f"`lora_alpha` is {alpha!r}; it must be a finite, non-zero number "
            "(ΔW = lora_alpha/r·B·A, so 0 makes the patch do nothing)",
            hint="set `lora_alpha` to the value the patch was trained with (often 2 × r), or re-export it",
        )
    targets = cfg.get("target_modules")
    if not (
        isinstance(targets, str) or (isinstance(targets, list) and all(isinstance(t, str) for t in targets))
    ):
        raise _config_error(
            cfg_path, f"`target_modules` is {targets!r}; it must be a list of names or a regex"
        )
    if not targets:
        raise _config_error(
            cfg_path,
            "`target_modules` is empty, so peft would attach the patch to no module",
            hint='list the modules the patch was trained on (e.g. ["q_proj", "v_proj"]), or re-export it',
        )
    if isinstance(targets, str):
        try:
            re.compile(targets)
        except re.error as exc:
            raise _config_error(
                cfg_path,
                f"`target_modules` {targets!r} is not a valid regular expression ({exc})",
                hint='fix the regex or give a list of module names such as ["q_proj", "v_proj"]',
            ) from None
    mts = cfg.get("modules_to_save")
    if mts is not None and not (isinstance(mts, list) and all(isinstance(m, str) for m in mts)):
        raise _config_error(cfg_path, f"`modules_to_save` is {mts!r}; it must be a list of names or null")
    rank_pattern = cfg.get("rank_pattern") or {}
    if not isinstance(rank_pattern, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in rank_pattern.values()
    ):
        raise _config_error(
            cfg_path, f"`rank_pattern` is {rank_pattern!r}; it must map module patterns to ranks"
        )
    alpha_pattern = cfg.get("alpha_pattern") or {}
    if not isinstance(alpha_pattern, dict) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v != 0
        for v in alpha_pattern.values()
    ):
        raise _config_error(
            cfg_path,
            f"`alpha_pattern` is {alpha_pattern!r}; it must map module patterns to finite, non-zero alphas",
        )
    return cfg


def _rank_for(module: str, r: int, rank_pattern: dict[str, int]) -> int:
    """The rank peft gives ``module`` (peft ``utils/other.py:get_pattern_key`` semantics)."""
    for pattern, rank in rank_pattern.items():
        try:
            hit = re.match(rf"(.*\.)?({pattern})$", module)
        except re.error:
            hit = None  # peft would fail too; the rank check below then names the tensor
        if hit:
            return int(rank)
    return r


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
    if not d.exists():
        raise PatchError(f"{d}: adapter folder not found", hint="check the path")
    if not d.is_dir():
        raise PatchError(
            f"{d}: is a file, not an adapter folder",
            hint="point to the folder that holds adapter_config.json and adapter_model.safetensors",
        )
    weights = d / WEIGHTS_NAME
    if not weights.is_file():
        pickled = [d / n for n in PICKLED_WEIGHTS_NAMES if (d / n).is_file()]
        if pickled:
            raise PatchError(
                f"{d}: has only pickled weights ({pickled[0].name}); portllm-edge loads safetensors only, "
                "because unpickling can run arbitrary code",
                hint=tensorio.pickle_hint(d, "portllm-edge patch convert"),
            )
        raise PatchError(
            f"{d}: no {WEIGHTS_NAME} in the adapter folder",
            hint="copy the adapter's weights file next to adapter_config.json, or re-save the adapter with "
            "peft's `save_pretrained`",
        )
    cfg = read_adapter_config(d)
    header = tensorio.read_safetensors_header(weights, error_cls=PatchError)
    r = int(cfg["r"])
    rank_pattern: dict[str, int] = dict(cfg.get("rank_pattern") or {})

    parts: dict[str, dict[str, tensorio.TensorInfo]] = {}
    for name, info in header.items():
        m = _LORA_KEY.match(name)
        if m:
            parts.setdefault(m["module"], {})[m["kind"]] = info
    if not parts:
        raise PatchError(
            f"{weights}: holds no LoRA tensors (no `lora_A`/`lora_B` keys among {len(header)} tensors)",
            hint="check that the file is a LoRA adapter saved by peft, not a full model",
        )
    for module in sorted(parts):
        kinds = parts[module]
        for a_kind, b_kind in _PAIR.items():
            if (a_kind in kinds) != (b_kind in kinds):
                have, lack = (a_kind, b_kind) if a_kind in kinds else (b_kind, a_kind)
                raise PatchError(
                    f"{weights}, tensor `{kinds[have].name}`: has no matching `{lack}` tensor",
                    hint="the adapter file is incomplete; re-export it",
                )
            if a_kind not in kinds:
                continue
            a, b = kinds[a_kind], kinds[b_kind]
            want = _rank_for(module, r, rank_pattern)
            src = "`rank_pattern`" if want != r else "`r`"
            if len(a.shape) < 2 or a.shape[0] != want:
                raise PatchError(
                    f"{weights}, tensor `{a.name}`: shape {list(a.shape)} has rank {a.shape[0] if a.shape else None}, "
                    f"but {CONFIG_NAME} {src} is {want}",
                    hint=f"fix `r` in {d / CONFIG_NAME} to match the tensors, or re-export the adapter",
                )
            if len(b.shape) < 2 or b.shape[1] != want:
                raise PatchError(
                    f"{weights}, tensor `{b.name}`: shape {list(b.shape)} has rank "
                    f"{b.shape[1] if len(b.shape) > 1 else None}, but {CONFIG_NAME} {src} is {want}",
                    hint=f"fix `r` in {d / CONFIG_NAME} to match the tensors, or re-export the adapter",
                )
    not_float = sorted(
        (info for kinds in parts.values() for info in kinds.values() if info.dtype not in _FLOAT_DTYPES),
        key=lambda t: t.name,
    )
    if not_float:
        raise PatchError(
            f"{weights}, tensor `{not_float[0].name}`: dtype {not_float[0].dtype} is not a floating-point type "
            f"({len(not_float)} such tensors); LoRA factors are F32, F16 or BF16",
            hint="re-export the adapter from the trained (unquantized) peft model with `save_pretrained`",
        )
    tensorio.check_finite(
        weights,
        error_cls=PatchError,
        hint="the patch diverged in training or is corrupt; retrain it (lower learning rate) or re-export it",
    )
    targets = cfg["target_modules"]
    mts = cfg.get("modules_to_save")
    return AdapterSummary(
        path=d,
        peft_type=str(cfg["peft_type"]).upper(),
        r=r,
        lora_alpha=float(cfg["lora_alpha"]),
        target_modules=targets if isinstance(targets, str) else tuple(targets),
        modules_to_save=tuple(mts) if mts else None,
        use_dora=bool(cfg.get("use_dora", False)),
        use_rslora=bool(cfg.get("use_rslora", False)),
        peft_version=cfg.get("peft_version") if isinstance(cfg.get("peft_version"), str) else None,
        base_model_name_or_path=cfg.get("base_model_name_or_path")
        if isinstance(cfg.get("base_model_name_or_path"), str)
        else None,
        task_type=cfg.get("task_type") if isinstance(cfg.get("task_type"), str) else None,
        lora_modules=tuple(sorted(parts)),
        num_tensors=len(header),
        nbytes=header.payload_bytes,
        dtypes=tuple(sorted({t.dtype for t in header.values()})),
    )


__all__ = [
    "CONFIG_NAME",
    "PICKLED_WEIGHTS_NAMES",
    "WEIGHTS_NAME",
    "AdapterSummary",
    "read_adapter_config",
    "validate_adapter_dir",
]
