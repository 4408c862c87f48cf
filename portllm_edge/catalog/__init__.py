"""Model lineages and hardware profiles, validated (the ``profiles/`` data as typed records).

Public API::

    load_catalog(user_dir=None) -> Catalog
    Catalog.families: dict[str, ModelFamily]; Catalog.hardware: dict[str, HardwareProfile]
    Catalog.find_version(name) -> (ModelFamily, ModelVersion) | None
    Catalog.hardware_profile(name) -> HardwareProfile          # ConfigError with "did you mean"
    load_family_file(path), load_hardware_file(path)           # one file, ConfigError on a bad key
    did_you_mean(word, choices) -> str | None

Unknown keys are errors (``extra="forbid"``) with a "did you mean ...?" hint naming
the file and key. This package must not import torch.
"""

from __future__ import annotations

from portllm_edge.catalog.loader import (
    Catalog,
    did_you_mean,
    load_catalog,
    load_family_file,
    load_hardware_file,
)
from portllm_edge.catalog.schema import (
    Architecture,
    Compatibility,
    HardwareProfile,
    ModelFamily,
    ModelVersion,
)

__all__ = [
    "Architecture",
    "Catalog",
    "Compatibility",
    "HardwareProfile",
    "ModelFamily",
    "ModelVersion",
    "did_you_mean",
    "load_catalog",
    "load_family_file",
    "load_hardware_file",
]
