"""Train the initial patch: LoRA fine-tune a base on a task's local data and store it with its lineage.

A slice of the training file is held out (seeded) and scored before and after training,
so a patch that learned nothing says so (see :class:`portllm_edge.workflow.TrainOutcome`).
The run is recorded by :func:`portllm_edge.workflow.train`, which calls :func:`train_patch`.
"""

from __future__ import annotations

import random
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from portllm_edge.training.lora import LoraHyperparams, ProgressFn, train_lora

if TYPE_CHECKING:
    from portllm_edge.evaluation.results import EvalResult
    from portllm_edge.evaluation.tasks import TaskData

HELDOUT_MAX = 64
"""At most this many training examples are held out for the before/after check."""


@dataclass
class TrainPatchResult:
    """A trained and stored patch.

    Attributes:
        name: store name of the new patch.
        base_id: the base it was trained on.
        base_fingerprint: that base's weight fingerprint.
        precision: the load precision trained at.
        steps: optimizer steps.
        final_loss: loss of the last step.
        seconds: total wall time (load + train + store), seconds.
        examples: training examples used (held-out slice excluded).
        heldout_before / heldout_after: scores on the held-out slice (None when none was held out).
        losses: training loss per step.
        hyperparams: the LoRA hyperparameters used.
        tokens: tokens processed; trainable_parameters: LoRA parameters trained.
    """

    name: str
    base_id: str
    base_fingerprint: str
    precision: str
    steps: int
    final_loss: float
    seconds: float
    examples: int
    heldout_before: EvalResult | None = None
    heldout_after: EvalResult | None = None
    losses: list[float] = field(default_factory=list)
    hyperparams: dict[str, Any] = field(default_factory=dict)
    tokens: int = 0
    trainable_parameters: int = 0


def heldout_size(n: int) -> int:
    """Examples held out of ``n``: a fifth, at most :data:`HELDOUT_MAX`; none below 10 examples."""
    return 0 if n < 10 else min(HELDOUT_MAX, n // 5)


def split_heldout(data: TaskData, seed: int) -> tuple[TaskData, TaskData | None]:
    """``(training part, held-out part or None)`` of the loaded examples, seeded, order kept."""
    n = len(data.examples)
    k = heldout_size(n)
    if k == 0:
        return data, None
    held = set(random.Random(seed).sample(range(n), k))
    train = [e for i, e in enumerate(data.examples) if i not in held]
    heldout = [e for i, e in enumerate(data.examples) if i in held]
    return replace(data, examples=train), replace(data, examples=heldout)


@dataclass(frozen=True)
class TrainSpec:
    """What to train: a LoRA patch of ``base`` on ``task`` examples from ``data``, stored as ``name``.

    Also the run record's inputs of a ``train`` run (:func:`portllm_edge.workflow.train`).

    Attributes:
        base: a base reference (folder, store name, GGUF file, cached hub id).
        task: a task name (``sst2``, ``boolq``, ``jsonl`` ...; see ``portllm-edge eval --help``).
        data: the task's training file (or folder).
        name: store name of the patch.
        hp: LoRA hyperparameters (defaults: r=8, lora_alpha=16, q/k/v/o_proj, 1 epoch, lr 2e-4).
        limit: train on a seeded subsample of this many examples (the held-out slice comes out of it).
        precision: fp32/bf16 for LoRA, nf4 for QLoRA.
        template, verbalizers: prompt template and label words for the ``jsonl`` task.
    """

    base: str
    task: str
    data: str | Path
    name: str
    hp: LoraHyperparams = field(default_factory=LoraHyperparams)
    limit: int | None = None
    precision: str = "fp32"
    template: str | None = None
    verbalizers: dict[str, str] | None = None


def train_patch(
    spec: TrainSpec,
    *,
    force: bool = False,
    progress: ProgressFn | None = None,
    note: str | None = None,
    run_id: str | None = None,
) -> TrainPatchResult:
    """LoRA fine-tune ``spec.base`` on ``spec.task`` examples and store the adapter as patch ``spec.name``.

    Args:
        spec: what to train (:class:`TrainSpec`).
        force: replace an existing patch of that name.
        progress: called after each step with (step, total, loss).
        note: appended to the lineage entry's note (e.g. an experiment's settings key).
        run_id: the run record naming this training, written into the lineage.

    Raises:
        BaseModelError, DataError, ConfigError, TrainingError, StoreError (name taken, before any load).
    """
    from portllm_edge.evaluation.tasks import LoadOptions, load_task
    from portllm_edge.models import resolve_base
    from portllm_edge.patches import PatchStore, validate_name
    from portllm_edge.porting.load import load_base_model

    name, hp = spec.name, spec.hp
    validate_name(name)
    if name in PatchStore().names() and not force:
        from portllm_edge.errors import StoreError

        raise StoreError(
            f"patch store already has {name!r}.", hint="pass --force to replace it, or choose --name"
        )
    start = time.perf_counter()
    resolved = resolve_base(spec.base)
    options = LoadOptions(template=spec.template, verbalizers=spec.verbalizers)
    train_data, heldout = split_heldout(
        load_task(spec.task, spec.data, limit=spec.limit, seed=hp.seed, options=options), hp.seed
    )
    loaded = load_base_model(resolved, spec.precision)
    before = _score(loaded, heldout, hp.batch_size)
    with tempfile.TemporaryDirectory(prefix="portllm-train-") as tmp:
        result = _train_and_store(
            loaded, resolved, train_data, hp, Path(tmp), name, force, progress, note, run_id
        )
    after = _score(loaded, heldout, hp.batch_size)  # the LoRA layers are in loaded.model now
    return TrainPatchResult(
        name=name,
        base_id=resolved.model_id,
        base_fingerprint=resolved.fingerprint(),
        precision=loaded.precision,
        steps=result.steps,
        final_loss=result.losses[-1],
        seconds=time.perf_counter() - start,
        examples=len(train_data.examples),
        heldout_before=before,
        heldout_after=after,
        losses=result.losses,
        hyperparams=result.hyperparams,
        tokens=result.tokens,
        trainable_parameters=result.trainable_parameters,
    )


def _score(loaded: Any, heldout: TaskData | None, batch_size: int) -> EvalResult | None:
    if heldout is None:
        return None
    from portllm_edge.evaluation.scoring import evaluate

    return evaluate(loaded.model, loaded.tokenizer, heldout, batch_size=batch_size)


def _train_and_store(
    loaded: Any,
    resolved: Any,
    data: TaskData,
    hp: LoraHyperparams,
    work: Path,
    name: str,
    force: bool,
    progress: ProgressFn | None,
    note: str | None,
    run_id: str | None,
) -> Any:
    """Train LoRA layers on ``data`` and store the adapter as ``name`` with a ``train`` lineage entry."""
    from portllm_edge.evaluation.tasks import training_split
    from portllm_edge.patches import LineageEntry, PatchStore

    pairs = [training_split(e) for e in data.examples]
    result = train_lora(
        loaded.model,
        loaded.tokenizer,
        pairs,
        hp,
        work / "adapter",
        quantized=loaded.precision in ("nf4", "int8"),
        progress=progress,
        base_model_name_or_path=resolved.model_id,
    )
    fingerprint = resolved.fingerprint()
    PatchStore().import_dir(
        result.adapter_dir,
        name=name,
        task=data.task.name,
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
                note=f"{result.steps} steps on {data.path.name}" + (f"; {note}" if note else ""),
            )
        ],
        force=force,
    )
    return result
