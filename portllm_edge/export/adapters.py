"""Write a LoRA patch as a serving runtime's adapter: a vLLM folder or a llama.cpp LoRA GGUF.

Why this module exists: vLLM and llama.cpp each load LoRA factors in their own
way and with one scale per adapter, while peft allows a scale per module
(``rank_pattern``/``alpha_pattern``, rsLoRA). Both writers therefore fold each
module's peft scale into its ``lora_B`` so that the runtime's single scale
reproduces peft's ΔW = scale·B·A exactly (up to the output dtype):

* vLLM: scale = ``lora_alpha / r`` from ``adapter_config.json`` (vLLM
  ``PEFTHelper.vllm_lora_scaling_factor``), so ``B' = B · s_m / (alpha / r)``.
* llama.cpp: scale = ``adapter.lora.alpha / rank``, with ``rank`` read from each
  ``lora_b`` tensor (``llama_adapter_lora_weight::get_scale`` in
  ``llama-adapter.h``), so ``B' = B · s_m / (alpha / r_m)``.

For a plain LoRA (no patterns, no rsLoRA) the factor is 1 and the tensors are
copied unchanged. The GGUF follows llama.cpp's ``convert_lora_to_gguf.py``:
``general.type = adapter``, ``adapter.type = lora``, ``adapter.lora.alpha``,
tensors ``<gguf name>.lora_a`` (numpy shape ``[r, in]``) and ``.lora_b``
(``[out, r]``, rows in llama.cpp's rotary layout for llama q/k), F32.

Both writers run only after :func:`portllm_edge.export.serving.check_serving`
found nothing blocking, write into a temporary sibling and rename.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from portllm_edge.errors import ExportError
from portllm_edge.fsutil import atomic_dir, atomic_file
from portllm_edge.patches.adapter_format import (
    AdapterConfig,
    canonical_key,
    read_adapter_layout,
    resolve_module,
)
from portllm_edge.porting.adapter_io import BaseIndex

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np


@dataclass
class Factors:
    """One module's LoRA factors, ready for a runtime.

    Attributes:
        module: Module path in the base's naming (``model.layers.0.self_attn.q_proj``).
        kind: ``"linear"`` or ``"embedding"``.
        a: ``float32`` ``[r, in]`` (linear) / ``[r, num_embeddings]`` (embedding).
        b: ``float32`` ``[out, r]`` / ``[dim, r]``.
        scale: peft's scale for this module (``lora_alpha/r``, patterns and rsLoRA applied).
        dtype: The adapter file's dtype of ``lora_A`` (``F32``, ``BF16``, ``F16``).
    """

    module: str
    kind: str
    a: np.ndarray
    b: np.ndarray
    scale: float
    dtype: str

    @property
    def rank(self) -> int:
        return int(self.a.shape[0])


def read_factors(adapter_dir: Path, base: BaseIndex | None) -> Iterator[Factors]:
    """Yield every LoRA module's factors (fp32), renamed onto ``base``'s module paths when given.

    Raises:
        ExportError: a module has no counterpart in ``base`` (the serving check refuses this first).
    """
    from portllm_edge.porting.merge import RowReader

    config = AdapterConfig.read(adapter_dir, refuse_unknown=False)
    layout = read_adapter_layout(adapter_dir)
    reader = RowReader(layout.path, error_cls=ExportError)
    try:
        for module, lm in layout.lora.items():
            target = module
            if base is not None:
                found, _ = resolve_module(module, base.modules)
                if found is None:
                    raise ExportError(
                        f"{layout.path}: LoRA module `{module}` has no counterpart in {base.model_dir}",
                        hint="run `portllm-edge check PATCH --base BASE`",
                    )
                target = found
            yield Factors(
                target,
                lm.kind,
                reader.full_f32(lm.a_key),
                reader.full_f32(lm.b_key),
                config.scaling(module),
                reader.header[lm.a_key].dtype,
            )
    finally:
        reader.close()


def _target_names(modules: list[str]) -> list[str]:
    return sorted({m.rsplit(".", 1)[-1] for m in modules})


def write_vllm(
    adapter_dir: Path, out: Path, *, base: BaseIndex | None, base_id: str | None, overwrite: bool
) -> dict[str, Any]:
    """Write a folder vLLM serves with ``--enable-lora``: only ``lora_A``/``lora_B``, a plain config.

    ``adapter_config.json`` holds ``peft_type: LORA``, ``r``, ``lora_alpha``,
    ``target_modules`` (the module names), ``bias: none``, ``modules_to_save: null``,
    ``use_dora: false``, ``use_rslora: false``; per-module scales are folded into
    ``lora_B`` (module docstring). Tensors keep the adapter's dtype.

    Returns:
        The written config (a dict).

    Raises:
        ExportError: ``out`` exists without ``overwrite``.
    """
    import torch
    from safetensors.torch import save_file

    config = AdapterConfig.read(adapter_dir, refuse_unknown=False)
    r, alpha = config.r, config.lora_alpha
    tensors: dict[str, torch.Tensor] = {}
    modules = []
    dtypes = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}
    for f in read_factors(adapter_dir, base):
        modules.append(f.module)
        fold = f.scale / (alpha / r)
        b = f.b if fold == 1.0 else f.b * fold
        dt = dtypes.get(f.dtype, torch.float32)
        a_slot, b_slot = (
            ("lora_A", "lora_B") if f.kind == "linear" else ("lora_embedding_A", "lora_embedding_B")
        )
        tensors[canonical_key(f.module, a_slot)] = torch.from_numpy(f.a.copy()).to(dt).contiguous()
        tensors[canonical_key(f.module, b_slot)] = torch.from_numpy(b.copy()).to(dt).contiguous()
    cfg = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_id or config.base_model_name_or_path,
        "r": r,
        "lora_alpha": alpha,
        "target_modules": _target_names(modules),
        "lora_dropout": 0.0,
        "bias": "none",
        "modules_to_save": None,
        "use_dora": False,
        "use_rslora": False,
        "fan_in_fan_out": False,
        "inference_mode": True,
    }
    try:
        with atomic_dir(out, overwrite=overwrite) as tmp:
            mask = os.umask(0)
            os.umask(mask)
            os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes 0700; a serving container may run as another user
            save_file(tensors, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
            (tmp / "adapter_config.json").write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    except FileExistsError:
        raise ExportError(f"{out}: already exists", hint="choose a new --out, or pass --force") from None
    return cfg


def write_lora_gguf(
    adapter_dir: Path, out: Path, *, base: BaseIndex, name: str, overwrite: bool
) -> dict[str, Any]:
    """Write a llama.cpp LoRA adapter GGUF (``llama-server -m BASE.gguf --lora OUT``).

    Args:
        adapter_dir: The patch (checked by the serving check first).
        out: The ``.gguf`` file.
        base: The base the patch is served on (architecture, head counts, module names).
        name: ``general.name``.
        overwrite: Replace an existing ``out``.

    Returns:
        ``{"architecture", "alpha", "tensors", "max_rank"}``.

    Raises:
        ExportError: ``out`` exists without ``overwrite``; a module has no llama.cpp tensor name.
        PortingError: the base's architecture has no GGUF mapping.
    """
    import gguf
    import numpy as np

    from portllm_edge.export.gguf_layout import GgufNames

    alpha = AdapterConfig.read(adapter_dir, refuse_unknown=False).lora_alpha
    names = GgufNames(base.config, str(base.model_dir / "config.json"))
    pairs: list[tuple[str, np.ndarray, np.ndarray]] = []
    for f in read_factors(adapter_dir, base):
        gname = names.tensor_name(f"{f.module}.weight")
        if gname is None or f.kind != "linear":
            raise ExportError(
                f"{adapter_dir}: module `{f.module}` has no llama.cpp tensor name ({names.arch.name})",
                hint="export with --format peft, or merge instead",
            )
        fold = f.scale / (alpha / f.rank)
        b = names.to_gguf_rows(gname, f.b * np.float32(fold) if fold != 1.0 else f.b)
        pairs.append(
            (gname, np.ascontiguousarray(f.a, dtype=np.float32), np.ascontiguousarray(b, dtype=np.float32))
        )
    try:
        with atomic_file(out, overwrite=overwrite) as tmp:
            w = gguf.GGUFWriter(tmp, names.arch.name)
            w.add_type(gguf.GGUFType.ADAPTER)
            w.add_string(gguf.Keys.Adapter.TYPE, "lora")
            w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
            w.add_name(name)
            for gname, a, b in pairs:
                w.add_tensor(f"{gname}.lora_a", a)
                w.add_tensor(f"{gname}.lora_b", b)
            w.write_header_to_file()
            w.write_kv_data_to_file()
            w.write_tensors_to_file()
            w.close()
    except FileExistsError:
        raise ExportError(f"{out}: already exists", hint="choose a new --out, or pass --force") from None
    return {
        "architecture": names.arch.name,
        "alpha": alpha,
        "tensors": 2 * len(pairs),
        "max_rank": max((a.shape[0] for _, a, _ in pairs), default=0),
    }


__all__ = ["Factors", "read_factors", "write_lora_gguf", "write_vllm"]
