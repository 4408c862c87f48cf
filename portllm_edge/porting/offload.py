"""Offload a base that does not fit: accelerate's ``device_map="auto"`` with a ``max_memory`` budget.

Why this module exists: a base larger than the device's budget should still run,
with the layers that do not fit placed on CPU RAM or on disk, instead of failing.
transformers hands ``device_map="auto"``/``max_memory``/``offload_folder`` to
accelerate (``infer_auto_device_map``, ``dispatch_model``), which fills the devices
in order (GPUs, then ``cpu``, then ``disk``) up to each budget and moves each
offloaded layer's weights in for its forward pass (accelerate docs, "Big Model
Inference"). Outputs are those of the unoffloaded model; only time grows.

Offload keeps floating weights (bf16/fp16/fp32): bitsandbytes' 4-bit/8-bit layers
cannot be offloaded to disk, so an offloaded quantized load is refused.

This module parses and checks the options; :func:`portllm_edge.porting.load.load_base_model`
applies them. It must not import torch at module import.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from portllm_edge.errors import ConfigError

DEVICE_MAPS: tuple[str, ...] = ("auto",)
"""``--device-map`` values: ``auto`` (accelerate fills GPUs, then CPU, then disk)."""


@dataclass(frozen=True)
class Offload:
    """An offload request, checked.

    Attributes:
        device_map: ``"auto"``.
        max_memory: accelerate's budget per device, bytes: keys ``0``, ``1``, ... (GPUs) and ``"cpu"``;
            ``None`` lets accelerate use what is free.
        offload_folder: Where disk-offloaded weights go (``None``: a temporary folder per load).
    """

    device_map: str = "auto"
    max_memory: dict[int | str, int] | None = None
    offload_folder: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for run records and worker parameters)."""
        return {
            "device_map": self.device_map,
            "max_memory": None
            if self.max_memory is None
            else {str(k): v for k, v in self.max_memory.items()},
            "offload_folder": None if self.offload_folder is None else str(self.offload_folder),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Offload:
        """Inverse of :meth:`to_dict`."""
        mm = d.get("max_memory")
        return cls(
            d.get("device_map") or "auto",
            None if mm is None else {(int(k) if str(k).isdigit() else k): int(v) for k, v in mm.items()},
            Path(d["offload_folder"]) if d.get("offload_folder") else None,
        )


def parse_max_memory(text: str, device: str = "cpu") -> dict[int | str, int]:
    """Parse ``--max-memory``: ``"300MiB"`` (the load device) or ``"0=20GiB,cpu=64GiB"`` (per device).

    Args:
        text: One size, or comma-separated ``DEVICE=SIZE`` pairs (``DEVICE``: ``cpu``, ``N`` or ``cuda:N``).
        device: The load device a bare size applies to (``cpu``, ``cuda``, ``cuda:N``).

    Returns:
        ``{device: bytes}`` with GPU keys as ints and ``"cpu"``.

    Raises:
        ConfigError: a part is not a size or names an unknown device.
    """
    from portllm_edge.hardware.sizes import parse_size

    def key_of(name: str) -> int | str:
        name = name.strip().lower()
        if name == "cpu":
            return "cpu"
        if name == "cuda":
            return 0
        n = name.removeprefix("cuda:")
        if n.isdigit():
            return int(n)
        raise ConfigError(
            f"`--max-memory`: device {name!r} is not known",
            hint="use cpu, N or cuda:N, e.g. 0=20GiB,cpu=64GiB",
        )

    text = text.strip()
    if not text:
        raise ConfigError(
            "`--max-memory` is empty", hint="e.g. --max-memory 2GiB or --max-memory 0=20GiB,cpu=64GiB"
        )
    if "=" not in text:
        return {key_of(device): parse_size(text, field="--max-memory")}
    out: dict[int | str, int] = {}
    for part in text.split(","):
        name, sep, size = part.partition("=")
        if not sep:
            raise ConfigError(
                f"`--max-memory`: {part!r} is not DEVICE=SIZE", hint="e.g. --max-memory 0=20GiB,cpu=64GiB"
            )
        out[key_of(name)] = parse_size(size, field=f"--max-memory {name.strip()}")
    return out


def offload_request(
    device_map: str | None,
    max_memory: str | None,
    device: str = "cpu",
    offload_folder: str | Path | None = None,
) -> Offload | None:
    """Check ``--device-map``/``--max-memory``; ``None`` when neither is given.

    ``--max-memory`` alone implies ``--device-map auto``.

    Raises:
        ConfigError: an unknown device map, or a bad ``--max-memory``.
    """
    if device_map is None and max_memory is None:
        return None
    dm = device_map or "auto"
    if dm not in DEVICE_MAPS:
        raise ConfigError(f"`--device-map {dm}` is not supported", hint="use --device-map auto")
    mm = parse_max_memory(max_memory, device) if max_memory is not None else None
    return Offload(dm, mm, Path(offload_folder) if offload_folder else None)


def check_offload_precision(precision: str) -> None:
    """Refuse offloading a bitsandbytes-quantized load (its 4-bit/8-bit layers cannot go to disk).

    Raises:
        ConfigError: ``precision`` is ``nf4`` or ``int8``.
    """
    if precision in ("nf4", "int8"):
        raise ConfigError(
            f"`--device-map auto` offloads floating weights; {precision} (bitsandbytes) layers cannot be offloaded",
            hint="pass --precision bf16 (or fp16/fp32) with --device-map/--max-memory, or drop the offload options",
        )


def load_kwargs(offload: Offload) -> dict[str, Any]:
    """``from_pretrained`` keyword arguments for an offloaded load.

    Without ``offload_folder`` a temporary folder is made; pass the loaded model to
    :func:`remove_with` so it is deleted when the model is.
    """
    folder = offload.offload_folder or Path(tempfile.mkdtemp(prefix="portllm-offload-"))
    kwargs: dict[str, Any] = {"device_map": offload.device_map, "offload_folder": str(folder)}
    if offload.max_memory is not None:
        kwargs["max_memory"] = dict(offload.max_memory)
    return kwargs


def remove_with(model: Any, offload: Offload, kwargs: dict[str, Any]) -> None:
    """Delete a temporary offload folder (one :func:`load_kwargs` made) when ``model`` is garbage-collected or at exit."""
    import shutil
    import weakref

    if offload.offload_folder is None:
        weakref.finalize(model, shutil.rmtree, kwargs["offload_folder"], True)


def is_offloaded(model: Any) -> bool:
    """True when accelerate placed some of ``model``'s modules on ``cpu``/``disk`` behind hooks."""
    dm = getattr(model, "hf_device_map", None) or {}
    return len(set(dm.values())) > 1 or "disk" in set(dm.values())


def peft_from_pretrained(model: Any, adapter_dir: str, **kwargs: Any) -> Any:
    """``PeftModel.from_pretrained`` for a base dispatched with offloaded layers.

    peft re-dispatches such a model after loading the adapter; with the CPU as main
    device accelerate then calls ``model.to("cpu")`` on the disk-offloaded (meta)
    weights, which fails. Here peft attaches without re-dispatching (the base's
    accelerate hooks stay in place and still bring each offloaded weight in for its
    forward), and the LoRA factors that peft left on the meta device (the device of an
    offloaded base weight) are materialized on the CPU from the adapter file.

    Raises:
        RuntimeError / ValueError: from peft, as ``PeftModel.from_pretrained``.
    """
    import torch
    from peft import PeftModel
    from peft.utils import load_peft_weights, set_peft_model_state_dict

    device_map = model.hf_device_map
    del model.hf_device_map
    try:
        peft_model = PeftModel.from_pretrained(model, adapter_dir, low_cpu_mem_usage=True, **kwargs)
    finally:
        model.hf_device_map = device_map
    for module in peft_model.modules():
        for attr in ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector"):
            sub = getattr(module, attr, None)
            if isinstance(sub, torch.nn.Module) and any(p.is_meta for p in sub.parameters()):
                sub.to_empty(device="cpu")
    name = kwargs.get("adapter_name", "default")
    set_peft_model_state_dict(peft_model, load_peft_weights(adapter_dir, device="cpu"), adapter_name=name)
    return peft_model


def placement(model: Any) -> dict[str, int]:
    """How many modules of a dispatched model sit on each device (``{"cpu": 12, "disk": 18}``)."""
    counts: dict[str, int] = {}
    for dev in (getattr(model, "hf_device_map", None) or {}).values():
        counts[str(dev)] = counts.get(str(dev), 0) + 1
    return counts


__all__ = [
    "DEVICE_MAPS",
    "Offload",
    "check_offload_precision",
    "is_offloaded",
    "load_kwargs",
    "offload_request",
    "parse_max_memory",
    "peft_from_pretrained",
    "placement",
    "remove_with",
]
