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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from portllm_edge.measure.isolated import MeasureResult, measure_job, median_and_spread


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
        return asdict(self)


def default_finetune_dtype(device: str) -> str:
    """The LoRA baseline's dtype: bf16 where ``device`` computes in it natively, else fp32.

    bf16 is the paper's 16-bit baseline (PortLLM, Table 5) and what users fine-tune in on
    Ampere+ GPUs and on CPUs with AVX512-BF16/AMX (:func:`portllm_edge.porting.load.native_dtypes`).
    Elsewhere (a T4, an older CPU) it is fp32, the fine-tune such a user would actually run.
    """
    from portllm_edge.porting.load import native_dtypes

    return "bf16" if "bf16" in native_dtypes(device) else "fp32"


def _summarize(name: str, runs: list[MeasureResult]) -> BenchConfigResult:
    peak, spread = median_and_spread([float(r.peak_bytes) for r in runs])
    wall, _ = median_and_spread([r.wall_seconds for r in runs])
    tps = [float(r.details["tokens_per_s"]) for r in runs if r.details.get("tokens_per_s")]
    return BenchConfigResult(
        name=name,
        metric=runs[0].metric,
        peak_median_bytes=peak,
        peak_spread_bytes=spread,
        wall_median_seconds=wall,
        tokens_per_s=median_and_spread(tps)[0] if tps else None,
        runs=[r.to_dict() for r in runs],
    )


def run_bench(
    base: str,
    patch_dir: str | Path,
    *,
    task: str,
    train_data: str | Path,
    eval_data: str | Path,
    precision: str = "nf4",
    seq_len: int = 256,
    batch_size: int = 8,
    steps: int = 4,
    repeats: int = 1,
    qlora: bool = False,
    r: int = 8,
    lora_alpha: int = 16,
    device: str | None = None,
    template: str | None = None,
    verbalizers: dict[str, str] | None = None,
    on_config: Callable[[str, int], None] | None = None,
    record: bool = True,
    finetune_dtype: str = "auto",
) -> BenchResult:
    """Measure LoRA fine-tuning vs porting on the same base, data, sequence length and batch size.

    Args:
        base: the (new) base folder.
        patch_dir: the patch's adapter folder.
        task, train_data, eval_data: the data (``train_data`` feeds the fine-tune, ``eval_data`` the port).
        precision: port precision (NF4 by default).
        seq_len: tokens per example for both.
        batch_size: examples per step / per scoring batch.
        steps: optimizer steps of the fine-tune.
        repeats: measurements per configuration (median and spread are reported).
        qlora: also measure QLoRA (NF4 base + LoRA).
        r, lora_alpha: LoRA hyperparameters of the fine-tune.
        device: "cpu" or "cuda" (default: CUDA when available).
        on_config: called with (config name, repeat index) before each measurement.
        record: store a ``bench`` run.
        finetune_dtype: dtype of the LoRA baseline; ``auto`` = :func:`default_finetune_dtype`.

    Returns:
        A :class:`BenchResult`; ``ratio`` = median peak of the LoRA baseline / median peak of the port.
    """
    from portllm_edge.errors import ConfigError
    from portllm_edge.porting.load import default_device

    for flag, value, least in (
        ("--steps", steps, 1),
        ("--repeats", repeats, 1),
        ("--seq-len", seq_len, 2),
        ("--batch-size", batch_size, 1),
    ):
        if value < least:  # refused here, before any measurement subprocess starts
            raise ConfigError(
                f"`{flag}` must be at least {least}, got {value}.", hint=f"pass {flag} {least} or more"
            )
    device = device or default_device()
    ft_dtype = default_finetune_dtype(device) if finetune_dtype == "auto" else finetune_dtype
    common = {
        "base": str(base),
        "task": task,
        "template": template,
        "verbalizers": verbalizers,
        "batch_size": batch_size,
        "device": device,
        "seed": 0,
    }
    jobs: list[tuple[str, str, dict[str, Any]]] = [
        (
            f"lora_{ft_dtype}",
            "lora_finetune",
            {
                **common,
                "dtype": ft_dtype,
                "train_data": str(train_data),
                "train_limit": batch_size * steps,
                "steps": steps,
                "r": r,
                "lora_alpha": lora_alpha,
                "max_length": seq_len,
            },
        ),
    ]
    if qlora:
        jobs.append(("qlora_nf4", "lora_finetune", {**jobs[0][2], "qlora": True}))
    jobs.append(
        (
            f"port_{precision}",
            "port",
            {
                **common,
                "adapter": str(patch_dir),
                "precision": precision,
                "eval_data": str(eval_data),
                "limit": batch_size * 4,
            },
        )
    )
    configs = []
    for name, job, params in jobs:
        runs = []
        for i in range(repeats):
            if on_config is not None:
                on_config(name, i)
            runs.append(measure_job(job, params))
        configs.append(_summarize(name, runs))
    base_cfg, port_cfg = configs[0], configs[-1]
    result = BenchResult(
        base=str(base),
        task=task,
        precision=precision,
        seq_len=seq_len,
        batch_size=batch_size,
        configs=configs,
        ratio=base_cfg.peak_median_bytes / port_cfg.peak_median_bytes,
        ratio_metric=f"{base_cfg.metric} (median of {repeats})",
    )
    if record:
        from portllm_edge.runs import record_run

        result.run_id = record_run(
            "bench",
            {
                "base": str(base),
                "patch": str(patch_dir),
                "task": task,
                "train_data": str(train_data),
                "eval_data": str(eval_data),
                "precision": precision,
                "seq_len": seq_len,
                "batch_size": batch_size,
                "steps": steps,
                "repeats": repeats,
                "qlora": qlora,
                "device": device,
            },
            result.to_dict(),
        )
    return result
