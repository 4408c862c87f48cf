"""The memory-savings benchmark: LoRA fine-tuning a base vs porting a patch onto it, side by side.

For one base, one task's data, one sequence length and batch size, each configuration
runs in its own subprocess (:func:`portllm_edge.measure.measure_job`), ``repeats``
times: (a) LoRA fine-tuning at 16-bit (bf16) -- the paper's baseline -- and optionally
QLoRA at NF4; (b) porting: load at ``precision`` + attach + evaluate. The ratio
(a)/(b) of the median peaks is PortLLM's "GPU memory down by up to 12.2x" (Table 5),
measured on the user's machine, with the metric named.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from portllm_edge.measure.isolated import MeasureResult, measure_job, median_and_spread

if TYPE_CHECKING:
    from portllm_edge.workflow.jobs import FinetuneJob, PortJob


@dataclass
class BenchConfigResult:
    """Repeated measurements of one configuration.

    Attributes:
        name: "lora_<dtype>" (the baseline), "qlora_nf4" or "port_<precision>".
        metric: the peak metric (see :class:`MeasureResult`).
        peak_median_bytes / peak_spread_bytes: median and max−min of the peaks, bytes.
        wall_median_seconds: median wall time, seconds.
        tokens_per_s: median tokens/s (evaluation for ports, training for fine-tunes).
        runs: every measurement.
    """

    name: str
    metric: str
    peak_median_bytes: float
    peak_spread_bytes: float
    wall_median_seconds: float
    tokens_per_s: float | None
    runs: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class BenchResult:
    """The benchmark's table and ratio."""

    base: str
    task: str
    precision: str
    seq_len: int
    batch_size: int
    configs: list[BenchConfigResult]
    ratio: float
    ratio_metric: str
    run_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BenchResult:
        """Inverse of :meth:`to_dict`."""
        configs = [BenchConfigResult(**c) for c in d["configs"]]
        return cls(**{**d, "configs": configs})

    def config(self, prefix: str) -> BenchConfigResult | None:
        """The first configuration whose name starts with ``prefix`` (``lora_``, ``port_``), or None."""
        return next((c for c in self.configs if c.name.startswith(prefix)), None)


def default_finetune_dtype(device: str) -> str:
    """The LoRA baseline's dtype: bf16 where ``device`` computes in it natively, else fp32.

    bf16 is the paper's 16-bit baseline (PortLLM, Table 5) and what users fine-tune in on
    Ampere+ GPUs and on CPUs with AVX512-BF16/AMX (:func:`portllm_edge.porting.load.native_dtypes`).
    Elsewhere (a T4, an older CPU) it is fp32, the fine-tune such a user would actually run.
    """
    from portllm_edge.porting.load import native_dtypes

    return "bf16" if "bf16" in native_dtypes(device) else "fp32"


def _tokens_per_s(run: MeasureResult) -> float | None:
    """Tokens/s of a measured job: the fine-tune's, or the port's quick evaluation's."""
    if run.job == "port":
        from portllm_edge.workflow.jobs import PortJobResult

        evaluation = PortJobResult.from_json(run.details).evaluation
        return evaluation.tokens_per_s if evaluation is not None else None
    value = run.details.get("tokens_per_s")
    return float(value) if value else None


def summarize_runs(name: str, runs: list[MeasureResult]) -> BenchConfigResult:
    """Median and spread of repeated measurements of one configuration."""
    peak, spread = median_and_spread([float(r.peak_bytes) for r in runs])
    wall, _ = median_and_spread([r.wall_seconds for r in runs])
    tps = [t for t in (_tokens_per_s(r) for r in runs) if t]
    return BenchConfigResult(
        name=name,
        metric=runs[0].metric,
        peak_median_bytes=peak,
        peak_spread_bytes=spread,
        wall_median_seconds=wall,
        tokens_per_s=median_and_spread(tps)[0] if tps else None,
        runs=[r.to_dict() for r in runs],
    )


@dataclass(frozen=True)
class BenchSpec:
    """What to measure: one base, one patch, one task's data, one shape.

    Attributes:
        base: the (new) base folder.
        patch_dir: the adapter folder the port attaches (already preflighted/rewritten).
        task, train_data, eval_data: the data (``train_data`` feeds the fine-tune, ``eval_data`` the port).
        precision: port precision (NF4 by default).
        seq_len: tokens per example for both.
        batch_size: examples per step / per scoring batch.
        steps: optimizer steps of the fine-tune.
        repeats: measurements per configuration (median and spread are reported).
        qlora: also measure QLoRA (NF4 base + LoRA).
        r, lora_alpha, target_modules: LoRA shape of the fine-tune.
        device: "cpu" or "cuda" (None: CUDA when available).
        template, verbalizers: the ``jsonl`` task's prompt template and label words.
        finetune_dtype: dtype of the LoRA baseline; ``auto`` = :func:`default_finetune_dtype`.
    """

    base: str
    patch_dir: str
    task: str
    train_data: str
    eval_data: str
    precision: str = "nf4"
    seq_len: int = 256
    batch_size: int = 8
    steps: int = 4
    repeats: int = 1
    qlora: bool = False
    r: int = 8
    lora_alpha: int = 16
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    device: str | None = None
    template: str | None = None
    verbalizers: dict[str, str] | None = None
    finetune_dtype: str = "auto"


