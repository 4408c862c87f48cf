"""Drift diagnostics: how far did the base move between versions, compared with the patch?

Why this module exists: PortLLM (Khan et al., ICLR 2025) ports a patch ΔW learned
on W_old by computing W_new + ΔW. Their premise (§3, and the analysis of model
patches in §4) is that a LoRA update is small relative to the weights and that
continued-pretraining updates of a base move its weights little, so the patch's
direction stays meaningful on the new base. When the old base is available we
can measure both quantities per target module, streaming one row block at a
time (never a whole tensor in memory):

* base drift ``d = ‖W_new − W_old‖_F / ‖W_old‖_F``;
* patch size ``p = ‖ΔW‖_F / ‖W_old‖_F`` with ΔW = scale·B·A, computed without
  forming ΔW: ``‖B A‖_F² = Σ (BᵀB) ∘ (A Aᵀ)`` (two r×r Gram matrices);
* their ratio ``ρ = d / p``;
* projected drift ``‖U_Bᵀ (W_new − W_old) V_A‖_F / ‖W_old‖_F``: the part of the
  update inside the patch's own column space (U_B) and row space (V_A).

These are measurements, not a verdict. Whether the patch's gain survives is forecast by
:mod:`portllm_edge.forecast`, a calibration of these ratios (and of the patch's effect on
generic text) against recovered gains measured over successive updates
(docs/forecast.md). The fixed high/medium/low thresholds at decades of ρ that this module
used to print were never fitted to an outcome, and are gone: ‖(W_new + ΔW) − (W_old + ΔW)‖
equals ‖W_new − W_old‖ for every patch, so ρ alone says nothing about outputs.

What it must not do: hold more than a row block of each base tensor and one
module's LoRA factors in memory, or import torch (numpy does the arithmetic).
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from portllm_edge.errors import BaseModelError, CompatibilityError
from portllm_edge.hfconfig import model_types, same_model_family
from portllm_edge.patches.adapter_format import AdapterConfig, read_adapter_layout, resolve_module
from portllm_edge.porting.adapter_io import BaseIndex, read_base_index


@dataclass(frozen=True)
class ModuleDrift:
    """Drift of one target module.

    Attributes:
        module: Base module path, e.g. ``model.layers.0.self_attn.q_proj``.
        shape: Weight shape ``[out, in]``.
        base_drift: ‖W_new − W_old‖_F / ‖W_old‖_F (unitless).
        patch_size: ‖ΔW‖_F / ‖W_old‖_F (unitless).
        ratio: base_drift / patch_size (``inf`` for an all-zero patch).
        projected_drift: ‖U_Bᵀ (W_new − W_old) V_A‖_F / ‖W_old‖_F, the base drift inside the patch's
            own column space (U_B, orthonormal basis of B's columns) and row space (V_A, of A's
            rows) -- the part of the update the patch's r×r block sees (unitless).
    """

    module: str
    shape: tuple[int, ...]
    base_drift: float
    patch_size: float
    ratio: float
    projected_drift: float = 0.0

    @property
    def projected_ratio(self) -> float:
        """projected_drift / patch_size (``inf`` for an all-zero patch)."""
        return math.inf if self.patch_size == 0 else self.projected_drift / self.patch_size

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``ratio`` is ``None`` when infinite)."""
        return {
            "module": self.module,
            "shape": list(self.shape),
            "base_drift": self.base_drift,
            "patch_size": self.patch_size,
            "ratio": None if math.isinf(self.ratio) else self.ratio,
            "projected_drift": self.projected_drift,
            "projected_ratio": None if math.isinf(self.projected_ratio) else self.projected_ratio,
        }


@dataclass
class DriftReport:
    """Per-module drift plus medians and the overall indicator.

    Attributes:
        modules: One :class:`ModuleDrift` per LoRA target module, in file order.
        skipped: ``module: reason`` for modules that could not be compared (shape changed).
    """

    modules: list[ModuleDrift]
    skipped: list[str] = field(default_factory=list)

    @property
    def median_base_drift(self) -> float:
        """Median of :attr:`ModuleDrift.base_drift` (0 when empty)."""
        return statistics.median(m.base_drift for m in self.modules) if self.modules else 0.0

    @property
    def median_patch_size(self) -> float:
        """Median of :attr:`ModuleDrift.patch_size` (0 when empty)."""
        return statistics.median(m.patch_size for m in self.modules) if self.modules else 0.0

    @property
    def median_ratio(self) -> float:
        """Median of the per-module ratios."""
        return statistics.median(m.ratio for m in self.modules) if self.modules else math.inf

    @property
    def median_projected_ratio(self) -> float:
        """Median of :attr:`ModuleDrift.projected_ratio`."""
        return statistics.median(m.projected_ratio for m in self.modules) if self.modules else math.inf

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        ratio = self.median_ratio
        projected = self.median_projected_ratio
        return {
            "median_base_drift": self.median_base_drift,
            "median_patch_size": self.median_patch_size,
            "median_ratio": None if math.isinf(ratio) else ratio,
            "median_projected_ratio": None if math.isinf(projected) else projected,
            "modules": [m.to_dict() for m in self.modules],
            "skipped": self.skipped,
        }


