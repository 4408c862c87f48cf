"""The measured jobs, as a measurement worker runs them: typed parameters in, typed results out.

Why this module exists: a job whose peak memory is measured runs in a fresh worker
process (:func:`portllm_edge.measure.measure_job`, :mod:`portllm_edge.measure.worker`).
Each job is a frozen dataclass (:class:`PortJob`, :class:`FinetuneJob`) and returns one
(:class:`PortJobResult`, :class:`FinetuneJobResult`); JSON appears only at the process
boundary (``to_json``/``from_json``). The port job is the same load -> attach as every
other job (:func:`portllm_edge.workflow.steps.load_configuration`), and both jobs read
their data with the same loader as ``eval`` (:func:`portllm_edge.workflow.checks.check_eval_spec`).
This module imports no torch at import time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from portllm_edge.workflow.steps import PhaseFn, load_configuration
from portllm_edge.workflow.types import EvalSpec, EvalSummary

if TYPE_CHECKING:
    from portllm_edge.porting.attach import AttachReport
    from portllm_edge.porting.offload import Offload
    from portllm_edge.training.lora import LoraHyperparams
    from portllm_edge.workflow.types import Memory


def _eval_spec_to_json(spec: EvalSpec) -> dict[str, Any]:
    d = asdict(spec)
    d["data"] = str(spec.data)
    d["fewshot_data"] = None if spec.fewshot_data is None else str(spec.fewshot_data)
    return d


def _eval_spec_from_json(d: dict[str, Any]) -> EvalSpec:
    fewshot = d.get("fewshot_data")
    return EvalSpec(
        **{**d, "data": Path(d["data"]), "fewshot_data": None if fewshot is None else Path(fewshot)}
    )


@dataclass(frozen=True)
class PortJob:
    """The measured part of a port (load -> attach -> evaluate), as a measurement worker runs it.

    Attributes:
        base: the new base's folder.
        attach_dir: the patch folder that passed :func:`checked_patch` (the patch or its rewritten copy).
        precision: auto, nf4, int8, bf16 or fp32.
        device: "cpu", "cuda" or "cuda:N" (None: CUDA when available).
        offload: ``--device-map auto``/``--max-memory``, or None.
        evaluate: the quick evaluation, or None.
    """

    base: Path
    attach_dir: Path
    precision: str = "nf4"
    device: str | None = None
    offload: Offload | None = None
    evaluate: EvalSpec | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict, for the worker's command line (:meth:`from_json` reads it back)."""
        return {
            "base": str(self.base),
            "attach_dir": str(self.attach_dir),
            "precision": self.precision,
            "device": self.device,
            "offload": None if self.offload is None else self.offload.to_dict(),
            "evaluate": None if self.evaluate is None else _eval_spec_to_json(self.evaluate),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PortJob:
        """Inverse of :meth:`to_json`."""
        from portllm_edge.porting.offload import Offload

        return cls(
            base=Path(d["base"]),
            attach_dir=Path(d["attach_dir"]),
            precision=d.get("precision") or "nf4",
            device=d.get("device"),
            offload=Offload.from_dict(d["offload"]) if d.get("offload") else None,
            evaluate=_eval_spec_from_json(d["evaluate"]) if d.get("evaluate") else None,
        )


@dataclass(frozen=True)
class PortJobResult:
    """What :func:`run_port_job` did: the load, the attach check and the evaluation.

    Attributes:
        precision: the concrete precision. compute_dtype: activations' dtype in quantized layers.
        device: ``cpu`` or ``cuda:N``. quantization: the bitsandbytes settings used.
        attach: the attach check. evaluation: the quick evaluation, or None.
        memory: the worker's measured peak, set by the parent from the measurement (None in-process).
    """

    precision: str
    compute_dtype: str
    device: str
    quantization: dict[str, Any]
    attach: AttachReport
    evaluation: EvalSummary | None = None
    memory: Memory | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the worker's result ``details``); ``memory`` is the parent's, not sent."""
        d = asdict(self)
        d.pop("memory")
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any], memory: Memory | None = None) -> PortJobResult:
        """Inverse of :meth:`to_json` (extra keys, such as the worker's ``vmhwm_bytes``, are ignored)."""
        from portllm_edge.porting.attach import AttachReport

        attach = {**d["attach"], "unmatched": tuple(d["attach"].get("unmatched") or ())}
        return cls(
            precision=d["precision"],
            compute_dtype=d["compute_dtype"],
            device=d["device"],
            quantization=dict(d.get("quantization") or {}),
            attach=AttachReport(**attach),
            evaluation=EvalSummary(**d["evaluation"]) if d.get("evaluation") else None,
            memory=memory,
        )

    def with_memory(self, memory: Memory) -> PortJobResult:
        """This result with the parent's measurement of the worker attached."""
        return replace(self, memory=memory)


def run_port_job(job: PortJob, on_phase: PhaseFn | None = None) -> PortJobResult:
    """The measured part of a port: load the base, attach the checked patch (verified), evaluate if asked.

    Args:
        job: what to load, attach and evaluate.
        on_phase: called as each phase (load, attach, evaluate) starts.

    Raises:
        BaseModelError, ConfigError, PortingError, DataError: from the load, the attach check and the evaluation.
    """
    from portllm_edge.models.refs import resolve_base
    from portllm_edge.workflow.checks import check_eval_spec

    config = load_configuration(
        resolve_base(str(job.base)),
        job.precision,
        job.attach_dir,
        device=job.device,
        offload=job.offload,
        on_phase=on_phase,
    )
    assert config.attach is not None
    evaluation = None
    if job.evaluate is not None:
        from portllm_edge.evaluation.scoring import evaluate

        data = check_eval_spec(job.evaluate)
        if on_phase is not None:
            on_phase("evaluate")
        result = evaluate(config.model, config.tokenizer, data, batch_size=job.evaluate.batch_size)
        evaluation = EvalSummary.of(result)
    return PortJobResult(
        config.precision, config.compute_dtype, config.device, config.quantization, config.attach, evaluation
    )


@dataclass(frozen=True)
class FinetuneJob:
    """A LoRA (or QLoRA) fine-tune of ``steps`` AdamW steps: the baseline a port's peak is compared with.

    Attributes:
        base: the base model's folder.
        train: the training data (task, file, subsample of ``limit`` examples, seed, template, label words).
        hp: the LoRA hyperparameters (rank, alpha, targets, ``max_steps``, batch size, length).
        dtype: the base's dtype for LoRA (bf16, fp32, fp16); ignored with ``qlora``.
        qlora: load the base in NF4 and train QLoRA-style.
        device: "cpu", "cuda" or "cuda:N" (None: CUDA when available).
    """

    base: Path
    train: EvalSpec
    hp: LoraHyperparams
    dtype: str = "bf16"
    qlora: bool = False
    device: str | None = None

    @property
    def precision(self) -> str:
        """The load precision: ``nf4`` for QLoRA, else :attr:`dtype`."""
        return "nf4" if self.qlora else self.dtype

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict, for the worker's command line (:meth:`from_json` reads it back)."""
        hp = asdict(self.hp)
        hp["target_modules"] = list(self.hp.target_modules)
        return {
            "base": str(self.base),
            "train": _eval_spec_to_json(self.train),
            "hp": hp,
            "dtype": self.dtype,
            "qlora": self.qlora,
            "device": self.device,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FinetuneJob:
        """Inverse of :meth:`to_json`."""
        from portllm_edge.training.lora import LoraHyperparams

        hp = LoraHyperparams(**{**d["hp"], "target_modules": tuple(d["hp"]["target_modules"])})
        return cls(
            Path(d["base"]),
            _eval_spec_from_json(d["train"]),
            hp,
            d["dtype"],
            bool(d["qlora"]),
            d.get("device"),
        )


@dataclass(frozen=True)
class FinetuneJobResult:
    """What :func:`run_finetune_job` did.

    Attributes:
        dtype: the load precision (``nf4`` for QLoRA). steps: optimizer steps taken.
        final_loss: the last step's loss. tokens_per_s: training tokens per second (None: no time measured).
    """

    dtype: str
    steps: int
    final_loss: float
    tokens_per_s: float | None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the worker's result ``details``)."""
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FinetuneJobResult:
        """Inverse of :meth:`to_json` (extra keys, such as the worker's ``vmhwm_bytes``, are ignored)."""
        return cls(d["dtype"], int(d["steps"]), float(d["final_loss"]), d.get("tokens_per_s"))


def run_finetune_job(job: FinetuneJob, on_phase: PhaseFn | None = None) -> FinetuneJobResult:
    """Load the base, add fresh LoRA layers and take ``job.hp.max_steps`` AdamW steps; the adapter is discarded.

    Args:
        job: what to train.
        on_phase: called as each phase (load, train) starts.

    Raises:
        BaseModelError, ConfigError: the load. DataError: the training file. TrainingError: NaN/Inf loss.
    """
    import tempfile

    from portllm_edge.evaluation.tasks import training_split
    from portllm_edge.models.refs import resolve_base
    from portllm_edge.training.lora import train_lora
    from portllm_edge.workflow.checks import check_eval_spec

    announce = on_phase or (lambda _name: None)
    pairs = [training_split(e) for e in check_eval_spec(job.train).examples]
    config = load_configuration(
        resolve_base(str(job.base)), job.precision, device=job.device, on_phase=announce
    )
    announce("train")
    with tempfile.TemporaryDirectory() as tmp:
        res = train_lora(config.model, config.tokenizer, pairs, job.hp, tmp, quantized=job.qlora)
    return FinetuneJobResult(
        job.precision, res.steps, res.losses[-1], res.tokens / res.seconds if res.seconds else None
    )


__all__ = [
    "FinetuneJob",
    "FinetuneJobResult",
    "PortJob",
    "PortJobResult",
    "run_finetune_job",
    "run_port_job",
]
