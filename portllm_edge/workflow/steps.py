"""Steps shared by the jobs: preflight + rewrite, load + attach, phase timing, recording.

A patch is never attached without :func:`checked_patch` first: the same preflight and
rewrite (keys normalized, vocabulary rows carried, unknown null config keys dropped)
as a port, so a patch that ports also evaluates. :func:`load_configuration` is the one
load -> attach: ``evaluate`` and ``compare`` call it in their own process, the measurement
worker through :mod:`portllm_edge.workflow.jobs` (a port's load -> attach, the fine-tune's load).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
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
    """A base loaded at a precision, with a patch attached or not (the model lives here).

    Attributes:
        model, tokenizer: the loaded model (a ``PeftModel`` once a patch is attached) and its tokenizer.
        base_id: the base's id for records. precision: the concrete precision (nf4, int8, bf16, fp32).
        compute_dtype: activations' dtype in quantized layers (the load dtype otherwise).
        device: ``cpu`` or ``cuda:N``. load_seconds: wall time of the load, seconds.
        quantization: the bitsandbytes settings used, for records. attach: the attach check, if a patch.
    """

    model: Any
    tokenizer: Any
    base_id: str
    precision: str
    compute_dtype: str
    device: str
    load_seconds: float
    quantization: dict[str, Any]
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


PhaseFn = Callable[[str], None]
"""phase(name): called as each phase starts (check, load, attach, evaluate, save, merge)."""


class Phases:
    """Times a job's phases and announces each as it starts.

    Two ways to mark a phase: ``with phases("save"): ...`` times one block; :meth:`start`
    closes the running phase and starts the next (for a callee that only announces).

    Attributes:
        times: phase name -> wall time, seconds.
        announce: the caller's :data:`PhaseFn`.
    """

    def __init__(self, on_phase: PhaseFn | None, times: dict[str, float] | None = None) -> None:
        self.times: dict[str, float] = {} if times is None else times
        self.announce: PhaseFn = on_phase or (lambda _name: None)
        self._running: tuple[str, float] | None = None

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        """Time the block as phase ``name``; a block that raises records no time."""
        self.start(name)
        try:
            yield
        except BaseException:
            self._running = None
            raise
        self.stop()

    def start(self, name: str) -> None:
        """Close the running phase, if any, and start ``name``, announcing it."""
        self.stop()
        self._running = (name, time.perf_counter())
        self.announce(name)

    def stop(self) -> None:
        """Close the running phase, if any."""
        if self._running is not None:
            name, started = self._running
            self.times[name] = time.perf_counter() - started
            self._running = None


def load_configuration(
    base: ResolvedBase,
    precision: str,
    attach_dir: Path | None = None,
    *,
    device: str | None = None,
    offload: Offload | None = None,
    on_phase: PhaseFn | None = None,
) -> Configuration:
    """Load ``base`` at ``precision`` and attach a checked patch, if any (verified: see ``attach_patch``).

    Args:
        base: the base to load.
        precision: auto, nf4, int8, bf16 or fp32.
        attach_dir: the :attr:`CheckedPatch.attach_dir` of a patch that passed :func:`checked_patch`, or None.
        device: "cpu", "cuda" or "cuda:N" (default: CUDA when available).
        offload: ``--device-map auto``/``--max-memory``: layers that do not fit go to CPU or disk.
        on_phase: called with ``load`` and then ``attach`` as each starts.

    Raises:
        BaseModelError, ConfigError: the load; PortingError: the attach check.
    """
    from portllm_edge.porting.attach import attach_patch
    from portllm_edge.porting.load import load_base_model

    announce = on_phase or (lambda _name: None)
    announce("load")
    if offload is not None:
        loaded = load_base_model(base, precision, device=device, offload=offload)
    else:
        loaded = load_base_model(base, precision, device=device)
    config = Configuration(
        loaded.model,
        loaded.tokenizer,
        base.model_id,
        loaded.precision,
        loaded.compute_dtype,
        loaded.device,
        loaded.load_seconds,
        dict(loaded.quantization),
    )
    if attach_dir is not None:
        announce("attach")
        ported = attach_patch(loaded.model, loaded.tokenizer, attach_dir)
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
