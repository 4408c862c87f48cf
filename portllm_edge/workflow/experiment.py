"""A whole porting experiment, cached: v1 -> v2, patch on v1, baseline on v2, compare, measure, port.

1. base v1 (a ``.gguf`` file is imported into the model store once);
2. base v2 = v1 + continued pretraining on a corpus (:func:`portllm_edge.workflow.train.update`);
3. the patch: LoRA fine-tune of v1 (:func:`portllm_edge.workflow.train.train`);
4. the baseline: LoRA fine-tune of v2 with the same hyperparameters;
5. the PortLLM table (:func:`portllm_edge.workflow.compare`) and the memory of a LoRA
   fine-tune vs a port, each measured in its own worker (:func:`portllm_edge.workflow.bench`);
6. the port itself (:func:`portllm_edge.workflow.port`), measured in a worker, with its
   saving against the fine-tune measured in step 5.

Every step goes through the workflow layer and is recorded. Steps 2-5 are reused when
their inputs (weight fingerprints, settings, data) are unchanged; step 6 always runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from portllm_edge import paths
from portllm_edge.fsutil import atomic_write_json
from portllm_edge.workflow.types import EvalSpec, PortOutcome

if TYPE_CHECKING:
    from portllm_edge.measure.bench import BenchResult
    from portllm_edge.models.refs import ResolvedBase
    from portllm_edge.porting.compare import CompareResult
    from portllm_edge.training.lora import LoraHyperparams

Say = Callable[[str], None]
ProgressFactory = Callable[[str], Any]
"""``label -> context manager yielding update(step, total, loss)``."""


@dataclass(frozen=True)
class ExperimentSettings:
    """Sizes of a v1 -> v2 porting experiment; the defaults fit the demo in about 10 minutes on 2 CPU cores.

    ``precision`` ``auto`` is the planner's choice for porting onto v2 on this machine
    (:func:`portllm_edge.porting.load.resolve_precision`); every row, measurement and the port use it.
    """

    update_steps: int = 30
    update_seq_len: int = 128
    update_batch: int = 4
    update_lr: float = 5e-5
    lora_steps: int = 48
    lora_r: int = 8
    lora_alpha: int = 16
    lora_lr: float = 1e-3
    batch_size: int = 8
    max_length: int = 48
    train_limit: int | None = None
    eval_limit: int | None = 192
    precision: str = "auto"
    measure_steps: int = 4
    seed: int = 0


@dataclass(frozen=True)
class ExperimentTask:
    """What to train and evaluate on.

    Attributes:
        task: task name (``sst2``, ``jsonl`` ...).
        train_data / eval_data: files.
        title: shown in the table's title.
        patch_name: store name of the v1 patch (the v2 baseline gets ``-v2-own-lora``).
        template / verbalizers: for the ``jsonl`` task.
    """

    task: str
    train_data: Path
    eval_data: Path
    title: str
    patch_name: str
    template: str | None = None
    verbalizers: dict[str, str] | None = None


@dataclass(frozen=True)
class UpdateSummary:
    """How v2 differs from v1: steps of continued pretraining, held-out perplexity, mean linear drift."""

    steps: int
    perplexity_before: float
    perplexity_after: float
    mean_linear_drift: float


@dataclass
class ExperimentResult:
    """The experiment's outcome.

    Attributes:
        title: the task's title; precision: the precision of every compared row and of the port.
        update: v1 -> v2; compare: the PortLLM table; bench: fine-tune vs port, measured in workers;
        port: the port of step 6 (with its measured memory and saving).
    """

    title: str
    precision: str
    update: UpdateSummary
    compare: CompareResult
    bench: BenchResult
    port: PortOutcome


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class _Ctx:
    """One experiment's fixed inputs."""

    task: ExperimentTask
    s: ExperimentSettings
    say: Say
    bar: ProgressFactory
    fresh: bool


