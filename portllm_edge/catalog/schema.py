"""Validated shapes of the profile files: model lineages and hardware profiles.

Why this module exists: profiles are data that users edit by hand, so every
field is checked (pydantic, ``extra="forbid"``) and a typo is an error with a
"did you mean ...?" hint (see :mod:`portllm_edge.catalog.loader`), not a
silently ignored key. Memory sizes are written as human sizes (``"12GiB"``) and
held as bytes. It must not import torch.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from portllm_edge.errors import ConfigError
from portllm_edge.hardware.sizes import format_size, parse_size


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Architecture(_Strict):
    """The ``config.json`` numbers memory depends on, under their ``config.json`` names.

    ``to_config()`` returns a plain dict the planner reads exactly like a real
    ``config.json``.
    """

    model_type: str
    hidden_size: int = Field(gt=0)
    num_hidden_layers: int = Field(gt=0)
    num_attention_heads: int = Field(gt=0)
    num_key_value_heads: int = Field(gt=0)
    head_dim: int | None = Field(default=None, gt=0)
    intermediate_size: int = Field(gt=0)
    vocab_size: int = Field(gt=0)
    tie_word_embeddings: bool = False
    max_position_embeddings: int = Field(gt=0)
    sliding_window: int | None = Field(default=None, gt=0)
    use_sliding_window: bool | None = None
    rope_theta: float | None = None
    rope_scaling: dict[str, Any] | None = None
    rms_norm_eps: float | None = None
    attention_bias: bool | None = None
    final_logit_softcapping: float | None = None
    attn_logit_softcapping: float | None = None
    query_pre_attn_scalar: int | None = None
    torch_dtype: str | None = None

    @model_validator(mode="after")
    def _heads_divide(self) -> Architecture:
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"`num_attention_heads` ({self.num_attention_heads}) must be a multiple of "
                f"`num_key_value_heads` ({self.num_key_value_heads})"
            )
        return self

    def to_config(self) -> dict[str, Any]:
        """A ``config.json``-shaped dict (``None`` fields left out)."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


class ModelVersion(_Strict):
    """One released base model of a family."""

    name: str
    hf_id: str | None = None
    released: str | None = None
    parameters: int = Field(gt=0, description="Total parameter count (tied embeddings counted once).")
    architecture: Architecture
    notes: str = ""


class Compatibility(_Strict):
    """What changes between two versions of a family, for porting a patch from one to the other."""

    from_version: str = Field(alias="from")
    to_version: str = Field(alias="to")
    same_shapes: bool
    notes: str = ""


class ModelFamily(_Strict):
    """A model lineage (``profiles/models/<family>.toml``): versions and compatibility notes."""

    family: str
    display_name: str | None = None
    description: str = ""
    versions: list[ModelVersion] = Field(min_length=1)
    compatibility: list[Compatibility] = Field(default_factory=list)

    @model_validator(mode="after")
    def _known_versions(self) -> ModelFamily:
        names = {v.name for v in self.versions}
        for c in self.compatibility:
            for n in (c.from_version, c.to_version):
                if n not in names:
                    raise ValueError(
                        f"compatibility names unknown version {n!r}; versions are {sorted(names)}"
                    )
        return self


class HardwareProfile(_Strict):
    """A machine to plan for (``profiles/hardware/<name>.toml``).

    Attributes:
        name: Profile name used on the command line (``--hardware rtx-3060-12gb``).
        display_name: Marketing name.
        kind: ``cuda`` (a discrete NVIDIA GPU), ``unified`` (a Jetson: GPU and CPU
            share RAM) or ``cpu``.
        memory_bytes: Memory of the device as the driver reports it (``memory`` in the file).
        reserved_bytes: Memory taken before our job starts: display, desktop, other
            processes; on unified boards the OS (``reserved`` in the file).
        compute_capability: ``"8.6"``-style, or ``None``.
        bf16: Whether the device runs bfloat16 natively (compute capability >= 8.0).
        memory_bandwidth_gb_s: Peak memory bandwidth from the vendor's data sheet, GB/s (10^9 bytes/s),
            or ``None``; bounds decode speed (:mod:`portllm_edge.hardware.compute`).
    """

    name: str
    display_name: str
    kind: Literal["cuda", "unified", "cpu"]
    memory_bytes: int = Field(alias="memory")
    reserved_bytes: int = Field(default=0, alias="reserved")
    compute_capability: str | None = None
    bf16: bool = True
    memory_bandwidth_gb_s: float | None = Field(default=None, gt=0)
    notes: str = ""

    @property
    def bandwidth_bytes_per_s(self) -> float | None:
        """``memory_bandwidth_gb_s`` in bytes/s, or ``None``."""
        return None if self.memory_bandwidth_gb_s is None else self.memory_bandwidth_gb_s * 1e9

    @field_validator("memory_bytes", "reserved_bytes", mode="before")
    @classmethod
    def _size(cls, value: Any, info: Any) -> int:
        key = "memory" if info.field_name == "memory_bytes" else "reserved"
        try:
            return parse_size(value, field=key)
        except ConfigError as exc:
            raise ValueError(exc.message) from None

    @model_validator(mode="after")
    def _reserved_below_memory(self) -> HardwareProfile:
        if self.memory_bytes <= 0:
            raise ValueError("`memory` must be more than 0 bytes")
        if self.reserved_bytes >= self.memory_bytes:
            raise ValueError(
                f"`reserved` ({format_size(self.reserved_bytes)}) must be less than `memory` ({format_size(self.memory_bytes)})"
            )
        return self

    @property
    def available_bytes(self) -> int:
        """``memory - reserved``: what a job may use on this machine."""
        return self.memory_bytes - self.reserved_bytes

    def memory_human(self) -> str:
        return format_size(self.memory_bytes)

    def available_human(self) -> str:
        return format_size(self.available_bytes)