def _natural_key(module: str) -> list[Any]:
    """``layers.2`` sorts before ``layers.10``."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", module)]


def lora_delta_norm(a: Any, b: Any, scale: float) -> float:
    """‖scale · B A‖_F without forming B A: ``|scale| · sqrt(Σ (BᵀB) ∘ (A Aᵀ))``.

    Args:
        a: ``[r, in]`` float array. b: ``[out, r]`` float array.
    """
    import numpy as np

    a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    gram = float(((b64.T @ b64) * (a64 @ a64.T)).sum())
    return abs(scale) * math.sqrt(max(gram, 0.0))


def _orthonormal_span(m: Any) -> Any:
    """An orthonormal basis (float64 columns) of the column space of ``m`` (``[n, r]``), via reduced QR."""
    import numpy as np

    q, _ = np.linalg.qr(np.asarray(m, dtype=np.float64))
    return q


def _require_same_architecture(old: BaseIndex, new: BaseIndex) -> None:
    """Drift is only meaningful between two versions of one model (the preflight's rule, :func:`same_model_family`).

    Raises:
        CompatibilityError: both ``config.json`` files name a ``model_type`` and they share none.
    """
    if model_types(old.config) and model_types(new.config) and not same_model_family(old.config, new.config):
        old_t, new_t = "/".join(sorted(model_types(old.config))), "/".join(sorted(model_types(new.config)))
        raise CompatibilityError(
            f"{old.model_dir}/config.json: model_type {old_t!r} differs from the new base's {new_t!r} "
            f"({new.model_dir}); drift compares two versions of one model.",
            hint="pass the base the patch was trained on as --old",
        )


def compute_drift(
    adapter_dir: Path,
    old_base_dir: Path,
    new_base_dir: Path,
    *,
    progress: Callable[[str, int, int], None] | None = None,
) -> DriftReport:
    """Measure base drift and patch size for every LoRA target module, streaming row blocks.

    Args:
        adapter_dir: The patch.
        old_base_dir: The base the patch was trained on.
        new_base_dir: The updated base.
        progress: Called as ``progress(module, i, n)`` before each module.

    Returns:
        A :class:`DriftReport`.

    Raises:
        CompatibilityError: a target module is absent from either base.
        PatchError / BaseModelError: unreadable inputs; BaseModelError also for a target module's
            base weight holding NaN or Inf (naming the file and tensor).
    """
    import numpy as np

    from portllm_edge.porting.merge import RowReader, _row_blocks

    config = AdapterConfig.read(adapter_dir, refuse_unknown=False)
    layout = read_adapter_layout(adapter_dir)
    old, new = read_base_index(old_base_dir), read_base_index(new_base_dir)
    _require_same_architecture(old, new)
    old_mods, new_mods = old.modules, new.modules
    readers: dict[Path, RowReader] = {}

    def reader(path: Path) -> RowReader:
        if path not in readers:
            readers[path] = RowReader(path, error_cls=CompatibilityError)
        return readers[path]

    def tensor_ref(index: Any, module: str) -> tuple[RowReader, str]:
        name = f"{module}.weight"
        if name not in index.tensors:  # tied lm_head: the embedding
            name = index.embedding_name()
        return reader(index.tensors[name].file), name

    rows: list[ModuleDrift] = []
    skipped: list[str] = []
    adapter = RowReader(layout.path)
    try:
        items = sorted(layout.lora.items(), key=lambda kv: _natural_key(kv[0]))
        for i, (module, lm) in enumerate(items):
            if progress is not None:
                progress(module, i, len(items))
            t_old, _ = resolve_module(module, old_mods)
            t_new, _ = resolve_module(module, new_mods)
            if t_old is None or t_new is None:
                which = old_base_dir if t_old is None else new_base_dir
                raise CompatibilityError(
                    f"{which}: has no module `{module}` targeted by the patch",
                    hint="run `portllm-edge check` first; drift needs both bases to have every target module",
                )
            if tuple(old_mods[t_old]) != tuple(new_mods[t_new]):
                skipped.append(f"{module}: shape {list(old_mods[t_old])} → {list(new_mods[t_new])}")
                continue
            r_old, n_old = tensor_ref(old, t_old)
            r_new, n_new = tensor_ref(new, t_new)
            a = adapter.full_f32(lm.a_key)
            b = adapter.full_f32(lm.b_key)
            q_b, q_a = _orthonormal_span(b), _orthonormal_span(a.T)
            projected = np.zeros((q_b.shape[1], q_a.shape[1]))
            diff2 = ref2 = 0.0
            for start, stop in _row_blocks(tuple(old_mods[t_old])):
                w_old = r_old.rows_f32(n_old, start, stop).astype(np.float64)
                w_new = r_new.rows_f32(n_new, start, stop).astype(np.float64)
                diff2 += float(np.square(w_new - w_old).sum())
                ref2 += float(np.square(w_old).sum())
                projected += q_b[start:stop].T @ ((w_new - w_old) @ q_a)
            if not (math.isfinite(ref2) and math.isfinite(diff2)):
                index, name = (old, n_old) if not math.isfinite(ref2) else (new, n_new)
                raise BaseModelError(
                    f"{index.tensors[name].file}, tensor `{name}`: holds NaN or Inf values",
                    hint="the base's weight file is corrupt; re-download or re-export the model",
                )
            norm_ref = math.sqrt(ref2) or 1e-30
            d = math.sqrt(diff2) / norm_ref
            p = lora_delta_norm(a, b, config.scaling(module)) / norm_ref
            ratio = math.inf if p == 0 else d / p
            proj = float(np.linalg.norm(projected)) / norm_ref
            rows.append(ModuleDrift(t_new, tuple(new_mods[t_new]), d, p, ratio, proj))
    finally:
        adapter.close()
        for r in readers.values():
            r.close()
    return DriftReport(rows, skipped)


__all__ = [
    "DriftReport",
    "ModuleDrift",
    "compute_drift",
    "lora_delta_norm",
]
