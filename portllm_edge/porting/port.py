"""The main job: port a stored patch onto an updated base, training-free.

probe -> **check -> load -> attach -> (evaluate) -> save -> record**. Each phase is
timed. The ported patch is the *same* ΔW (PortLLM, Khan et al., ICLR 2025, §3:
W_new + ΔW with ΔW learned on W_old); only its ``adapter_config.json``
``base_model_name_or_path`` changes (and, for a vocabulary change, the carried
embedding rows; see :mod:`portllm_edge.porting.vocab`). It is stored as a new
patch whose lineage is the parent's plus a ``port`` entry.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from portllm_edge.errors import PatchError, StoreError
from portllm_edge.measure.isolated import peak_rss_bytes as process_peak_rss_bytes

PhaseFn = Callable[[str], None]
"""phase(name): called as each phase starts (check, load, attach, evaluate, save, merge)."""


@dataclass
class PortResult:
    """What a port did and measured.

    Attributes:
        patch: the source patch (store name or folder).
        ported_name: the store name of the ported patch (None when not saved).
        base_id / base_fingerprint: the new base.
        precision: the load precision used.
        phases: wall time per phase, seconds.
        attach: the attach report (matched tensors, logit change, finiteness).
        preflight: the preflight report as a dict (None when the preflight was unavailable).
        evaluation: accuracy record when a task was evaluated.
        peak_rss_bytes: this process's peak RSS so far (CPU; Linux VmHWM), bytes. Includes whatever the
            calling process did before the port; quote isolated measurements (``bench``) instead.
        cuda_max_reserved_bytes: ``torch.cuda.max_memory_reserved()`` (CUDA), bytes.
        merged_to: the merged model folder when ``merge_to`` was given.
        run_id: the run record id.
    """

    patch: str
    ported_name: str | None
    base_id: str
    base_fingerprint: str
    precision: str
    phases: dict[str, float]
    attach: dict[str, Any]
    preflight: dict[str, Any] | None
    evaluation: dict[str, Any] | None
    peak_rss_bytes: int
    cuda_max_reserved_bytes: int | None
    merged_to: str | None = None
    run_id: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_patch(patch: str) -> tuple[Path, Any]:
    """A store name or an adapter folder -> (adapter folder, stored patch or None).

    Raises:
        StoreError: an unknown store name (with a did-you-mean hint).
        PatchError: a folder that is not a valid LoRA adapter.
    """
    from portllm_edge.patches import PatchStore, validate_adapter_dir

    p = Path(patch).expanduser()
    if p.is_dir():
        validate_adapter_dir(p)
        return p, None
    if "/" in patch or p.suffix:
        if not p.exists():
            raise PatchError(
                f"{p}: no such patch folder.", hint="pass a store name (see `patch list`) or a folder"
            )
    stored = PatchStore().get(patch)
    return stored.adapter_dir, stored


def checked_adapter(
    adapter_dir: Path,
    base_dir: Path,
    work_dir: Path,
    *,
    old_base_dir: Path | None = None,
    force: bool = False,
) -> tuple[Path, Any]:
    """Run the preflight of ``adapter_dir`` against ``base_dir`` and return the folder to attach, and the report.

    The folder is the patch itself, or a rewritten copy under ``work_dir`` (keys normalized, vocabulary
    rows carried over; see :func:`portllm_edge.porting.preflight.prepare_adapter`).

    Raises:
        CompatibilityError: a check failed and ``force`` is false.
    """
    from portllm_edge.porting.preflight import prepare_adapter, run_preflight

    report = run_preflight(adapter_dir, base_dir, old_base_dir=old_base_dir)
    if not force:
        report.raise_on_failure()
    attach_dir = prepare_adapter(adapter_dir, base_dir, work_dir, report=report, old_base_dir=old_base_dir)
    return attach_dir, report


def ported_patch_name(parent: str, base_id: str) -> str:
    """Default store name of a ported patch: ``<parent>@<base id>`` with unsafe characters replaced."""
    base = re.sub(r"[^A-Za-z0-9._+-]", "-", base_id)[:60]
    parent_name = Path(parent).name if "/" in parent else parent
    stem = parent_name.split("@", 1)[0]
    return re.sub(r"[^A-Za-z0-9._@+-]", "-", f"{stem}@{base}")[:128]


def port_patch(
    patch: str,
    base: str,
    *,
    precision: str = "nf4",
    name: str | None = None,
    save: bool = True,
    force: bool = False,
    old_base: str | None = None,
    merge_to: str | Path | None = None,
    merge_dtype: str = "bf16",
    eval_task: str | None = None,
    eval_data: str | Path | None = None,
    eval_limit: int | None = None,
    device: str | None = None,
    on_phase: PhaseFn | None = None,
) -> PortResult:
    """Port ``patch`` onto ``base`` at ``precision``; verify, optionally evaluate, save and merge.

    Args:
        patch: a store name or a LoRA adapter folder.
        base: the updated base (folder, store name, GGUF, cached hub id).
        precision: auto, nf4 (default), int8, bf16 or fp32.
        name: store name of the ported patch (default ``<patch>@<base id>``).
        save: store the ported patch (with lineage).
        force: port despite preflight failures; replace an existing ported patch.
        old_base: the old base, for the tokenizer comparison and vocabulary carry-over.
        merge_to: also write W_new + ΔW to this folder (streaming, bf16/fp32; never into 4-bit).
        merge_dtype: "bf16" or "fp32" for ``merge_to``.
        eval_task, eval_data, eval_limit: a quick evaluation of the ported model.
        device: "cpu" or "cuda" (default: CUDA when available).
        on_phase: progress callback, called with each phase's name as it starts.

    Returns:
        A :class:`PortResult` (also recorded as a run).

    Raises:
        StoreError, PatchError, BaseModelError, CompatibilityError (preflight failed, no ``force``),
        PortingError (unmatched tensors, NaN/Inf, no effect), ConfigError (precision).
    """
    from portllm_edge.models import resolve_base
    from portllm_edge.patches import LineageEntry, PatchStore
    from portllm_edge.porting.attach import attach_patch
    from portllm_edge.porting.load import load_base_model
    from portllm_edge.runs import new_run_id, record_run

    phases: dict[str, float] = {}
    step = on_phase or (lambda _name: None)

    def timed(label: str) -> Any:
        class _T:
            def __enter__(self_inner) -> None:
                step(label)
                self_inner.t = time.perf_counter()

            def __exit__(self_inner, *exc: object) -> None:
                phases[label] = time.perf_counter() - self_inner.t

        return _T()

    from portllm_edge.porting.load import default_device, resolve_precision

    resolve_precision(precision, device or default_device())  # fail before any work on a bad --precision
    run_id = new_run_id("port")
    adapter_dir, stored = resolve_patch(patch)
    resolved = resolve_base(base)
    resolved_old = resolve_base(old_base) if old_base else None
    if merge_to is not None:  # fail before storing the ported patch, not after
        from portllm_edge.porting.merge import check_merge_target

        check_merge_target(adapter_dir, resolved.path, merge_to, dtype=merge_dtype, overwrite=force)
    work = Path(tempfile.mkdtemp(prefix="portllm-port-"))
    try:
        with timed("check"):
            attach_dir, report = checked_adapter(
                adapter_dir,
                resolved.path,
                work,
                old_base_dir=resolved_old.path if resolved_old else None,
                force=force,
            )
            preflight = report.to_dict()
        with timed("load"):
            loaded = load_base_model(resolved, precision, device=device)
            fingerprint = resolved.fingerprint()
        with timed("attach"):
            ported = attach_patch(loaded.model, loaded.tokenizer, attach_dir)
        evaluation = None
        if eval_task and eval_data:
            with timed("evaluate"):
                from portllm_edge.evaluation.scoring import evaluate
                from portllm_edge.evaluation.tasks import load_task

                res = evaluate(
                    ported.model, loaded.tokenizer, load_task(eval_task, eval_data, limit=eval_limit)
                )
                evaluation = {
                    "task": res.task,
                    "n": res.n,
                    "accuracy": res.accuracy,
                    "ci_low": res.ci_low,
                    "ci_high": res.ci_high,
                    "f1": res.f1,
                    "tokens_per_s": res.tokens_per_s,
                }
        ported_name = None
        if save:
            with timed("save"):
                ported_name = name or ported_patch_name(stored.name if stored else patch, resolved.model_id)
                store = PatchStore()
                if ported_name in store.names() and not force:
                    raise StoreError(
                        f"patch store already has {ported_name!r}.",
                        hint="pass --force to replace it, or --name to store under another name",
                    )
                out = work / "save"
                out.mkdir()
                for f in ("adapter_config.json", "adapter_model.safetensors"):
                    shutil.copy2(attach_dir / f, out / f)
                cfg = json.loads((out / "adapter_config.json").read_text())
                cfg["base_model_name_or_path"] = resolved.model_id
                (out / "adapter_config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True))
                lineage = (
                    list(stored.manifest.lineage)
                    if stored
                    else [LineageEntry(kind="import", note=f"ported from folder {adapter_dir}")]
                )
                lineage.append(
                    LineageEntry(
                        kind="port",
                        base_id=resolved.model_id,
                        base_fingerprint=fingerprint,
                        precision=loaded.precision,
                        parent=stored.name if stored else None,
                        run_id=run_id,
                        note=f"{ported.report.matched_tensors}/{ported.report.total_tensors} tensors matched",
                    )
                )
                store.import_dir(
                    out,
                    name=ported_name,
                    task=stored.manifest.task if stored else None,
                    source_base_id=resolved.model_id,
                    source_base_fingerprint=fingerprint,
                    model_type=str(resolved.config().get("model_type")),
                    lineage=lineage,
                    force=force,
                )
        merged_to = None
        if merge_to is not None:
            with timed("merge"):
                from portllm_edge.porting.merge import stream_merge

                stream_merge(attach_dir, resolved.path, Path(merge_to), dtype=merge_dtype, overwrite=force)
                merged_to = str(merge_to)
        cuda_peak = None
        if loaded.device == "cuda":
            import torch

            cuda_peak = int(torch.cuda.max_memory_reserved())
        result = PortResult(
            patch=patch,
            ported_name=ported_name,
            base_id=resolved.model_id,
            base_fingerprint=fingerprint,
            precision=loaded.precision,
            phases=phases,
            attach=asdict(ported.report),
            preflight=preflight,
            evaluation=evaluation,
            peak_rss_bytes=process_peak_rss_bytes(),
            cuda_max_reserved_bytes=cuda_peak,
            merged_to=merged_to,
            run_id=run_id,
            extras={
                "compute_dtype": loaded.compute_dtype,
                "quantization": loaded.quantization,
                "device": loaded.device,
            },
        )
        record_run(
            "port",
            {
                "patch": patch,
                "base": base,
                "precision": precision,
                "name": name,
                "merge_to": str(merge_to) if merge_to else None,
                "eval_task": eval_task,
                "eval_data": str(eval_data) if eval_data else None,
                "eval_limit": eval_limit,
            },
            result.to_dict(),
            run_id=run_id,
        )
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)
