"""Report content: accuracy rows, memory phases, ratios and budget rows, extracted from run records.

Why this module exists: a report is the table a user hands to whoever decides which
hardware to buy, so it must be built from the recorded runs only, by pure functions
that tests can feed with dicts. Rendering (Markdown, JSON, PNG) lives in
:mod:`portllm_edge.reports.render`.

Accepted run results (all keys optional except where noted; unknown keys are ignored):

* ``eval`` — an ``EvalResult.to_dict()``: ``task``, ``accuracy`` (required), ``n``,
  ``ci_low``, ``ci_high``, ``f1``. The configuration label comes from the inputs:
  ``base_id``/``base``, ``patch``, ``precision`` (or an explicit ``inputs.label``).
* ``compare`` — ``task`` plus ``rows``: a list of result dicts each with a ``config``
  (or ``label``/``name``) key, or a mapping ``{config: result dict}``. Rows whose
  ``accuracy`` is ``None`` (a skipped baseline) are left out.
* ``bench`` / ``port`` / ``train`` — measurements: any dict (top level, in a list under
  ``measurements``/``jobs``/``phases``/``runs``, or under a named key such as ``port``,
  ``lora_finetune`` or ``memory``) holding ``peak_bytes`` (a ``MeasureResult.to_dict()``
  fits) or ``peak_median_bytes`` (with ``peak_spread_bytes`` and ``wall_median_seconds``:
  a ``BenchConfigResult`` in ``configs``); a workflow ``port`` record has ``peak_bytes`` and
  ``metric`` at the top level (its worker's peak), ``precision``, ``phases`` (seconds) and
  ``saving.port_estimate_bytes``. Peaks read in the run's own process (older ``port``
  records' ``peak_rss_bytes``/``cuda_max_reserved_bytes``) are left out of memory tables and
  charts, with a note. Optional per measurement: ``label``/``name``/``job``, ``metric``,
  ``breakdown`` (``{"weights": bytes, "adapter": ..., "optimizer": ..., "activations":
  ..., "other": ...}``, measured), ``estimate`` (a planner ``MemoryBreakdown.to_dict()``)
  or ``estimate_bytes``, ``wall_seconds``, ``details.precision``/``details.dtype``.
  Ratios: ``ratio`` (number) with ``ratio_metric``/``metric``, or ``ratios``
  (``{label: number}``).

It must not import torch or matplotlib.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from portllm_edge.history.health import PatchHealth, patch_health

BREAKDOWN_KEYS = ("weights", "adapter", "optimizer", "activations", "other")
"""Memory categories of a phase, in chart order."""

_TERM_CATEGORY = {
    "weights": "weights",
    "quant_constants": "weights",
    "unquantized": "weights",
    "lora_params": "adapter",
    "lora_grads": "adapter",
    "adapter": "adapter",
    "optimizer": "optimizer",
    "activations": "activations",
    "kv_cache": "activations",
}
"""Planner ``MemoryTerm.key`` -> report category; any other key is ``other``."""

_LIST_KEYS = ("configs", "measurements", "jobs", "phases", "runs")
_LABEL_KEYS = ("label", "name", "job", "config")


@dataclass(frozen=True)
class AccuracyRow:
    """One configuration's accuracy on one task.

    Attributes:
        task: Task name.
        config: Configuration label (``"new base + ported patch (nf4)"``).
        accuracy: In [0, 1].
        ci_low: Lower 95 % Wilson bound, or ``None``.
        ci_high: Upper bound, or ``None``.
        n: Examples scored, or ``None``.
        f1: F1 (MRPC), or ``None``.
        run_id: The run it came from.
    """

    task: str
    config: str
    accuracy: float
    ci_low: float | None = None
    ci_high: float | None = None
    n: int | None = None
    f1: float | None = None
    run_id: str | None = None


@dataclass(frozen=True)
class MemoryPhase:
    """The measured peak of one job (port, LoRA fine-tune, ...) and what it is made of.

    Attributes:
        label: ``"port (nf4)"``, ``"lora_finetune (bf16)"``.
        peak_bytes: Measured peak, bytes.
        metric: What ``peak_bytes`` is (``peak_rss``, ``cuda_max_reserved_plus_context``), or ``None``.
        breakdown: Bytes per category of :data:`BREAKDOWN_KEYS`, or ``None``.
        breakdown_source: ``"measured"`` or ``"estimated"`` (planner terms), or ``None``.
        estimate_bytes: The planner's estimate of the same peak, bytes, or ``None``.
        wall_seconds: Wall time of the job, seconds, or ``None``.
        run_id: The run it came from.
        spread_bytes: max − min of repeated peaks, bytes, or ``None`` for one measurement.
    """

    label: str
    peak_bytes: int
    metric: str | None = None
    breakdown: dict[str, int] | None = None
    breakdown_source: str | None = None
    estimate_bytes: int | None = None
    wall_seconds: float | None = None
    run_id: str | None = None
    spread_bytes: int | None = None

    @property
    def estimate_ratio(self) -> float | None:
        """estimate / measured, or ``None`` without an estimate."""
        if self.estimate_bytes is None or self.peak_bytes <= 0:
            return None
        return self.estimate_bytes / self.peak_bytes


@dataclass(frozen=True)
class Ratio:
    """A named ratio (the paper's "memory saved": fine-tune peak / port peak).

    Attributes:
        label: What is divided by what.
        value: The ratio.
        metric: The memory metric both sides used, or ``None``.
        run_id: The run it came from.
    """

    label: str
    value: float
    metric: str | None = None
    run_id: str | None = None


@dataclass(frozen=True)
class GainKept:
    """PortLLM's headline of a comparison: the share of the patch's gain the port keeps.

    ``(ported − zero-shot) / (old base + patch − zero-shot)``; 1.0 keeps all of it.
    """

    task: str
    value: float
    run_id: str | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    paired: tuple[str, ...] = ()
    """Paired statistics of the comparison, one line each (McNemar, bootstrap intervals)."""


@dataclass(frozen=True)
class BudgetCell:
    """One precision on one card: the planner's estimate against the usable memory.

    Attributes:
        precision: ``nf4``, ``int8``, ``bf16``, ...
        needed_bytes: Estimated inference peak, bytes.
        fits: ``needed <= usable``.
        headroom_bytes: ``usable - needed`` (negative when it does not fit).
    """

    precision: str
    needed_bytes: int
    fits: bool
    headroom_bytes: int


@dataclass(frozen=True)
class BudgetRow:
    """Which precision of the model fits one hardware profile.

    Attributes:
        profile: Profile name (``rtx-4060-8gb``).
        display_name: Human name of the card.
        total_bytes: Memory of the card.
        usable_bytes: Memory an estimate may use (after reserved memory and headroom).
        cells: One per precision, in the order planned.
        best: The best-quality fitting precision, or ``None`` when nothing fits.
        finetune_fits: Fine-tuning option label -> fits (``{"LoRA bf16": False, ...}``).
        this_machine: The row is the machine the report was written on (from the probe), not a
            catalogue profile.
    """

    profile: str
    display_name: str
    total_bytes: int
    usable_bytes: int
    cells: tuple[BudgetCell, ...]
    best: str | None
    finetune_fits: dict[str, bool] = field(default_factory=dict)
    this_machine: bool = False


@dataclass(frozen=True)
class RunSummary:
    """A line about a run included in the report."""

    id: str
    kind: str
    status: str
    started_at: str
    description: str


@dataclass(frozen=True)
class Report:
    """Everything a report shows; rendered by :mod:`portllm_edge.reports.render`.

    Attributes:
        title: Heading.
        generated_at: ISO 8601 UTC time.
        runs: The runs it was built from.
        accuracy: Accuracy rows, grouped by task in first-seen order.
        memory: Measured memory phases.
        ratios: Ratios (fine-tune / port peak).
        gains: Share of each patch's gain kept by the port (compare runs).
        budget: Memory-budget rows per hardware profile, or empty.
        budget_model: The model the budget rows are for, or ``None``.
        notes: Free-text caveats.
        health: Patch health: the recovered gain per version of an update chain, per patch and
            task (:func:`portllm_edge.history.health.patch_health` of the compare runs).
    """

    title: str
    generated_at: str
    runs: tuple[RunSummary, ...]
    accuracy: tuple[AccuracyRow, ...] = ()
    memory: tuple[MemoryPhase, ...] = ()
    ratios: tuple[Ratio, ...] = ()
    gains: tuple[GainKept, ...] = ()
    budget: tuple[BudgetRow, ...] = ()
    budget_model: str | None = None
    notes: tuple[str, ...] = ()
    health: tuple[PatchHealth, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (bytes as ints)."""
        return asdict(self)


# ----------------------------------------------------------------------------- helpers


def _get(run: Any, key: str) -> Any:
    if isinstance(run, Mapping):
        return run.get(key)
    return getattr(run, key, None)


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    return None


def _int(value: Any) -> int | None:
    v = _num(value)
    return None if v is None else int(v)


def _config_label(inputs: Mapping[str, Any]) -> str:
    if isinstance(inputs.get("label"), str):
        return str(inputs["label"])
    base = inputs.get("base_id") or inputs.get("base") or "model"
    label = str(base)
    if inputs.get("patch"):
        label += f" + {inputs['patch']}"
    if inputs.get("precision"):
        label += f" ({inputs['precision']})"
    return label


_CUSTOM_TASKS = ("jsonl", "custom")
_GENERIC_STEMS = ("dev", "val", "valid", "validation", "test", "train", "data", "eval")


def task_label(task: str, inputs: Mapping[str, Any], results: Mapping[str, Any] | None = None) -> str:
    """The name a person knows a task by, for tables and chart labels.

    A recorded ``task_title`` wins. The built-in tasks keep their names (``sst2``). The
    ``jsonl`` task is the user's own data, so it is named after its file: the file's stem
    (``reviews.jsonl`` -> ``reviews``), or ``folder/file`` when the stem is a generic split
    name (``.../animal-or-vehicle/dev.jsonl`` -> ``animal-or-vehicle/dev.jsonl``).
    """
    res = results or {}
    title = inputs.get("task_title") or res.get("task_title")
    if isinstance(title, str) and title:
        return title
    if task not in _CUSTOM_TASKS:
        return task
    data = inputs.get("data") or inputs.get("eval_data") or res.get("data")
    evaluate = inputs.get("evaluate")
    if not data and isinstance(evaluate, Mapping):
        data = evaluate.get("data")
    if not isinstance(data, str) or not data:
        return task
    from pathlib import PurePath

    path = PurePath(data)
    if path.stem.lower() in _GENERIC_STEMS and path.parent.name:
        return f"{path.parent.name}/{path.name}"
    return path.stem or task


def _accuracy_row(task: str, config: str, d: Mapping[str, Any], run_id: str | None) -> AccuracyRow | None:
    acc = _num(d.get("accuracy"))
    if acc is None:
        return None
    return AccuracyRow(
        task=task,
        config=config,
        accuracy=acc,
        ci_low=_num(d.get("ci_low")),
        ci_high=_num(d.get("ci_high")),
        n=_int(d.get("n", d.get("examples"))),
        f1=_num(d.get("f1")),
        run_id=run_id,
    )


def accuracy_rows(
    kind: str, inputs: Mapping[str, Any], results: Mapping[str, Any], run_id: str | None = None
) -> list[AccuracyRow]:
    """Accuracy rows of one ``eval`` or ``compare`` run (see the module docstring for shapes).

    The task is named by :func:`task_label` (a ``jsonl`` task after its data file).
    """
    task = task_label(str(results.get("task") or inputs.get("task") or "task"), inputs, results)
    out: list[AccuracyRow] = []
    if kind == "eval":
        row = _accuracy_row(task, _config_label(inputs), results, run_id)
        return [row] if row else []
    rows = results.get("rows", results.get("configs"))
    if isinstance(rows, Mapping):
        for config, d in rows.items():
            if isinstance(d, Mapping) and (row := _accuracy_row(task, str(config), d, run_id)):
                out.append(row)
    elif isinstance(rows, Sequence) and not isinstance(rows, str):
        for i, d in enumerate(rows):
            if not isinstance(d, Mapping):
                continue
            config = next((str(d[k]) for k in _LABEL_KEYS if isinstance(d.get(k), str)), f"config {i + 1}")
            if row := _accuracy_row(task, config, d, run_id):
                out.append(row)
    return out


def port_accuracy_rows(
    inputs: Mapping[str, Any], results: Mapping[str, Any], run_id: str | None = None
) -> list[AccuracyRow]:
    """The quick evaluation a ``port`` run made of the ported patch (the app's and ``port --eval-task``'s).

    Labelled ``<base> + <patch> (<precision>), ported``; the task as :func:`task_label` names it.
    """
    ev = results["evaluation"]
    task = task_label(str(ev.get("task") or "task"), inputs, results)
    base = _base_name(results.get("base_id") or inputs.get("base")) or "base"
    label = f"{base} + {inputs.get('patch') or 'patch'} ({results.get('precision') or inputs.get('precision')}), ported"
    row = _accuracy_row(task, label, ev, run_id)
    return [row] if row else []


def breakdown_from_estimate(estimate: Mapping[str, Any]) -> dict[str, int]:
    """Group a planner ``MemoryBreakdown.to_dict()``'s terms into :data:`BREAKDOWN_KEYS` (bytes)."""
    out = dict.fromkeys(BREAKDOWN_KEYS, 0)
    for term in estimate.get("terms") or ():
        if isinstance(term, Mapping) and (b := _int(term.get("bytes"))) is not None:
            out[_TERM_CATEGORY.get(str(term.get("key")), "other")] += b
    return out


def _estimate_total(d: Mapping[str, Any]) -> int | None:
    direct = _int(d.get("estimate_bytes"))
    if direct is not None:
        return direct
    est = d.get("estimate")
    if isinstance(est, Mapping):
        total = _int(est.get("total_bytes"))
        if total is None and est.get("terms"):
            total = sum(breakdown_from_estimate(est).values())
        return total
    return _int(est)


_JOB_NAMES = {"lora": "LoRA fine-tune", "qlora": "QLoRA fine-tune", "port": "port"}


def job_label(name: str, precision: str | None = None, *, evaluated: bool = False) -> str:
    """The one display label of a measured job: ``LoRA fine-tune (bf16)``, ``port (nf4)``, ``port + eval (bf16)``.

    Args:
        name: A bench configuration name (``lora_bf16``, ``qlora_nf4``, ``port_bf16``: the record's
            key, unchanged) or a run kind (``port``).
        precision: The job's precision or dtype, when the name does not carry it.
        evaluated: The measured port job also scored evaluation examples (a ``bench`` port
            always does; a ``port`` run when it was asked to). Its peak then holds the scoring
            forward passes: ``port + eval`` is not the same job as ``port``.
    """
    head, _, suffix = name.partition("_")
    what = _JOB_NAMES.get(head)
    if what is None:
        return f"{name} ({precision})" if precision and f"({precision})" not in name else name
    if head == "port" and evaluated:
        what += " + eval"
    prec = precision or (suffix if suffix in ("nf4", "fp4", "int8", "bf16", "fp16", "fp32") else None)
    return f"{what} ({prec})" if prec else what


def short_run_id(run_id: str) -> str:
    """The random suffix of a run id (``port-20261201T150203-1a2b3c4d`` -> ``1a2b3c4d``).

    ``portllm-edge runs show SUFFIX`` finds the run (:func:`portllm_edge.history.get_run`).
    """
    return run_id.rsplit("-", 1)[-1]


def _with_run(label: str, run_id: str | None) -> str:
    return f"{label} · {short_run_id(run_id)}" if run_id else label


def memory_labels(phases: Sequence[MemoryPhase]) -> list[str]:
    """One distinct label per phase, for charts and tables: the :func:`job_label` where it occurs
    once, else ``"port (bf16) · 1a2b3c4d"`` (the run's :func:`short_run_id`), then ``#2``, ``#3``
    for phases of one run that still share a label."""
    counts: dict[str, int] = {}
    for p in phases:
        counts[p.label] = counts.get(p.label, 0) + 1
    labels = [_with_run(p.label, p.run_id) if counts[p.label] > 1 else p.label for p in phases]
    return _numbered(labels)


def accuracy_series(rows: Sequence[AccuracyRow]) -> list[str]:
    """The chart series of each accuracy row: its configuration label and the number of examples
    scored (``"v2 + ported patch (nf4) (n=192)"``: a port's 32-example quick check is not read as
    a 192-example comparison), with the run's :func:`short_run_id` appended where the same
    configuration of one task comes from more than one run (so two runs' rows are never merged
    into one bar)."""
    runs: dict[tuple[str, str], set[str | None]] = {}
    for r in rows:
        runs.setdefault((r.task, r.config), set()).add(r.run_id)
    shared = {config for (_, config), ids in runs.items() if len(ids) > 1}
    sized = [f"{r.config} (n={r.n})" if r.n is not None else r.config for r in rows]
    labels = [
        _with_run(label, r.run_id) if r.config in shared else label
        for r, label in zip(rows, sized, strict=True)
    ]
    keyed = _numbered([f"{r.task}\0{label}" for r, label in zip(rows, labels, strict=True)])
    return [k.split("\0", 1)[1] for k in keyed]


def _numbered(labels: Sequence[str]) -> list[str]:
    """``labels`` with ``#2``, ``#3`` ... appended to the second and later copies of a label."""
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} #{seen[label]}")
    return out


