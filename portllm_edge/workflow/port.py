"""The main job: port a patch onto an updated base, training-free, and measure what it cost.

resolve -> **fail before work** (:func:`prepare_port`: name, disk, merge target, eval file,
preflight and rewrite, precision) -> **load -> attach -> evaluate** (a
:class:`~portllm_edge.workflow.jobs.PortJob`, in a measurement worker process: the peak is
the worker's) -> save -> merge (:func:`save_and_merge`) -> record (:func:`port_outcome`).
:func:`portllm_edge.workflow.fleet.port_fleet` runs the same public steps with its own
load -> attach (one load of the base for many patches). The ported patch is the *same* ΔW
(PortLLM, Khan et al., ICLR 2025, §3: W_new + ΔW with ΔW learned on W_old); only its
``base_model_name_or_path`` changes (and, for a vocabulary change, the carried rows).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from portllm_edge.export.merged_gguf import is_gguf_path
from portllm_edge.workflow.jobs import PortJob, PortJobResult
from portllm_edge.workflow.steps import CheckedPatch, PhaseFn, Phases
from portllm_edge.workflow.types import EvalSpec, Memory, PortOutcome, Resolved

if TYPE_CHECKING:
    from portllm_edge.porting.offload import Offload


@dataclass(frozen=True)
class PortRequest:
    """What a port was asked to do (the run record's inputs). See :func:`port` for each field."""

    patch: str
    base: str
    precision: str = "nf4"
    name: str | None = None
    save: bool = True
    force: bool = False
    overwrite: bool = False
    old: str | None = None
    merge_to: str | None = None
    merge_dtype: str = "auto"
    evaluate: EvalSpec | None = None
    device: str | None = None
    offload: dict[str, Any] | None = None


@dataclass(frozen=True)
class PreparedPort:
    """Everything a port knows before any weight is loaded (:func:`prepare_port`).

    Attributes:
        resolved: the patch, the new base and the old base.
        ported_name: the store name the port will be saved under (None: not saved).
        checked: the patch after the preflight, and the folder to attach.
        fingerprint: the new base's weight fingerprint.
        precision: the precision the load uses (for ``auto``, the planner's answer for this base on ``device``).
        device: the device the load uses (``--device``, else the planner's: :func:`~portllm_edge.porting.load.default_device`).
    """

    resolved: Resolved
    ported_name: str | None
    checked: CheckedPatch
    fingerprint: str
    precision: str
    device: str


def prepare_port(req: PortRequest, resolved: Resolved, work: Path) -> PreparedPort:
    """Every check of a port that needs no weights, cheapest first; the patch is preflighted and rewritten.

    Args:
        req: the port's request. resolved: its patch and bases. work: a folder for the rewritten copy.

    Raises:
        StoreError (name taken, no disk space), DataError (eval file), ExportError/PortingError
        (merge target), CompatibilityError (preflight, no ``force``), ConfigError (precision, offload).
    """
    from portllm_edge.porting.port import ported_patch_name
    from portllm_edge.workflow import checks
    from portllm_edge.workflow.steps import checked_patch

    name = None
    if req.save:
        name = (
            req.name
            if req.name is not None
            else ported_patch_name(resolved.patch.name, resolved.base.model_id)
        )
        stored = resolved.patch.stored
        checks.check_new_patch_name(
            name, overwrite=req.overwrite, source=stored.name if stored is not None else None
        )
        from portllm_edge import paths

        need = 2 * checks.adapter_bytes(resolved.patch.adapter_dir)
        checks.check_free_space(paths.patches_dir(), need, "the ported patch")
    if req.merge_to is not None and is_gguf_path(req.merge_to):
        from portllm_edge.export.merged_gguf import check_gguf_merge_target

        check_gguf_merge_target(
            resolved.base.path, req.merge_to, dtype=req.merge_dtype, overwrite=req.overwrite
        )
        need = checks.merged_model_bytes(resolved.base.path, "bf16")
        checks.check_free_space(Path(req.merge_to).parent, need, "the merged model")
    elif req.merge_to is not None:
        from portllm_edge.porting.merge import check_merge_target

        check_merge_target(
            resolved.patch.adapter_dir,
            resolved.base.path,
            req.merge_to,
            dtype=req.merge_dtype,
            overwrite=req.overwrite,
        )
        need = checks.merged_model_bytes(resolved.base.path, req.merge_dtype)
        checks.check_free_space(Path(req.merge_to).parent, need, "the merged model")
    if req.evaluate is not None:
        checks.check_eval_spec(req.evaluate)
    checked = checked_patch(resolved.patch, resolved.base, resolved.old_base, work, force=req.force)
    from portllm_edge.porting.load import default_device

    device = req.device or default_device()
    precision = checks.check_precision(req.precision, device, resolved.base)
    if req.offload is not None:
        from portllm_edge.porting.offload import check_offload_precision

        check_offload_precision(req.precision)
    return PreparedPort(resolved, name, checked, resolved.base.fingerprint(), precision, device)


def _load_attach_evaluate(
    req: PortRequest, prep: PreparedPort, phases: Phases, *, isolate: bool
) -> PortJobResult:
    """Load -> attach -> evaluate: in a measurement worker (``isolate``), else in this process (unmeasured)."""
    from portllm_edge.porting.offload import Offload
    from portllm_edge.workflow.jobs import run_port_job

    job = PortJob(
        prep.resolved.base.path,
        prep.checked.attach_dir,
        prep.precision,
        prep.device,
        Offload.from_dict(req.offload) if req.offload is not None else None,
        req.evaluate,
    )
    if isolate:
        from portllm_edge.measure.isolated import measure_job

        measured = measure_job("port", job.to_json(), on_phase=phases.announce)
        phases.times.update(measured.phases)
        return PortJobResult.from_json(measured.details, Memory.of(measured))
    try:
        return run_port_job(job, phases.start)
    finally:
        phases.stop()


@dataclass(frozen=True)
class LoraShape:
    """A patch's shape, for a fine-tune baseline of the same shape: rank, alpha, target modules."""

    r: int
    lora_alpha: float
    target_modules: tuple[str, ...]


def lora_shape(adapter_dir: Path) -> LoraShape:
    """The :class:`LoraShape` of a checked adapter folder (q_proj/v_proj when its targets are a regex).

    ``r`` and ``lora_alpha`` are read as peft reads them (:class:`~portllm_edge.patches.adapter_format.AdapterConfig`:
    a missing ``lora_alpha`` is peft's default, 8).

    Raises:
        PatchError: the folder's ``adapter_config.json`` is missing or invalid.
    """
    from portllm_edge.patches.adapter_format import AdapterConfig

    cfg = AdapterConfig.read(adapter_dir, refuse_unknown=False)
    targets = cfg.target_modules
    mods = targets if isinstance(targets, tuple) and targets else ("q_proj", "v_proj")
    return LoraShape(cfg.r, cfg.lora_alpha, mods)


def save_and_merge(
    req: PortRequest, prep: PreparedPort, m: PortJobResult, phases: Phases, run_id: str
) -> None:
    """Store the ported patch (with lineage) when ``prep.ported_name``, then write ``req.merge_to`` if asked.

    Raises:
        StoreError: the store can't be written. ExportError/PortingError: the merge.
    """
    from portllm_edge.porting.port import store_ported_patch

    r = prep.resolved
    if prep.ported_name is not None:
        with phases("save"):
            store_ported_patch(
                prep.checked.attach_dir,
                name=prep.ported_name,
                parent=r.patch.stored,
                source_dir=r.patch.adapter_dir,
                base=r.base,
                base_fingerprint=prep.fingerprint,
                precision=m.precision,
                run_id=run_id,
                note=f"{m.attach.matched_tensors}/{m.attach.total_tensors} tensors matched",
                overwrite=req.overwrite,
            )
    if req.merge_to is not None:
        from portllm_edge.export.merged_gguf import write_merged_gguf
        from portllm_edge.porting.merge import stream_merge

        write = write_merged_gguf if is_gguf_path(req.merge_to) else stream_merge
        with phases("merge"):
            write(
                prep.checked.attach_dir,
                r.base.path,
                Path(req.merge_to),
                dtype=req.merge_dtype,
                overwrite=req.overwrite,
            )


def port(
    patch: str,
    base: str,
    *,
    precision: str = "nf4",
    name: str | None = None,
    save: bool = True,
    force: bool = False,
    overwrite: bool = False,
    old: str | None = None,
    merge_to: str | Path | None = None,
    merge_dtype: str = "auto",
    evaluate: EvalSpec | None = None,
    device: str | None = None,
    offload: Offload | None = None,
    on_phase: PhaseFn | None = None,
    isolate: bool = True,
) -> PortOutcome:
    """Port ``patch`` onto ``base``: check everything first, then load, attach, evaluate, save, merge, record.

    Args:
        patch: a store name or a LoRA adapter folder.
        base: the updated base (folder, store name, GGUF, cached hub id).
        precision: auto, nf4, int8, bf16 or fp32.
        name: store name of the ported patch (default ``<patch>@<base id>``).
        save: store the ported patch (with lineage).
        force: port despite failed preflight checks.
        overwrite: replace an existing ported patch of that name and an existing ``merge_to``.
        old: the old base (default: looked up in the model store from the patch's records).
        merge_to: also write W_new + ΔW to this folder (streaming, bf16/fp32; never into 4-bit),
            or to this ``.gguf`` file (base imported from GGUF; :mod:`portllm_edge.export.merged_gguf`).
        merge_dtype: "auto" (the base's stored dtype), "bf16", "fp16" or "fp32" for a folder;
            "auto" (f16), "f16", "bf16" or "q8_0" for a ``.gguf``.
        evaluate: a quick evaluation of the ported model.
        device: "cpu" or "cuda" (default: CUDA when available).
        offload: ``--device-map auto``/``--max-memory``: layers that do not fit go to CPU or disk
            (:mod:`portllm_edge.porting.offload`; floating precisions only).
        on_phase: progress callback, called with each phase's name as it starts; an exception
            it raises (e.g. :class:`portllm_edge.history.RunCancelled`) stops the port.
        isolate: run load -> attach -> evaluate in a measurement worker process and report its
            peak (the CLI, the app and the demo always do); False runs it here, unmeasured.

    Returns:
        A :class:`PortOutcome`, also recorded as a ``port`` run (failed and interrupted runs
        are recorded too, with their reason).

    Raises:
        StoreError (name taken, no disk space), PatchError, BaseModelError, DataError (eval
        file), ConfigError (precision), CompatibilityError (preflight, no ``force``) -- all
        before any load; PortingError (unmatched tensors, NaN/Inf, no effect) after it.
    """
    req = PortRequest(
        patch, base, precision, name, save, force, overwrite, old,
        None if merge_to is None else str(merge_to), merge_dtype, evaluate, device,
        None if offload is None else offload.to_dict(),
    )  # fmt: skip
    from portllm_edge.workflow.record import recorded
    from portllm_edge.workflow.resolve import distinct_weights, resolve

    phases = Phases(on_phase)
    with recorded("port", req) as run, tempfile.TemporaryDirectory(prefix="portllm-port-") as tmp:
        from portllm_edge.workflow.checks import check_port_name_options

        check_port_name_options(req.name, save=req.save)
        resolved = resolve(req.patch, req.base, old=req.old)
        if req.old is not None and resolved.old_base is not None:  # as `check`: a port across no update
            distinct_weights(resolved.old_base, resolved.base, old_flag="--old")
        with phases("check"):
            prep = prepare_port(req, resolved, Path(tmp))
        run.results = {"preflight": prep.checked.preflight.to_dict(), "ported_name": prep.ported_name}
        m = _load_attach_evaluate(req, prep, phases, isolate=isolate)
        save_and_merge(req, prep, m, phases, run.id)
        outcome = port_outcome(req, prep, m, phases, run.id)
        run.results = outcome.to_dict()
    return outcome


def port_outcome(
    req: PortRequest, prep: PreparedPort, m: PortJobResult, phases: Phases, run_id: str
) -> PortOutcome:
    """The :class:`PortOutcome` of a finished port (with the memory saving when ``m.memory`` was measured)."""
    saving = None
    if m.memory is not None:
        from portllm_edge.workflow.savings import port_saving

        shape = lora_shape(prep.checked.attach_dir)
        hit = bool((m.quantization.get("cache") or {}).get("hit"))
        saving = port_saving(
            m.memory, prep.resolved.base.path, shape.r, shape.target_modules, m.precision, quantized_copy=hit
        )
    old = prep.resolved.old_base
    return PortOutcome(
        patch=req.patch,
        ported_name=prep.ported_name,
        base_id=prep.resolved.base.model_id,
        base_fingerprint=prep.fingerprint,
        old_base_id=old.model_id if old else None,
        precision=m.precision,
        compute_dtype=m.compute_dtype,
        device=m.device,
        phases=dict(phases.times),
        preflight=prep.checked.preflight,
        attach=m.attach,
        evaluation=m.evaluation,
        memory=m.memory,
        saving=saving,
        merged_to=req.merge_to,
        run_id=run_id,
    )