def _ensure_v2(ctx: _Ctx, v1: ResolvedBase, corpus: list[Path], v2_name: str) -> UpdateSummary:
    """Step 2: v2 = v1 + continued pretraining (reused when v1, corpus and settings are unchanged)."""
    from portllm_edge.workflow.train import UpdateRequest, update

    s = ctx.s
    v2_dir = paths.models_dir() / v2_name
    meta_path = v2_dir / "portllm_update.json"
    key = _key(
        v1.fingerprint(),
        [str(c) for c in corpus],
        s.update_steps,
        s.update_seq_len,
        s.update_batch,
        s.update_lr,
        s.seed,
    )
    if meta_path.is_file() and json.loads(meta_path.read_text()).get("experiment_key") == key:
        ctx.say("    (cached)")
    else:
        req = UpdateRequest(
            str(v1.path), [str(c) for c in corpus], str(v2_dir), s.update_steps, s.update_seq_len,
            s.update_batch, s.update_lr, s.seed, force=True,
        )  # fmt: skip
        with ctx.bar("continued pretraining") as progress:
            update(req, progress=progress, model_store_entry=True)
        meta = json.loads(meta_path.read_text())
        atomic_write_json(meta_path, {**meta, "experiment_key": key})
    meta = json.loads(meta_path.read_text())
    return UpdateSummary(
        int(meta["steps"]), meta["perplexity_before"], meta["perplexity_after"], meta["mean_linear_drift"]
    )


def _hyperparams(s: ExperimentSettings) -> LoraHyperparams:
    from portllm_edge.training.lora import LoraHyperparams

    return LoraHyperparams(
        r=s.lora_r,
        lora_alpha=s.lora_alpha,
        max_steps=s.lora_steps,
        learning_rate=s.lora_lr,
        batch_size=s.batch_size,
        max_length=s.max_length,
        seed=s.seed,
        lora_dropout=0.0,
    )


def _ensure_patch(ctx: _Ctx, name: str, base: ResolvedBase, label: str) -> None:
    """Steps 3-4: a LoRA patch of ``base`` (reused when trained with the same settings on the same weights)."""
    from portllm_edge.patches import PatchStore
    from portllm_edge.workflow.train import TrainSpec, no_gain_hint, train

    hp, t = _hyperparams(ctx.s), ctx.task
    train_key = _key(hp.__dict__, ctx.s.train_limit, str(t.train_data), t.template, t.verbalizers)
    m = {m.name: m for m in PatchStore().list()}.get(name)
    fingerprint = base.fingerprint()
    if (
        m is not None
        and m.source_base.fingerprint == fingerprint
        and any(e.note and train_key in e.note for e in m.lineage)
    ):
        ctx.say("    (cached)")
        return
    with ctx.bar(label) as progress:
        spec = TrainSpec(
            str(base.path), t.task, t.train_data, name, hp=hp, limit=ctx.s.train_limit,
            template=t.template, verbalizers=t.verbalizers,
        )  # fmt: skip
        out = train(spec, force=True, progress=progress, note=f"experiment key {train_key}")
    before, after = out.heldout_before, out.heldout_after
    if before is not None and after is not None:
        ctx.say(f"    held-out accuracy {before.accuracy:.3f} -> {after.accuracy:.3f}")
    hint = no_gain_hint(out)
    if hint:
        ctx.say(f"    warning: {hint}")