def _phase(
    label: str, d: Mapping[str, Any], run_id: str | None, evaluated: bool = False, precision: Any = None
) -> MemoryPhase | None:
    peak = _int(d.get("peak_bytes", d.get("peak_median_bytes", d.get("median_peak_bytes"))))
    metric = d.get("metric")
    if peak is None:
        return None
    wall = _num(d.get("wall_seconds", d.get("wall_median_seconds", d.get("seconds"))))
    if wall is None and isinstance(d.get("phases"), Mapping):
        times = [_num(v) for v in d["phases"].values()]
        wall = sum(t for t in times if t is not None) if any(t is not None for t in times) else None
    details = d.get("details") if isinstance(d.get("details"), Mapping) else {}
    assert isinstance(details, Mapping)
    prec = d.get("precision") or details.get("precision") or details.get("dtype") or precision
    label = job_label(label, str(prec) if prec else None, evaluated=evaluated)
    breakdown, source = None, None
    if isinstance(d.get("breakdown"), Mapping):
        raw = d["breakdown"]
        breakdown = {k: int(_int(raw.get(k)) or 0) for k in BREAKDOWN_KEYS}
        extra = sum(int(_int(v) or 0) for k, v in raw.items() if k not in BREAKDOWN_KEYS)
        breakdown["other"] += extra
        source = "measured"
    elif isinstance(d.get("estimate"), Mapping) and d["estimate"].get("terms"):
        breakdown, source = breakdown_from_estimate(d["estimate"]), "estimated"
    estimate = _estimate_total(d)
    saving = d.get("saving")
    if estimate is None and isinstance(saving, Mapping):  # a workflow port: the planner's port estimate
        estimate = _int(saving.get("port_estimate_bytes"))
    return MemoryPhase(
        label=label,
        peak_bytes=peak,
        metric=str(metric) if metric else None,
        breakdown=breakdown,
        breakdown_source=source,
        estimate_bytes=estimate,
        wall_seconds=wall,
        run_id=run_id,
        spread_bytes=_int(d.get("peak_spread_bytes")),
    )


