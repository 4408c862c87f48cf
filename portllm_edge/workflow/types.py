"""The typed objects that travel between the workflow's steps and out to the CLI, the app and the demo.

Each arrow of resolve -> preflight -> load -> attach -> evaluate -> save -> record carries
one of these; none is a free-form dict. Memory is in bytes, times in seconds.
This module imports no torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from portllm_edge.models.refs import ResolvedBase
    from portllm_edge.patches.store import StoredPatch
    from portllm_edge.porting.attach import AttachReport
    from portllm_edge.porting.preflight import PreflightReport

OldBaseSource = Literal["given", "store: fingerprint", "store: name"]


@dataclass(frozen=True)
class PatchRef:
    """A patch as the user named it, resolved to its adapter folder.

    Attributes:
        ref: what the user typed (a store name or a folder).
        adapter_dir: the folder holding ``adapter_config.json`` and ``adapter_model.safetensors``.
        stored: the store entry, or None for a plain folder.
    """

    ref: str
    adapter_dir: Path
    stored: StoredPatch | None = None

    @property
    def name(self) -> str:
        """The store name, or the folder's name."""
        return self.stored.name if self.stored is not None else self.adapter_dir.name


@dataclass(frozen=True)
class Resolved:
    """Step 1, resolve: the patch, the new base and the old base, all local.

    Attributes:
        patch: the patch.
        base: the new base.
        old_base: the base the patch was trained on, when it is known locally (None otherwise).
        old_base_source: how ``old_base`` was found: ``given`` (``--old``), or looked up in the
            model store by the patch's recorded weight fingerprint or by its base's name.
    """

    patch: PatchRef
    base: ResolvedBase
    old_base: ResolvedBase | None = None
    old_base_source: OldBaseSource | None = None


@dataclass(frozen=True)
class EvalSpec:
    """What to evaluate on: a task and its local file (checked before any model loads).

    Attributes:
        task: task name (``sst2``, ``jsonl`` ...).
        data: the task's file or folder.
        limit: a seeded subsample of this many examples, or all.
        seed: seed of the subsample.
        template, verbalizers: the ``jsonl`` task's prompt template and label words.
        batch_size: sequences per forward pass.
        num_fewshot, fewshot_data: GSM8K's solved examples before each question and their file
            (None: the task's defaults; see :func:`portllm_edge.evaluation.tasks.load_task`).
    """

    task: str
    data: Path
    limit: int | None = None
    seed: int = 0
    template: str | None = None
    verbalizers: dict[str, str] | None = None
    batch_size: int = 8
    num_fewshot: int | None = None
    fewshot_data: Path | None = None


@dataclass(frozen=True)
class EvalSummary:
    """The accuracy of one configuration (see :class:`portllm_edge.evaluation.results.EvalResult`).

    Attributes:
        task: task name; n: examples scored; accuracy with its 95 % Wilson interval
        (ci_low, ci_high); f1: binary F1 where the task reports it; tokens_per_s: scoring speed.
    """

    task: str
    n: int
    accuracy: float
    ci_low: float
    ci_high: float
    f1: float | None = None
    tokens_per_s: float | None = None

    @classmethod
    def of(cls, result: Any) -> EvalSummary:
        """From an ``EvalResult`` or its dict (the measurement worker sends dicts)."""

        def get(key: str) -> Any:
            return result.get(key) if isinstance(result, dict) else getattr(result, key, None)

        return cls(
            task=str(get("task")),
            n=int(get("n")),
            accuracy=float(get("accuracy")),
            ci_low=float(get("ci_low")),
            ci_high=float(get("ci_high")),
            f1=get("f1"),
            tokens_per_s=get("tokens_per_s"),
        )


@dataclass(frozen=True)
class Memory:
    """A peak measured in a worker process of its own (never the caller's process).

    Attributes:
        metric: ``peak_anon_plus_mapped_weights`` (CPU: the worker's sampled ``RssAnon`` plus
            resident mapped weight-file pages, :mod:`portllm_edge.measure.memory`) or
            ``cuda_max_reserved_plus_context`` (CUDA); ``peak_rss`` (``VmHWM``) only off Linux.
        peak_bytes: the peak, bytes.
        baseline_bytes: the worker's memory after its imports, before the job, bytes (CPU).
        wall_seconds: the job's wall time in the worker, seconds.
        vmhwm_bytes: the worker's whole-process high-water mark (file-backed pages included), bytes.
        device: ``cpu`` or ``cuda``.
    """

    metric: str
    peak_bytes: int
    baseline_bytes: int | None
    wall_seconds: float
    vmhwm_bytes: int | None
    device: str

    @classmethod
    def of(cls, m: Any) -> Memory:
        """From a :class:`portllm_edge.measure.MeasureResult`."""
        return cls(
            metric=m.metric,
            peak_bytes=int(m.peak_bytes),
            baseline_bytes=m.baseline_bytes,
            wall_seconds=float(m.wall_seconds),
            vmhwm_bytes=m.details.get("vmhwm_bytes"),
            device=m.device,
        )