@dataclass(frozen=True)
class BenchJob:
    """One configuration to measure: its name, the worker job and the job's parameters (JSON only in the worker call)."""

    name: str
    job: str
    params: PortJob | FinetuneJob


def check_bench_spec(spec: BenchSpec) -> None:
    """Refuse sizes below 1 before any measurement subprocess starts.

    Raises:
        ConfigError: ``steps``, ``repeats``, ``batch_size`` below 1, or ``seq_len`` below 2.
    """
    from portllm_edge.errors import ConfigError

    for flag, value, least in (
        ("--steps", spec.steps, 1),
        ("--repeats", spec.repeats, 1),
        ("--seq-len", spec.seq_len, 2),
        ("--batch-size", spec.batch_size, 1),
    ):
        if value < least:
            raise ConfigError(
                f"`{flag}` must be at least {least}, got {value}.", hint=f"pass {flag} {least} or more"
            )


def bench_jobs(spec: BenchSpec, device: str) -> list[BenchJob]:
    """The configurations of a benchmark, baseline first and the port last."""
    ft_dtype = default_finetune_dtype(device) if spec.finetune_dtype == "auto" else spec.finetune_dtype
    from portllm_edge.training.lora import LoraHyperparams
    from portllm_edge.workflow.jobs import FinetuneJob, PortJob
    from portllm_edge.workflow.types import EvalSpec

    train = EvalSpec(
        spec.task,
        Path(spec.train_data),
        limit=spec.batch_size * spec.steps,
        seed=0,
        template=spec.template,
        verbalizers=spec.verbalizers,
        batch_size=spec.batch_size,
    )
    hp = LoraHyperparams(
        r=spec.r,
        lora_alpha=spec.lora_alpha,
        target_modules=tuple(spec.target_modules),
        lora_dropout=0.0,
        max_steps=spec.steps,
        batch_size=spec.batch_size,
        max_length=spec.seq_len,
    )
    finetune = FinetuneJob(Path(spec.base), train, hp, ft_dtype, device=device)
    jobs = [BenchJob(f"lora_{ft_dtype}", "lora_finetune", finetune)]
    if spec.qlora:
        jobs.append(BenchJob("qlora_nf4", "lora_finetune", replace(finetune, qlora=True)))
    quick = replace(train, data=Path(spec.eval_data), limit=spec.batch_size * 4)
    port = PortJob(Path(spec.base), Path(spec.patch_dir), spec.precision, device, evaluate=quick)
    jobs.append(BenchJob(f"port_{spec.precision}", "port", port))
    return jobs


def bench_result(spec: BenchSpec, configs: list[BenchConfigResult]) -> BenchResult:
    """The table and the ratio median peak of the LoRA baseline (first) / median peak of the port (last)."""
    base_cfg, port_cfg = configs[0], configs[-1]
    return BenchResult(
        base=spec.base,
        task=spec.task,
        precision=spec.precision,
        seq_len=spec.seq_len,
        batch_size=spec.batch_size,
        configs=configs,
        ratio=base_cfg.peak_median_bytes / port_cfg.peak_median_bytes,
        ratio_metric=f"{base_cfg.metric} (median of {len(base_cfg.runs)})",
    )


def run_bench(spec: BenchSpec, *, on_config: Callable[[str, int], None] | None = None) -> BenchResult:
    """Measure LoRA fine-tuning vs porting on the same base, data, sequence length and batch size.

    Each configuration runs ``spec.repeats`` times, each time in a fresh worker process.

    Returns:
        A :class:`BenchResult`; ``ratio`` = median peak of the LoRA baseline / median peak of the port.

    Raises:
        ConfigError: sizes below 1; MeasurementError and the jobs' own errors from the workers.
    """
    from portllm_edge.porting.load import default_device

    check_bench_spec(spec)
    configs = []
    for job in bench_jobs(spec, spec.device or default_device()):
        runs = []
        for i in range(spec.repeats):
            if on_config is not None:
                on_config(job.name, i)
            runs.append(measure_job(job.job, job.params.to_json()))
        configs.append(summarize_runs(job.name, runs))
    return bench_result(spec, configs)