IN_PROCESS_KEYS = ("peak_rss_bytes", "cuda_max_reserved_bytes")
"""Keys of a peak read in the caller's own process (older ``port`` records): never charted."""


def in_process_peak(results: Mapping[str, Any]) -> bool:
    """Whether a run's only memory figure is its own process's peak (``peak_rss_bytes``/``cuda_max_reserved_bytes``).

    Such a peak counts everything the process did before (an app's whole lifetime, an earlier
    attempt), so reports leave it out and say so; isolated measurements come from a worker
    process (``peak_bytes`` / ``peak_median_bytes`` with their ``metric``).
    """
    return any(_int(results.get(k)) for k in IN_PROCESS_KEYS) and not memory_phases("port", results)


def memory_phases(kind: str, results: Mapping[str, Any], run_id: str | None = None) -> list[MemoryPhase]:
    """Memory phases measured in isolation (a worker process) in a ``bench``/``port``/``train`` run.

    A phase is a dict with ``peak_bytes`` or ``peak_median_bytes`` (see the module docstring).
    Peaks read in the caller's own process (``peak_rss_bytes``) are not phases.
    """
    out: list[MemoryPhase] = []
    seen: set[int] = set()
    # A bench's port_<precision> job always scores examples; a port run when its record has an evaluation.
    port_evaluated = kind == "port" and isinstance(results.get("evaluation"), Mapping)

    def label_of(d: Mapping[str, Any], fallback: str) -> str:
        return next((str(d[k]) for k in _LABEL_KEYS if isinstance(d.get(k), str)), fallback)

    def visit(d: Any, fallback: str, depth: int) -> None:
        if depth > 3 or not isinstance(d, Mapping) or id(d) in seen:
            return
        seen.add(id(d))
        label = label_of(d, fallback)
        evaluated = (kind == "bench" and label.startswith("port_")) or port_evaluated
        phase = _phase(label, d, run_id, evaluated, results.get("precision") if kind == "port" else None)
        if phase is not None:
            out.append(phase)
            return
        for key, value in d.items():
            if key in _LIST_KEYS and isinstance(value, Sequence) and not isinstance(value, str):
                for i, item in enumerate(value):
                    visit(item, f"{key} {i + 1}", depth + 1)
            elif isinstance(value, Mapping) and key not in ("estimate", "breakdown", "details", "versions"):
                visit(value, key if key not in ("memory", "results") else fallback, depth + 1)

    visit(results, kind, 0)
    return out


