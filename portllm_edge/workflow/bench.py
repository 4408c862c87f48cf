"""The memory-savings benchmark: LoRA fine-tuning a base vs porting a patch onto it, each in its own worker.

resolve -> read both data files -> preflight (and rewrite) the patch -> measure each
configuration in a fresh worker process (:mod:`portllm_edge.measure.bench`) -> record.
The fine-tune uses the patch's own rank and ``lora_alpha`` unless told otherwise, so the
baseline has the patch's shape; a port's :class:`~portllm_edge.workflow.Saving` reads it back.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from portllm_edge.workflow.types import EvalSpec

if TYPE_CHECKING:
    from portllm_edge.measure.bench import BenchResult


def bench(
    patch: str,
    base: str,
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
    r: int | None = None,
    lora_alpha: int | None = None,
    template: str | None = None,
    verbalizers: dict[str, str] | None = None,
    device: str | None = None,
    on_config: Callable[[str, int], None] | None = None,
) -> BenchResult:
    """Measure LoRA fine-tuning vs porting ``patch`` on ``base``; returns the table and the ratio (recorded).

    Args:
        patch: the patch to port (store name or folder).
        base: the base to fine-tune and to port onto.
        task, train_data, eval_data: the data (``train_data`` feeds the fine-tune, ``eval_data`` the port).
        precision: port precision.
        seq_len, batch_size, steps, repeats, qlora: see :class:`portllm_edge.measure.bench.BenchSpec`.
        r, lora_alpha: the fine-tune's LoRA shape (default: the patch's own).
        template, verbalizers: the ``jsonl`` task's prompt template and label words.
        device: "cpu" or "cuda" (default: CUDA when available).
        on_config: called with (configuration name, repeat index) before each measurement.

    Raises:
        ConfigError, DataError, StoreError, CompatibilityError -- before any worker starts;
        MeasurementError and the jobs' own errors from the workers.
    """
    from portllm_edge.measure.bench import BenchSpec, check_bench_spec, run_bench
    from portllm_edge.workflow import checks
    from portllm_edge.workflow.port import lora_shape
    from portllm_edge.workflow.record import recorded
    from portllm_edge.workflow.resolve import resolve
    from portllm_edge.workflow.steps import checked_patch

    inputs = {"patch": patch, "base": base, "task": task, "train_data": str(train_data)}
    with recorded("bench", inputs) as run, tempfile.TemporaryDirectory(prefix="portllm-bench-") as tmp:
        resolved = resolve(patch, base)
        for data in (train_data, eval_data):
            checks.check_eval_spec(EvalSpec(task, Path(data), template=template, verbalizers=verbalizers))
        checked = checked_patch(resolved.patch, resolved.base, resolved.old_base, Path(tmp))
        shape = lora_shape(checked.attach_dir)
        spec = BenchSpec(
            base=str(resolved.base.path), patch_dir=str(checked.attach_dir), task=task,
            train_data=str(train_data), eval_data=str(eval_data), precision=precision, seq_len=seq_len,
            batch_size=batch_size, steps=steps, repeats=repeats, qlora=qlora, r=r or shape.r,
            lora_alpha=lora_alpha or int(shape.lora_alpha), target_modules=shape.target_modules, device=device, template=template,
            verbalizers=verbalizers,
        )  # fmt: skip
        check_bench_spec(spec)
        run.inputs = {**asdict(spec), "patch": resolved.patch.name, "base_id": resolved.base.model_id}
        result = run_bench(spec, on_config=on_config)
        result.run_id = run.id
        run.results = result.to_dict()
    return result