@dataclass(frozen=True)
class Saving:
    """A port's measured peak against the LoRA fine-tuning baseline for the same base.

    Attributes:
        port_peak_bytes: the port's measured peak (``metric``), bytes.
        baseline_bytes: the fine-tune's peak, bytes.
        baseline_source: ``measured`` (a fine-tune measured in its own worker, found in the run
            history for the same base) or ``estimate`` (the planner's, from config.json alone).
        baseline_label: what the baseline is (``lora_fp32 measured in run bench-…``, ``planner estimate …``).
        metric: the port's metric; a measured baseline uses the same one.
        baseline_run_id: the run that measured the baseline, when measured.
        port_estimate_bytes: the planner's estimate of this port's peak, for comparison, or None.
    """

    port_peak_bytes: int
    baseline_bytes: int
    baseline_source: Literal["measured", "estimate"]
    baseline_label: str
    metric: str
    baseline_run_id: str | None = None
    port_estimate_bytes: int | None = None

    @property
    def saved_bytes(self) -> int:
        """``baseline − port peak`` (negative when the port needed more)."""
        return self.baseline_bytes - self.port_peak_bytes

    @property
    def ratio(self) -> float | None:
        """``baseline / port peak``: how many times less memory the port needed."""
        return self.baseline_bytes / self.port_peak_bytes if self.port_peak_bytes > 0 else None


@dataclass
class PortOutcome:
    """What a port did and measured.

    Attributes:
        patch: the source patch (store name or folder).
        ported_name: the store name of the ported patch (None with ``save=False``).
        base_id / base_fingerprint: the new base.
        old_base_id: the old base used by the preflight (None when unknown).
        precision / compute_dtype / device: how the base was loaded.
        phases: wall time per phase (check, load, attach, evaluate, save, merge), seconds.
        preflight: the preflight report.
        attach: the attach report (matched tensors, logit change, finiteness).
        evaluation: accuracy when a task was evaluated.
        memory: the load + attach + evaluate peak, measured in a worker process (None when run
            in the caller's process, which is never measured).
        saving: ``memory`` against the fine-tune baseline (None without ``memory``).
        merged_to: the merged model folder, when asked for.
        run_id: the run record's id.
    """

    patch: str
    ported_name: str | None
    base_id: str
    base_fingerprint: str
    old_base_id: str | None
    precision: str
    compute_dtype: str
    device: str
    phases: dict[str, float]
    preflight: PreflightReport
    attach: AttachReport
    evaluation: EvalSummary | None = None
    memory: Memory | None = None
    saving: Saving | None = None
    merged_to: str | None = None
    run_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the record stored in the run history (and ``port --json``)."""
        d = {k: v for k, v in self.__dict__.items() if k not in ("preflight", "attach")}
        d["preflight"] = self.preflight.to_dict()
        d["attach"] = asdict(self.attach)
        d = {k: (asdict(v) if hasattr(v, "__dataclass_fields__") else v) for k, v in d.items()}
        if self.memory is not None:  # the report reads a measured peak from these two keys
            d["peak_bytes"], d["metric"] = self.memory.peak_bytes, self.memory.metric
        if self.saving is not None:
            d["saving"]["ratio"] = self.saving.ratio
        return d


@dataclass
class TrainOutcome:
    """A trained and stored patch, with its held-out check.

    Attributes:
        name: store name of the new patch.
        base_id / base_fingerprint: the base it was trained on.
        steps: optimizer steps; final_loss: loss of the last step; seconds: wall time.
        examples: training examples used (the held-out slice excluded).
        heldout_before / heldout_after: accuracy on the held-out slice of the training file
            before and after training (None when the file is too small to hold some out).
        run_id: the run record's id.
    """

    name: str
    base_id: str
    base_fingerprint: str
    steps: int
    final_loss: float
    seconds: float
    examples: int
    heldout_before: EvalSummary | None = None
    heldout_after: EvalSummary | None = None
    run_id: str | None = None
    losses: list[float] = field(default_factory=list)

    @property
    def heldout_gain(self) -> float | None:
        """After − before accuracy on the held-out slice, or None."""
        if self.heldout_before is None or self.heldout_after is None:
            return None
        return self.heldout_after.accuracy - self.heldout_before.accuracy

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with ``heldout_gain``."""
        d = asdict(self)
        d["heldout_gain"] = self.heldout_gain
        return d