def ratios_of(results: Mapping[str, Any], run_id: str | None = None) -> list[Ratio]:
    """Ratios recorded by a ``bench`` run (``ratio`` + ``ratio_metric``/``metric``, or ``ratios``)."""
    metric = results.get("ratio_metric") or results.get("metric")
    out: list[Ratio] = []
    single = results.get("ratio")
    if isinstance(single, Mapping):
        value = _num(single.get("value", single.get("median")))
        if value is not None:
            out.append(
                Ratio(
                    str(single.get("label") or "LoRA fine-tune peak / port peak"),
                    value,
                    str(single.get("metric") or metric) if (single.get("metric") or metric) else None,
                    run_id,
                )
            )
    elif (value := _num(single)) is not None:
        label = results.get("ratio_label")
        configs = results.get("configs")
        if not label and isinstance(configs, Sequence) and len(configs) >= 2:
            first, last = configs[0], configs[-1]
            if (
                isinstance(first, Mapping)
                and isinstance(last, Mapping)
                and first.get("name")
                and last.get("name")
            ):
                port = str(last["name"])
                label = f"{job_label(str(first['name']))} peak / {job_label(port, evaluated=port.startswith('port_'))} peak"
        out.append(
            Ratio(
                str(label or "LoRA fine-tune peak / port peak"),
                value,
                str(metric) if metric else None,
                run_id,
            )
        )
    many = results.get("ratios")
    if isinstance(many, Mapping):
        for label, v in many.items():
            if (value := _num(v.get("value") if isinstance(v, Mapping) else v)) is not None:
                out.append(Ratio(str(label), value, str(metric) if metric else None, run_id))
    return out


