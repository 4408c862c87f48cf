"""Steps shared by the in-process jobs (evaluate, compare): preflight + rewrite, load + attach.

A patch is never attached without :func:`checked_patch` first: the same preflight and
rewrite (keys normalized, vocabulary rows carried, unknown null config keys dropped)
as a port, so a patch that ports also evaluates.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from portllm_edge.history.store import RunTracker
    from portllm_edge.models.refs import ResolvedBase
    from portllm_edge.porting.attach import AttachReport
    from portllm_edge.porting.offload import Offload
    from portllm_edge.porting.preflight import PreflightReport
    from portllm_edge.workflow.types import PatchRef


@dataclass(frozen=True)
class CheckedPatch:
    """A patch that passed the preflight against a base.

    Attributes:
        patch: the patch as named.
        attach_dir: the folder to attach (the patch itself, or its rewritten copy).
        preflight: the preflight report.
    """

    patch: PatchRef
    attach_dir: Path
    preflight: PreflightReport


@dataclass
class Configuration:
    """A base loaded at a precision, with a patch attached or not (the model lives here)."""

    model: Any
    tokenizer: Any
    base_id: str
    precision: str
    device: str
    load_seconds: float
    attach: AttachReport | None = None


def checked_patch(
    patch: PatchRef, base: ResolvedBase, old_base: ResolvedBase | None, work: Path, *, force: bool = False
) -> CheckedPatch:
    """Preflight ``patch`` against ``base`` (with the old base when known) and rewrite it when needed.

    Raises:
        CompatibilityError: a check failed and ``force`` is false.
    """
    from portllm_edge.porting.port import checked_adapter

    attach_dir, report = checked_adapter(
        patch.adapter_dir,
        base.path,
        work,
        old_base_dir=old_base.path if old_base is not None else None,
        force=force,
    )
    return CheckedPatch(patch, attach_dir, report)


def load_configuration(
    base: ResolvedBase,
    precision: str,
    patch: CheckedPatch | None = None,
    *,
    device: str | None = None,
    offload: Offload | None = None,
) -> Configuration:
    """Load ``base`` at ``precision`` and attach the checked patch, if any (verified: see ``attach_patch``).

    ``offload`` (``--device-map auto``/``--max-memory``) puts layers that do not fit on CPU or disk.

    Raises:
        BaseModelError, ConfigError: the load; PortingError: the attach check.
    """
    from portllm_edge.porting.attach import attach_patch
    from portllm_edge.porting.load import load_base_model

    if offload is not None:
        loaded = load_base_model(base, precision, device=device, offload=offload)
    else:
        loaded = load_base_model(base, precision, device=device)
    config = Configuration(
        loaded.model, loaded.tokenizer, base.model_id, loaded.precision, loaded.device, loaded.load_seconds
    )
    if patch is not None:
        ported = attach_patch(loaded.model, loaded.tokenizer, patch.attach_dir)
        config.model, config.attach = ported.model, ported.report
    return config


class _Unrecorded:
    """A tracker for a run the user asked not to record (``--no-record``)."""

    def __init__(self) -> None:
        self.id: str | None = None
        self.results: dict[str, Any] = {}
        self.inputs: Any = None


@contextmanager
def maybe_recorded(kind: str, inputs: Any, record: bool) -> Iterator[RunTracker | _Unrecorded]:
    """:func:`portllm_edge.workflow.record.recorded` when ``record``, else a tracker that stores nothing."""
    if not record:
        yield _Unrecorded()
        return
    from portllm_edge.workflow.record import recorded

    with recorded(kind, inputs) as run:
        yield run