def _compare_and_bench(
    ctx: _Ctx, v1: ResolvedBase, v2: ResolvedBase, baseline: str, device: str
) -> tuple[CompareResult, BenchResult]:
    """Step 5: the table and the two measurements, reused when nothing they depend on changed."""
    from portllm_edge.measure.bench import BenchResult
    from portllm_edge.patches import PatchStore
    from portllm_edge.porting.compare import CompareResult
    from portllm_edge.workflow.bench import bench
    from portllm_edge.workflow.compare import compare

    s, t, store = ctx.s, ctx.task, PatchStore()
    cache = paths.cache_dir() / "experiments" / f"{t.patch_name}-results.json"
    key = _key(
        v1.fingerprint(),
        v2.fingerprint(),
        s,
        str(t.eval_data),
        store.get(t.patch_name).manifest.files,
        store.get(baseline).manifest.files,
    )
    if cache.is_file() and not ctx.fresh:
        data = json.loads(cache.read_text())
        if data.get("key") == key and "compare" in data:
            ctx.say("    (cached)")
            return CompareResult.from_dict(data["compare"]), BenchResult.from_dict(data["bench"])
    spec = EvalSpec(t.task, t.eval_data, s.eval_limit, s.seed, t.template, t.verbalizers, s.batch_size)
    cmp = compare(t.patch_name, old=str(v1.path), new=str(v2.path), spec=spec, precision=s.precision,
                  baseline=baseline, on_row=lambda r: ctx.say(f"    {r}"))  # fmt: skip
    ctx.say(
        f"    measuring: LoRA fine-tune of v2 and the port ({s.precision}), each in its own worker process"
    )
    measured = bench(
        t.patch_name, str(v2.path), task=t.task, train_data=t.train_data, eval_data=t.eval_data,
        precision=s.precision, seq_len=s.max_length, batch_size=s.batch_size, steps=s.measure_steps,
        template=t.template, verbalizers=t.verbalizers, device=device,
    )  # fmt: skip
    cache.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(cache, {"key": key, "compare": cmp.to_dict(), "bench": measured.to_dict()})
    return cmp, measured


def experiment(
    v1_ref: str | Path,
    corpus: list[Path],
    task: ExperimentTask,
    *,
    settings: ExperimentSettings | None = None,
    v2_name: str | None = None,
    say: Say = print,
    progress_factory: ProgressFactory | None = None,
    fresh: bool = False,
) -> ExperimentResult:
    """The main job end to end, caching every artifact (see the module docstring).

    Args:
        v1_ref: the old base (a ``.gguf`` file is imported into the model store once).
        corpus: plain-text files for the continued-pretraining update.
        task: what to train and evaluate on.
        settings: sizes; see :class:`ExperimentSettings`.
        v2_name: model-store name of v2 (default ``<v1>-<task.patch_name>-v2``).
        say: prints one status line.
        progress_factory: ``label -> context manager yielding update(step, total, loss)``.
        fresh: recompute the cached comparison and measurements (models and patches are reused).

    Raises:
        The workflow's errors (PortllmError subclasses), each run recorded with its reason.
    """
    from portllm_edge.models import resolve_base
    from portllm_edge.workflow.port import port

    s = settings or ExperimentSettings()
    ctx = _Ctx(task, s, say, progress_factory or (lambda _label: contextlib.nullcontext(None)), fresh)
    say("1/6 base v1")
    v1 = resolve_base(str(v1_ref))
    say("2/6 base v2: continued pretraining of v1 (a simulated update)")
    v2_name = v2_name or f"{v1.path.name}-{task.patch_name}-v2"
    update = _ensure_v2(ctx, v1, corpus, v2_name)
    v2 = resolve_base(v2_name)
    from dataclasses import replace

    from portllm_edge.porting.load import default_device, resolve_precision

    device = default_device()  # the planner's device: plan, comparison, measurements and port use it
    s = replace(s, precision=resolve_precision(s.precision, device, v2))
    ctx = replace(ctx, s=s)
    say(f"3/6 patch: LoRA fine-tune of v1 on {task.task} ({task.patch_name})")
    _ensure_patch(ctx, task.patch_name, v1, "LoRA on v1")
    baseline = f"{task.patch_name}-v2-own-lora"
    say("4/6 baseline: LoRA fine-tune of v2 with the same hyperparameters")
    _ensure_patch(ctx, baseline, v2, "LoRA on v2")
    say("5/6 evaluate four configurations; measure a LoRA fine-tune and a port, each in a worker process")
    cmp, measured = _compare_and_bench(ctx, v1, v2, baseline, device)
    say(f"6/6 port: {task.patch_name} onto v2 at {s.precision} (planner's choice on {device}), training-free")
    spec = EvalSpec(
        task.task, task.eval_data, s.batch_size * 4, s.seed, task.template, task.verbalizers, s.batch_size
    )
    ported = port(task.patch_name, v2_name, precision=s.precision, overwrite=True, evaluate=spec, device=device,
                  on_phase=lambda p: say(f"    {p}"))  # fmt: skip
    return ExperimentResult(task.title, s.precision, update, cmp, measured, ported)