def describe_run(kind: str, inputs: Mapping[str, Any], results: Mapping[str, Any]) -> str:
    """One short line about a run, for listings (``sst2: 0.812 (n=200) llama + p1 (nf4)``).

    A run that did not finish (failed, error, interrupted) leads with the reason its record
    holds (``results["error"]``, :func:`portllm_edge.history.tracking`).
    """
    what = _describe_outcome(kind, inputs, results)
    reason = results.get("error")
    if isinstance(reason, str) and reason.strip():
        return f"{reason.strip()} ({what})" if what else reason.strip()
    return what


def _describe_outcome(kind: str, inputs: Mapping[str, Any], results: Mapping[str, Any]) -> str:
    """:func:`describe_run` without the failure reason."""
    if kind == "eval" and _num(results.get("accuracy")) is not None:
        n = results.get("n")
        task = task_label(str(results.get("task", inputs.get("task", "?"))), inputs, results)
        return f"{task}: accuracy {results['accuracy']:.3f} (n={n}) — {_config_label(inputs)}"
    if kind == "compare":
        rows = accuracy_rows(kind, inputs, results)
        if rows:
            inner = ", ".join(f"{r.config} {r.accuracy:.3f}" for r in rows[:4])
            return f"{rows[0].task}: {inner}"
    if kind == "train" and isinstance(results.get("heldout_after"), Mapping):
        before, after = results.get("heldout_before") or {}, results["heldout_after"]
        b, a, loss = (
            _num(before.get("accuracy")),
            _num(after.get("accuracy")),
            _num(results.get("final_loss")),
        )
        text = (
            f"patch {results.get('name') or inputs.get('name') or '?'} on {results.get('base_id') or '?'}: "
        )
        text += f"held-out accuracy {b:.3f} → {a:.3f}" if b is not None and a is not None else "trained"
        text += f" (n={after.get('n')}, training slice)" if after.get("n") else ""
        return text + (f", final loss {loss:.4f}" if loss is not None else "")
    if kind == "forecast" and isinstance(results.get("forecast"), Mapping):
        fc = results["forecast"]
        pred, low, high = (_num(fc.get(k)) for k in ("predicted", "low", "high"))
        if pred is not None and low is not None and high is not None:
            text = f"forecast recovered gain {pred:.0%} [{low:.0%}, {high:.0%}]"
            text += ", extrapolating" if fc.get("extrapolating") else ""
            return text + f" — {inputs.get('patch')} onto {inputs.get('base')}"
    if kind in ("bench", "port", "train"):
        parts = []
        rs = ratios_of(results)
        if rs:
            parts.append(f"ratio {rs[0].value:.2f}×")
        phases = memory_phases(kind, results)
        from portllm_edge.hardware.sizes import format_size

        parts.extend(f"{p.label} {format_size(p.peak_bytes)}" for p in phases[:3])
        if parts:
            return "; ".join(parts)
    for key in ("task", "patch", "base", "name"):
        if inputs.get(key):
            return f"{key} {inputs[key]}"
    return ""


