"""Train the initial patch: LoRA fine-tune a base on a task's local data and store it with its lineage."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from portllm_edge.training.lora import LoraHyperparams, ProgressFn, train_lora


@dataclass
class TrainPatchResult:
    """A trained and stored patch.

    Attributes:
        name: store name of the new patch.
        base_id: the base it was trained on.
        base_fingerprint: that base's weight fingerprint.
        steps: optimizer steps.
        final_loss: loss of the last step.
        seconds: total wall time (load + train + store), seconds.
        run_id: the run record's id.
    """

    name: str
    base_id: str
    base_fingerprint: str
    steps: int
    final_loss: float
    seconds: float
    run_id: str
    details: dict[str, Any] = field(default_factory=dict)


def train_patch(
    base: str,
    task: str,
    data: str | Path,
    *,
    name: str,
    hp: LoraHyperparams | None = None,
    limit: int | None = None,
    precision: str = "fp32",
    template: str | None = None,
    verbalizers: dict[str, str] | None = None,
    force: bool = False,
    progress: ProgressFn | None = None,
    note: str | None = None,
) -> TrainPatchResult:
    """LoRA fine-tune ``base`` on ``task`` examples from ``data`` and store the adapter as patch ``name``.

    Args:
        base: a base reference (folder, store name, GGUF file, cached hub id).
        task: a task name (``sst2``, ``boolq``, ``jsonl`` ...; see ``portllm-edge eval --help``).
        data: the task's training file (or folder).
        name: store name of the patch.
        hp: LoRA hyperparameters (defaults: r=8, lora_alpha=16, q/k/v/o_proj, 1 epoch, lr 2e-4).
        limit: train on a seeded subsample of this many examples.
        precision: fp32/bf16 for LoRA, nf4 for QLoRA.
        template, verbalizers: prompt template and label words for the ``jsonl`` task.
        force: replace an existing patch of that name.
        progress: called after each step with (step, total, loss).
        note: appended to the lineage entry's note (e.g. an experiment's settings key).

    Raises:
        BaseModelError, DataError, ConfigError, TrainingError, StoreError.
    """
    from portllm_edge.evaluation.tasks import LoadOptions, load_task, training_split
    from portllm_edge.models import resolve_base
    from portllm_edge.patches import LineageEntry, PatchStore, validate_name
    from portllm_edge.porting.load import load_base_model
    from portllm_edge.runs import new_run_id, record_run

    hp = hp or LoraHyperparams()
    validate_name(name)
    store = PatchStore()
    if name in store.names() and not force:
        from portllm_edge.errors import StoreError

        raise StoreError(
            f"patch store already has {name!r}.", hint="pass --force to replace it, or choose --name"
        )
    start = time.perf_counter()
    resolved = resolve_base(base)
    data_obj = load_task(
        task, data, limit=limit, seed=hp.seed, options=LoadOptions(template=template, verbalizers=verbalizers)
    )
    pairs = [training_split(e) for e in data_obj.examples]
    loaded = load_base_model(resolved, precision)
    fingerprint = resolved.fingerprint()
    run_id = new_run_id("train")
    with tempfile.TemporaryDirectory(prefix="portllm-train-") as tmp:
        result = train_lora(
            loaded.model,
            loaded.tokenizer,
            pairs,
            hp,
            Path(tmp) / "adapter",
            quantized=loaded.precision in ("nf4", "int8"),
            progress=progress,
            base_model_name_or_path=resolved.model_id,
        )
        store.import_dir(
            result.adapter_dir,
            name=name,
            task=data_obj.task.name,
            source_base_id=resolved.model_id,
            source_base_fingerprint=fingerprint,
            model_type=str(resolved.config().get("model_type")),
            lineage=[
                LineageEntry(
                    kind="train",
                    base_id=resolved.model_id,
                    base_fingerprint=fingerprint,
                    precision=loaded.precision,
                    run_id=run_id,
                    note=f"{result.steps} steps on {data_obj.path.name}" + (f"; {note}" if note else ""),
                )
            ],
            force=force,
        )
    seconds = time.perf_counter() - start
    record_run(
        "train",
        {
            "base": base,
            "task": task,
            "data": str(data_obj.path),
            "examples": len(pairs),
            "precision": loaded.precision,
            "name": name,
            **result.hyperparams,
        },
        {
            "steps": result.steps,
            "final_loss": result.losses[-1],
            "seconds": seconds,
            "train_seconds": result.seconds,
            "tokens": result.tokens,
            "trainable_parameters": result.trainable_parameters,
        },
        run_id=run_id,
    )
    return TrainPatchResult(
        name=name,
        base_id=resolved.model_id,
        base_fingerprint=fingerprint,
        steps=result.steps,
        final_loss=result.losses[-1],
        seconds=seconds,
        run_id=run_id,
        details={"examples": len(pairs), "losses": result.losses},
    )
