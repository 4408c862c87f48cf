"""Evaluate a base, optionally with a patch, on one task: resolve -> checks -> load -> attach -> score -> record.

The task file is read and the patch preflighted (and rewritten when needed, as for a
port) before any model loads.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from portllm_edge.workflow.types import EvalSpec

if TYPE_CHECKING:
    from portllm_edge.evaluation.results import EvalResult
    from portllm_edge.porting.attach import AttachReport
    from portllm_edge.porting.offload import Offload
    from portllm_edge.porting.preflight import PreflightReport


@dataclass(frozen=True)
class EvalRequest:
    """What an evaluation was asked to do (the run record's inputs). See :func:`evaluate`."""

    spec: EvalSpec
    base: str
    patch: str | None = None
    old: str | None = None
    precision: str = "auto"
    normalize: str = "none"
    max_new_tokens: int = 256
    force: bool = False
    offload: Offload | None = None

    def to_record(self, outcome: EvalOutcome | None = None) -> dict[str, Any]:
        """The run record's inputs: flat, with the concrete base id, patch name and precision once known."""
        from dataclasses import asdict

        d = asdict(self.spec)
        d.update(
            offload=None if self.offload is None else self.offload.to_dict(),
            data=str(outcome.data if outcome else self.spec.data),
            base=self.base,
            base_id=outcome.base_id if outcome else None,
            patch=outcome.patch if outcome else self.patch,
            old=self.old,
            precision=outcome.precision if outcome else self.precision,
            device=outcome.device if outcome else None,
            total_examples=outcome.examples_total if outcome else None,
            num_fewshot=outcome.num_fewshot if outcome else self.spec.num_fewshot,
            normalize=self.normalize,
            max_new_tokens=self.max_new_tokens,
        )
        return d


@dataclass
class EvalOutcome:
    """An evaluation's result and how it was made.

    Attributes:
        result: the scores (accuracy, CI, F1, speed, predictions when asked for).
        base_id: the base; patch: the patch's name (None for the bare base).
        precision / device: how the base was loaded; load_seconds: its load time.
        examples_total: examples in the file (``result.n`` were scored).
        data: the file read.
        num_fewshot: solved examples shown before each question (GSM8K), else None.
        attach / preflight: the attach and preflight reports when a patch was attached.
        run_id: the run record's id (None with ``record=False``).
    """

    result: EvalResult
    base_id: str
    patch: str | None
    precision: str
    device: str
    load_seconds: float
    examples_total: int
    data: Path
    num_fewshot: int | None = None
    attach: AttachReport | None = None
    preflight: PreflightReport | None = None
    run_id: str | None = None
    request: EvalRequest | None = None

    def inputs(self) -> dict[str, Any]:
        """The run record's inputs (what was asked, with the concrete base id, patch and precision)."""
        return self.request.to_record(self) if self.request is not None else {}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (predictions left out): the record stored in the run history."""
        from dataclasses import asdict

        d = self.result.to_dict()
        d.pop("predictions", None)
        d.pop("request", None)
        d.update(
            base_id=self.base_id,
            patch=self.patch,
            precision=self.precision,
            device=self.device,
            load_seconds=self.load_seconds,
            examples_total=self.examples_total,
            data=str(self.data),
        )
        if self.attach is not None:
            d["attach"] = asdict(self.attach)
        if self.preflight is not None:
            d["preflight"] = self.preflight.to_dict()
        return d


def evaluate(
    base: str,
    spec: EvalSpec,
    *,
    patch: str | None = None,
    old: str | None = None,
    precision: str = "auto",
    normalize: str = "none",
    max_new_tokens: int = 256,
    keep_predictions: bool = False,
    force: bool = False,
    record: bool = True,
    progress: Callable[[int, int], None] | None = None,
    on_data: Callable[[Any], None] | None = None,
    offload: Offload | None = None,
) -> EvalOutcome:
    """Score ``base`` (+ ``patch``) on ``spec``'s examples.

    Args:
        base: a base reference (folder, store name, GGUF, cached hub id).
        spec: task, file, subsample, template and label words, batch size.
        patch: a store name or adapter folder, preflighted and rewritten as for ``port``.
        old: the old base for the preflight (default: looked up in the model store).
        precision: auto, nf4, int8, bf16 or fp32.
        normalize: choice scores: ``none`` (summed log-prob, lm-eval's acc), ``chars`` (its acc_norm),
            ``tokens`` or ``bytes``.
        max_new_tokens: generation budget (GSM8K).
        keep_predictions: keep per-example predictions in the result.
        force: attach despite failed preflight checks.
        record: store an ``eval`` run (also when it fails).
        progress: called with (done, total) while scoring.
        on_data: called with the loaded task data once the file is read (before any load).
        offload: ``--device-map auto``/``--max-memory``: layers that do not fit go to CPU or disk
            (:mod:`portllm_edge.porting.offload`; floating precisions only).

    Raises:
        DataError, ConfigError (file, template, precision, normalization), CompatibilityError,
        StoreError, BaseModelError -- before any load; PortingError from the attach check.
    """
    from portllm_edge.errors import ConfigError
    from portllm_edge.evaluation.scoring import NORMALIZATIONS

    if normalize not in NORMALIZATIONS:
        raise ConfigError(
            f"`--normalize` must be one of {', '.join(NORMALIZATIONS)}, got `{normalize}`",
            hint="Use --normalize none (the harness's acc, default) or chars (its acc_norm).",
        )
    req = EvalRequest(spec, base, patch, old, precision, normalize, max_new_tokens, force, offload)
    from portllm_edge.workflow.steps import maybe_recorded

    with (
        maybe_recorded("eval", req.to_record(), record) as run,
        tempfile.TemporaryDirectory(prefix="portllm-eval-") as tmp,
    ):
        outcome = _run(req, Path(tmp), keep_predictions, progress, on_data)
        outcome.run_id, outcome.request = run.id, req
        run.results, run.inputs = outcome.to_dict(), req.to_record(outcome)
    return outcome


def _run(
    req: EvalRequest,
    work: Path,
    keep_predictions: bool,
    progress: Callable[[int, int], None] | None,
    on_data: Callable[[Any], None] | None,
) -> EvalOutcome:
    from portllm_edge.evaluation.scoring import evaluate as score
    from portllm_edge.models.refs import resolve_base
    from portllm_edge.workflow import checks
    from portllm_edge.workflow.resolve import resolve
    from portllm_edge.workflow.steps import checked_patch, load_configuration

    data = checks.check_eval_spec(req.spec)
    if on_data is not None:
        on_data(data)
    checked = None
    if req.patch is not None:
        r = resolve(req.patch, req.base, old=req.old)
        base = r.base
        checked = checked_patch(r.patch, r.base, r.old_base, work, force=req.force)
    else:
        base = resolve_base(req.base)
    checks.check_precision(req.precision, None, base)
    if req.offload is not None:
        from portllm_edge.porting.offload import check_offload_precision

        check_offload_precision(req.precision)
    config = load_configuration(
        base, req.precision, checked.attach_dir if checked else None, offload=req.offload
    )
    result = score(
        config.model,
        config.tokenizer,
        data,
        batch_size=req.spec.batch_size,
        normalization=req.normalize,  # type: ignore[arg-type]
        max_new_tokens=req.max_new_tokens,
        keep_predictions=keep_predictions,
        progress=progress,
    )
    return EvalOutcome(
        result=result,
        base_id=config.base_id,
        patch=checked.patch.name if checked else None,
        precision=config.precision,
        device=config.device,
        load_seconds=config.load_seconds,
        examples_total=data.total,
        data=Path(data.path),
        num_fewshot=data.num_fewshot,
        attach=config.attach,
        preflight=checked.preflight if checked else None,
    )