@dataclass(frozen=True)
class MeasuredSaving:
    """The latest memory saving measured for one base: a port against a LoRA fine-tune, both in workers.

    Attributes:
        base: The base's name (a store name or a folder's name).
        port_bytes: The port's measured peak, bytes.
        finetune_bytes: The fine-tune's measured peak, bytes.
        metric: The metric both used (``peak_anon_rss`` ...).
        run_id: The run that measured them (a ``bench`` run, or a ``port`` run whose baseline was measured).
        started_at: When that run started (ISO 8601).
        port_label / finetune_label: What each job was (:func:`job_label`: ``port + eval (bf16)``,
            ``LoRA fine-tune (bf16)``): a port that scored examples is not the same job as one that did not.
    """

    base: str
    port_bytes: int
    finetune_bytes: int
    metric: str | None
    run_id: str
    started_at: str
    port_label: str = "port"
    finetune_label: str = "LoRA fine-tune"

    @property
    def saved_bytes(self) -> int:
        """``fine-tune − port`` (negative when the port needed more)."""
        return self.finetune_bytes - self.port_bytes

    @property
    def ratio(self) -> float | None:
        """``fine-tune / port``."""
        return self.finetune_bytes / self.port_bytes if self.port_bytes > 0 else None


def _base_name(ref: Any) -> str | None:
    if not isinstance(ref, str) or not ref:
        return None
    return ref.rstrip("/").rsplit("/", 1)[-1]


