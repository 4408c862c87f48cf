"""Train a patch (LoRA fine-tune) and make an updated base (continued pretraining), each recorded.

``train``: checks (name, data) -> load -> score a held-out slice -> train -> store ->
score it again -> record. ``update``: checks (arguments, output folder) -> load ->
continued pretraining -> save -> record.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from portllm_edge.training.patch import TrainSpec
from portllm_edge.workflow.types import EvalSummary, TrainOutcome

if TYPE_CHECKING:
    from portllm_edge.training.lora import ProgressFn
    from portllm_edge.training.update import LineageVersion, UpdateResult, UpdateStage


def no_gain_hint(outcome: TrainOutcome) -> str | None:
    """A warning with what to try when the held-out accuracy did not improve, else None."""
    gain = outcome.heldout_gain
    if gain is None or gain > 0:
        return None
    before, after = outcome.heldout_before, outcome.heldout_after
    assert before is not None and after is not None
    return (
        f"the patch did not improve accuracy on {after.n} held-out training examples "
        f"({before.accuracy:.3f} -> {after.accuracy:.3f}): it may have learned nothing. "
        "Try more steps (--max-steps / --epochs) or a higher learning rate (--lr)."
    )


def train(
    spec: TrainSpec, *, force: bool = False, progress: ProgressFn | None = None, note: str | None = None
) -> TrainOutcome:
    """LoRA fine-tune ``spec.base`` on ``spec.task`` data, store patch ``spec.name``, and check it on a held-out slice.

    ``spec`` is also the run record's inputs. See :func:`portllm_edge.training.patch.train_patch`
    for the arguments. The held-out slice (a fifth of the examples, at most 64; none under 10)
    is not trained on; it is scored before and after training (``TrainOutcome.heldout_gain``).

    Raises:
        StoreError (name taken), DataError, ConfigError -- before any load; BaseModelError, TrainingError.
    """
    from portllm_edge.training.patch import train_patch
    from portllm_edge.workflow.record import recorded

    with recorded("train", spec) as run:
        res = train_patch(spec, force=force, progress=progress, note=note, run_id=run.id)
        outcome = TrainOutcome(
            name=res.name,
            base_id=res.base_id,
            base_fingerprint=res.base_fingerprint,
            steps=res.steps,
            final_loss=res.final_loss,
            seconds=res.seconds,
            examples=res.examples,
            heldout_before=EvalSummary.of(res.heldout_before) if res.heldout_before else None,
            heldout_after=EvalSummary.of(res.heldout_after) if res.heldout_after else None,
            run_id=run.id,
            losses=res.losses,
        )
        run.results = {
            **outcome.to_dict(),
            "precision": res.precision,
            "tokens": res.tokens,
            "trainable_parameters": res.trainable_parameters,
            "hyperparams": res.hyperparams,
        }
    return outcome


@dataclass(frozen=True)
class UpdateRequest:
    """What an update run was asked to do (the run record's inputs). See :func:`update`."""

    base: str
    corpus: list[str]
    out: str
    steps: int = 50
    seq_len: int = 256
    batch_size: int = 4
    lr: float = 2e-5
    seed: int = 0
    force: bool = False
    version: str | None = None
    """The version this update makes in a chain (``v3``), or ``None`` for a single update."""


def update(
    req: UpdateRequest, *, progress: ProgressFn | None = None, model_store_entry: bool = False
) -> UpdateResult:
    """Make an updated base by full-parameter continued pretraining (see :mod:`portllm_edge.training.update`).

    Args:
        req: What to do.
        progress: Called after each step.
        model_store_entry: ``req.out`` is ``models/NAME`` in the model store, written on the store's
            behalf (the demo's v2); a user's ``--out`` inside the store is refused.

    Raises:
        ConfigError, TrainingError (arguments, an existing ``out`` without ``force``) -- before
        any load; BaseModelError, DataError.
    """
    from portllm_edge.errors import TrainingError
    from portllm_edge.models import resolve_base
    from portllm_edge.training.update import check_update_args, simulate_update
    from portllm_edge.workflow.record import recorded

    out_dir = Path(req.out)
    with recorded("update", req) as run:
        resolved = resolve_base(req.base)
        check_update_args(
            resolved.path, req.out, steps=req.steps, seq_len=req.seq_len, batch_size=req.batch_size,
            learning_rate=req.lr, model_store_entry=model_store_entry,
        )  # fmt: skip
        if out_dir.exists() and not req.force:
            raise TrainingError(
                f"{out_dir}: already exists.", hint="pass --force to replace it, or choose another --out"
            )
        res = simulate_update(
            resolved.path, [Path(c) for c in req.corpus], out_dir, steps=req.steps, seq_len=req.seq_len,
            batch_size=req.batch_size, learning_rate=req.lr, seed=req.seed, force=req.force, progress=progress,
            model_store_entry=model_store_entry,
        )  # fmt: skip
        record = res.to_dict()
        record.pop("losses", None)
        run.results = record
    return res


@dataclass(frozen=True)
class UpdateChainRequest:
    """A chain of updates v1 -> v2 -> ... -> vK (see :func:`update_chain`).

    Attributes:
        base: The root base (v1): folder, store name or ``.gguf``.
        corpus: Plain-text files or folders shared by every stage.
        out: Folder receiving ``v2`` ... ``vK``.
        stages: ``(steps, learning rate)`` of each new version, in order.
        seq_len, batch_size, seed, force: As :class:`UpdateRequest` (stage ``i`` uses ``seed + i``).
        reuse: Keep versions already made with the same settings (resume an interrupted chain);
            a version folder made with other settings is replaced only with ``force``.
    """

    base: str
    corpus: list[str]
    out: str
    stages: list[tuple[int, float]]
    seq_len: int = 256
    batch_size: int = 4
    seed: int = 0
    force: bool = False
    reuse: bool = True


def update_chain(req: UpdateChainRequest, *, progress: ProgressFn | None = None) -> list[LineageVersion]:
    """Make v2 ... vK by successive continued pretraining, each version one recorded ``update`` run.

    Each version's folder records its place in the lineage
    (:func:`portllm_edge.training.update.read_lineage`), so ``compare`` runs against it are
    tracked per lineage in the history (``report``'s patch-health chart).

    Returns:
        The lineage, v1 first.

    Raises:
        ConfigError (no stage, bad settings) before any load; then as :func:`update`.
    """
    from portllm_edge.models import resolve_base
    from portllm_edge.training.update import UpdateStage, simulate_update_chain

    root = resolve_base(req.base)

    def recorded_update(prev: Path, out: Path, stage: UpdateStage, seed: int) -> UpdateResult:
        one = UpdateRequest(
            str(prev), req.corpus, str(out), stage.steps, req.seq_len, req.batch_size, stage.learning_rate,
            seed, force=req.force, version=out.name,
        )  # fmt: skip
        return update(one, progress=progress)

    return simulate_update_chain(
        root.path, [Path(c) for c in req.corpus], req.out, [UpdateStage(s, lr) for s, lr in req.stages],
        seq_len=req.seq_len, batch_size=req.batch_size, seed=req.seed, force=req.force, reuse=req.reuse,
        update_fn=recorded_update,
    )  # fmt: skip