def _measured_saving(run: Any) -> MeasuredSaving | None:
    kind, status = _get(run, "kind"), _get(run, "status") or "ok"
    inputs, results = _get(run, "inputs") or {}, _get(run, "results") or {}
    if status != "ok":
        return None
    rid, started = str(_get(run, "id")), str(_get(run, "started_at") or "")
    if kind == "bench":
        configs = [c for c in results.get("configs") or () if isinstance(c, Mapping)]
        ft = next((c for c in configs if str(c.get("name", "")).startswith("lora_")), None)
        port = next((c for c in reversed(configs) if str(c.get("name", "")).startswith("port_")), None)
        base = _base_name(inputs.get("base"))
        if ft is None or port is None or base is None:
            return None
        ft_peak, port_peak = _int(ft.get("peak_median_bytes")), _int(port.get("peak_median_bytes"))
        if ft_peak is None or port_peak is None:
            return None
        labels = (job_label(str(port["name"]), evaluated=True), job_label(str(ft["name"])))
        return MeasuredSaving(base, port_peak, ft_peak, port.get("metric"), rid, started, *labels)
    if kind == "port":
        saving = results.get("saving")
        if not isinstance(saving, Mapping) or saving.get("baseline_source") != "measured":
            return None
        port_peak, ft_peak = _int(saving.get("port_peak_bytes")), _int(saving.get("baseline_bytes"))
        base = _base_name(results.get("base_id") or inputs.get("base"))
        if port_peak is None or ft_peak is None or base is None:
            return None
        prec = results.get("precision") or inputs.get("precision")
        port_label = job_label(
            "port", str(prec) if prec else None, evaluated=isinstance(results.get("evaluation"), Mapping)
        )
        ft_label = str(saving.get("baseline_label") or "").split(" measured in ")[0] or "LoRA fine-tune"
        return MeasuredSaving(
            base, port_peak, ft_peak, saving.get("metric"), rid, started, port_label, ft_label
        )
    return None


def latest_savings(runs: Iterable[Any]) -> list[MeasuredSaving]:
    """The newest measured saving per base, newest first.

    Only savings where both peaks were measured in worker processes: a ``bench`` run's
    ``lora_*`` and ``port_*`` configurations, or a ``port`` run whose ``saving`` has a
    ``measured`` baseline. Planner estimates are never a saving here.

    Args:
        runs: Run records (``RunRecord`` objects or dicts), any order.
    """
    found = [m for m in (_measured_saving(r) for r in runs) if m is not None]
    found.sort(key=lambda m: m.started_at, reverse=True)
    out: dict[str, MeasuredSaving] = {}
    for m in found:
        out.setdefault(m.base, m)
    return list(out.values())


def build_report(
    runs: Iterable[Any],
    *,
    budget: Sequence[BudgetRow] = (),
    budget_model: str | None = None,
    title: str = "portllm-edge report",
    generated_at: str | None = None,
) -> Report:
    """Build a :class:`Report` from run records (``RunRecord`` objects or dicts of their fields).

    Args:
        runs: Records with ``id``, ``kind``, ``status``, ``started_at``, ``inputs``, ``results``.
        budget: Rows from :func:`portllm_edge.reports.budget.budget_rows` (optional).
        budget_model: The model those rows are for.
        title: Heading.
        generated_at: Time stamp; default now (pass one for reproducible output).

    Returns:
        The report. Runs of other kinds (``update``) are listed but add no rows.
    """
    runs = list(runs)
    summaries: list[RunSummary] = []
    acc: list[AccuracyRow] = []
    mem: list[MemoryPhase] = []
    ratios: list[Ratio] = []
    gains: list[GainKept] = []
    notes: list[str] = []
    for run in runs:
        kind = str(_get(run, "kind") or "")
        rid = str(_get(run, "id"))
        status = str(_get(run, "status") or "ok")
        inputs = _get(run, "inputs") or {}
        results = _get(run, "results") or {}
        summaries.append(
            RunSummary(
                rid, kind, status, str(_get(run, "started_at") or ""), describe_run(kind, inputs, results)
            )
        )
        if status not in ("ok",):
            notes.append(f"run {rid} has status {status}; its numbers are left out")
            continue
        if kind in ("eval", "compare"):
            acc.extend(accuracy_rows(kind, inputs, results, rid))
        if kind == "port" and isinstance(results.get("evaluation"), Mapping):
            acc.extend(port_accuracy_rows(inputs, results, rid))
        if kind == "compare" and (gain := _num(results.get("recovered_gain"))) is not None:
            task = task_label(str(results.get("task") or inputs.get("task") or "task"), inputs, results)
            gains.append(_gain_kept(task, gain, rid, results))
        if kind in ("bench", "port", "train"):
            mem.extend(memory_phases(kind, results, rid))
            ratios.extend(ratios_of(results, rid))
            if in_process_peak(results):
                notes.append(
                    f"run {rid}: its peak was read in its own process (everything that process did "
                    "before counts), not in an isolated worker; left out of the memory tables and charts"
                )
    trains = [s.id for s in summaries if s.kind == "train"]
    if trains:
        notes.append(
            f"{len(trains)} train run{'s' if len(trains) > 1 else ''} ({', '.join(trains)}) listed with "
            f"{'their' if len(trains) > 1 else 'its'} held-out check, which scores a slice of the training "
            "data, not a dev set: not in the accuracy table or charts"
        )
    order: dict[str, int] = {}
    for row in acc:
        order.setdefault(row.task, len(order))
    acc.sort(key=lambda r: order[r.task])
    return Report(
        title=title,
        generated_at=generated_at or _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        runs=tuple(summaries),
        accuracy=tuple(acc),
        memory=tuple(mem),
        ratios=tuple(ratios),
        gains=tuple(gains),
        budget=tuple(budget),
        budget_model=budget_model,
        notes=tuple(notes),
        health=tuple(patch_health(runs)),
    )


def _gain_kept(task: str, gain: float, rid: str, results: Mapping[str, Any]) -> GainKept:
    """The recovered gain with its paired interval and tests, when the record has them."""
    from portllm_edge.evaluation.paired import PortStatistics

    raw = results.get("paired")
    if not isinstance(raw, Mapping):
        return GainKept(task, gain, rid)
    try:
        stats = PortStatistics.from_dict(dict(raw))
    except (KeyError, TypeError):
        return GainKept(task, gain, rid)
    g = stats.recovered_gain
    return GainKept(
        task,
        gain,
        rid,
        g.low if g is not None else None,
        g.high if g is not None else None,
        tuple(line for line in stats.lines() if not line.startswith("recovered gain")),
    )
