"""Task loaders: read the standard BoolQ, GLUE, WinoGrande and GSM8K files into typed examples.

Why this module exists: PortLLM is judged on seven tasks (BoolQ, SST-2, MRPC, RTE,
WNLI, WinoGrande, GSM8K) plus the user's own data. Each ships in a format with its
own traps (GLUE TSVs must be read with quoting off, MRPC starts with a BOM, BoolQ
copies store labels as booleans or as strings, GLUE test splits hide labels). This
module turns each file into a list of :class:`ChoiceExample` or
:class:`GenerationExample` records with a fixed, lm-eval-harness-style prompt, so that
scoring (:mod:`portllm_edge.evaluation.scoring`) and training (the trainer calls
:func:`format_training_text`) see the same text.

A small registry maps a task name to its loader (decorator + name, as in mergekit's
merge methods). Adding a task is one decorated function.

It must not import torch or transformers, and must not download anything: files are
the user's, read from disk.
"""

from __future__ import annotations

import csv
import difflib
import json
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Union

from portllm_edge.errors import ConfigError, DataError
from portllm_edge.evaluation.metrics import gsm8k_gold_answer

TaskKind = Literal["classification", "multiple_choice", "generation"]

TARGET_DELIMITER = " "
"""Joins a prompt and a verbalizer ("...Answer:" + " " + "yes"), as lm-eval-harness does."""

DEFAULT_SEED = 0

FEWSHOT_SEED = 1234
"""Seed of the few-shot draw: lm-eval's ``fewshot_random_seed`` default (``DEFAULT_OTHER_SEED``)."""

FEWSHOT_DELIMITER = "\n\n"
"""Between few-shot examples, as lm-eval's ``fewshot_delimiter``."""


@dataclass(frozen=True)
class ChoiceExample:
    """One example scored by the log-likelihood of each choice.

    Attributes:
        task: Registry name of the task (``"sst2"``).
        id: Identifier from the file (``idx``/``index``/``qID``), else the 0-based row number.
        prompt: The context every choice is scored after (classification), or, for
            partial scoring (WinoGrande), the sentence with its ``_`` blank, for display.
        choices: The verbalizers (``("negative", "positive")``), one per class, in class order.
        gold: Index of the correct choice in ``choices``.
        label_names: The dataset's own label for each choice (``("0", "1")``,
            ``("entailment", "not_entailment")``), for reports.
        partial: Per-choice ``(context, continuation)`` pairs overriding
            ``(prompt, " " + choice)``; used by WinoGrande partial scoring.
    """

    task: str
    id: str
    prompt: str
    choices: tuple[str, ...]
    gold: int
    label_names: tuple[str, ...] = ()
    partial: tuple[tuple[str, str], ...] | None = None

    def requests(self) -> tuple[tuple[str, str], ...]:
        """The ``(context, continuation)`` pair to score for each choice, in choice order."""
        if self.partial is not None:
            return self.partial
        return tuple((self.prompt, TARGET_DELIMITER + c) for c in self.choices)

    def choice_texts(self) -> tuple[str, ...]:
        """The harness's ``doc_to_choice`` strings, whose length in characters ``acc_norm`` divides by.

        The verbalizers (``("negative", "positive")``), or for partial scoring the
        contexts with each option filled in (lm-eval ``winogrande``'s ``doc_to_choice``
        returns those, so its ``acc_norm`` divides the shared continuation's score by them).
        """
        if self.partial is not None:
            return tuple(context for context, _ in self.partial)
        return self.choices


@dataclass(frozen=True)
class GenerationExample:
    """One example answered by greedy generation and exact match on the final number.

    Attributes:
        task: Registry name (``"gsm8k"``).
        id: Row number in the file.
        prompt: The question's prompt (``"Question: ...\\nAnswer:"``), without few-shot examples.
        answer: Gold final answer, commas removed (``"18"``).
        solution: The full reference solution (training text), ``#### answer`` included.
        fewshot: Solved examples shown before ``prompt`` at evaluation
            (``"Question: ...\\nAnswer: ...\\n\\n"`` per shot), or ``""`` (zero-shot).
    """

    task: str
    id: str
    prompt: str
    answer: str
    solution: str
    fewshot: str = ""

    @property
    def context(self) -> str:
        """What the model continues at evaluation: ``fewshot + prompt``."""
        return self.fewshot + self.prompt


Example = Union[ChoiceExample, GenerationExample]


@dataclass(frozen=True)
class LoadOptions:
    """Options for loaders that accept a user's format (the ``jsonl`` task).

    Attributes:
        template: ``str.format`` template of the prompt, with ``{text}`` or any field of
            the record (``"Review: {text}\\nSentiment:"``). ``None``: the task's default.
        verbalizers: Label value (as written in the file, stringified) -> verbalizer word,
            in class order. ``None``: the distinct labels themselves, sorted.
    """

    template: str | None = None
    verbalizers: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        if self.template is not None:
            check_template(self.template)


def check_template(template: str) -> None:
    """Refuse a prompt template that ``str.format`` can't fill with plain record fields.

    Only ``{field}`` placeholders are allowed: no attribute or index access
    (``{text.__class__}`` reads Python internals), no format spec (``{text:>999999999}``
    allocates without bound), no conversion; literal braces are written ``{{`` and ``}}``.

    Raises:
        ConfigError: naming the template and the offending placeholder.
    """
    import string

    hint = "write placeholders as {text} or {field}, and literal braces as {{ and }}"
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(f"`--template` {template!r} is not a valid template ({exc})", hint=hint) from None
    for _, field_name, spec, conversion in parts:
        if field_name is None:
            continue
        if not field_name.isidentifier() or spec or conversion:
            shown = (
                "{"
                + field_name
                + (f"!{conversion}" if conversion else "")
                + (f":{spec}" if spec else "")
                + "}"
            )
            raise ConfigError(
                f"`--template` {template!r}: placeholder {shown} is not a plain field name",
                hint=hint,
            )


Loader = Callable[[Path, LoadOptions], list[Example]]


@dataclass(frozen=True)
class TaskSpec:
    """A registered task.

    Attributes:
        name: Registry name (``"mrpc"``).
        kind: ``classification`` (shared prompt, verbalized labels), ``multiple_choice``
            (per-choice contexts) or ``generation``.
        loader: ``(path, options) -> examples``.
        title: Display name (``"MRPC"``).
        description: One line for ``--help`` and reports.
        default_files: File names tried, in order, when ``--data`` is a folder.
        metrics: Metric names reported (``("accuracy", "f1")``).
        positive_index: For F1: index of the positive choice.
        aliases: Other accepted names (``"sst-2"``).
        default_fewshot: Solved examples shown before each question by default (the
            harness's ``num_fewshot``: 5 for GSM8K, else 0).
        fewshot_files: File names tried, beside the data file, for the few-shot examples.
    """

    name: str
    kind: TaskKind
    loader: Loader
    title: str
    description: str
    default_files: tuple[str, ...]
    metrics: tuple[str, ...] = ("accuracy",)
    positive_index: int | None = None
    aliases: tuple[str, ...] = ()
    default_fewshot: int = 0
    fewshot_files: tuple[str, ...] = ()


@dataclass(frozen=True)
class TaskData:
    """Examples loaded for one evaluation run.

    Attributes:
        task: The task spec.
        path: The file read (resolved).
        examples: The examples, in file order (a seeded subsample when ``limit`` was set).
        total: Number of examples in the file before subsampling.
        limit: The ``--limit`` asked for, or ``None``.
        seed: Seed of the subsample.
    """

    task: TaskSpec
    path: Path
    examples: list[Example]
    total: int
    limit: int | None = None
    seed: int = DEFAULT_SEED
    options: LoadOptions = field(default_factory=LoadOptions)
    num_fewshot: int = 0
    fewshot_path: Path | None = None

    def __len__(self) -> int:
        return len(self.examples)


_REGISTRY: dict[str, TaskSpec] = {}
_ALIASES: dict[str, str] = {}


def register_task(
    name: str,
    *,
    kind: TaskKind,
    title: str,
    description: str,
    default_files: Sequence[str],
    metrics: Sequence[str] = ("accuracy",),
    positive_index: int | None = None,
    aliases: Sequence[str] = (),
    default_fewshot: int = 0,
    fewshot_files: Sequence[str] = (),
) -> Callable[[Loader], Loader]:
    """Register a loader under ``name`` (decorator).

    Raises:
        ValueError: ``name`` or an alias is already registered.
    """

    def deco(fn: Loader) -> Loader:
        key = _normalize_name(name)
        if key in _REGISTRY or key in _ALIASES:
            raise ValueError(f"task `{name}` is already registered")
        _REGISTRY[key] = TaskSpec(
            name=key,
            kind=kind,
            loader=fn,
            title=title,
            description=description,
            default_files=tuple(default_files),
            metrics=tuple(metrics),
            positive_index=positive_index,
            aliases=tuple(aliases),
            default_fewshot=default_fewshot,
            fewshot_files=tuple(fewshot_files),
        )
        for alias in aliases:
            _ALIASES[_normalize_name(alias)] = key
        return fn

    return deco


def _normalize_name(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def list_tasks() -> list[TaskSpec]:
    """All registered tasks, in registration order."""
    return list(_REGISTRY.values())


def get_task(name: str) -> TaskSpec:
    """Return the task registered as ``name`` (or one of its aliases).

    Raises:
        ConfigError: Unknown name; the hint lists the known ones and the closest match.
    """
    key = _normalize_name(name)
    key = _ALIASES.get(key, key)
    if key in _REGISTRY:
        return _REGISTRY[key]
    known = sorted(_REGISTRY) + sorted(_ALIASES)
    close = difflib.get_close_matches(key, known, n=1)
    did_you_mean = f"Did you mean `{close[0]}`? " if close else ""
    raise ConfigError(
        f"unknown task `{name}`",
        hint=f"{did_you_mean}Known tasks: {', '.join(sorted(_REGISTRY))}.",
    )


def resolve_data_file(task: TaskSpec, data: str | Path) -> Path:
    """Return the file to read: ``data`` itself, or the task's default file inside folder ``data``.

    Raises:
        DataError: ``data`` does not exist, or is a folder holding none of the default files.
    """
    path = Path(data).expanduser()
    if path.is_dir():
        for name in task.default_files:
            if (path / name).is_file():
                return (path / name).resolve()
        raise DataError(
            f"folder {path} holds none of the {task.title} files {', '.join(task.default_files)}",
            hint="Pass the file itself with --data (for example dev.tsv or val.jsonl).",
        )
    if not path.is_file():
        raise DataError(f"data file {path} does not exist", hint="Check the --data path.")
    return path.resolve()


def load_task(
    task: str | TaskSpec,
    data: str | Path,
    *,
    limit: int | None = None,
    seed: int = DEFAULT_SEED,
    options: LoadOptions | None = None,
    num_fewshot: int | None = None,
    fewshot_data: str | Path | None = None,
) -> TaskData:
    """Load a task's examples from ``data`` (a file, or a folder holding the task's default file).

    Args:
        task: Task name (``"boolq"``) or spec.
        data: File path or folder.
        limit: Keep a seeded random subsample of this many examples (file order kept),
            so that short runs are repeatable. ``None``: all.
        seed: Seed of the subsample.
        options: Template and verbalizers for the ``jsonl`` task.
        num_fewshot: Solved examples before each question (:func:`add_fewshot`); ``None``:
            the task's default (GSM8K 5, as the harness; others 0). Generation tasks only.
        fewshot_data: File of the few-shot examples; default the task's ``fewshot_files``
            beside ``data`` (GSM8K: ``train.jsonl``).

    Returns:
        The loaded :class:`TaskData`.

    Raises:
        ConfigError: Unknown task, ``limit < 1``, ``num_fewshot < 0``, or few-shot asked of a
            choice task.
        DataError: Missing file, wrong columns/fields, unknown label, a test split without
            labels, or no few-shot file.
    """
    spec = task if isinstance(task, TaskSpec) else get_task(task)
    opts = options or LoadOptions()
    if limit is not None and limit < 1:
        raise ConfigError(
            f"`--limit` must be at least 1, got {limit}", hint="Drop --limit to use every example."
        )
    path = resolve_data_file(spec, data)
    examples = spec.loader(path, opts)
    if not examples:
        raise DataError(f"{path} holds no examples", hint="Check that the file is not empty.")
    total = len(examples)
    shots = spec.default_fewshot if num_fewshot is None else num_fewshot
    pool_path = None
    if shots < 0:
        raise ConfigError(f"`--num-fewshot` must be 0 or more, got {shots}", hint="Pass 0 for zero-shot.")
    if shots and spec.kind != "generation":
        raise ConfigError(
            f"`--num-fewshot` applies to generation tasks (gsm8k); {spec.title} is scored zero-shot",
            hint="Drop --num-fewshot (the harness's default for this task is 0).",
        )
    if shots:
        pool_path = _fewshot_file(spec, path, fewshot_data)
        pool = [e for e in spec.loader(pool_path, opts) if isinstance(e, GenerationExample)]
        gen = [e for e in examples if isinstance(e, GenerationExample)]
        examples = list(add_fewshot(gen, pool, shots, same_split=pool_path == path))
    return TaskData(
        task=spec,
        path=path,
        examples=subsample(examples, limit, seed),
        total=total,
        limit=limit,
        seed=seed,
        options=opts,
        num_fewshot=shots,
        fewshot_path=pool_path,
    )


def _fewshot_file(spec: TaskSpec, data: Path, given: str | Path | None) -> Path:
    if given is not None:
        found = Path(given).expanduser()
        if not found.is_file():
            raise DataError(f"few-shot file {found} does not exist", hint="Check the --fewshot-data path.")
        return found.resolve()
    for name in spec.fewshot_files:
        if (data.parent / name).is_file():
            return (data.parent / name).resolve()
    raise DataError(
        f"{spec.title} few-shot examples: none of {', '.join(spec.fewshot_files)} is beside {data}",
        hint="Pass --fewshot-data FILE (the train split), or --num-fewshot 0 for zero-shot.",
    )


def add_fewshot(
    examples: Sequence[GenerationExample],
    pool: Sequence[GenerationExample],
    shots: int,
    *,
    same_split: bool = False,
    seed: int = FEWSHOT_SEED,
) -> list[GenerationExample]:
    """Give each example ``shots`` solved examples from ``pool``, drawn as lm-evaluation-harness draws them.

    Source: lm-eval 0.4 ``ContextSampler.sample`` with the default sampler: one
    ``random.Random(seed)`` draws ``rnd.sample(pool, shots)`` for each example in file
    order (``shots + 1`` and the example itself removed when the pool is the evaluated
    split). Each shot is rendered ``prompt + " " + solution + "\\n\\n"``
    (``target_delimiter``, ``fewshot_delimiter``). Draw over the whole file, then
    subsample: the first N examples get the harness's shots for its first N documents.

    Raises:
        DataError: ``pool`` holds fewer than ``shots`` examples.
    """
    need = shots + (1 if same_split else 0)
    if len(pool) < need:
        raise DataError(
            f"few-shot needs {need} solved examples, the few-shot file holds {len(pool)}",
            hint="Pass a larger --fewshot-data file or a smaller --num-fewshot.",
        )
    rnd = random.Random(seed)
    out = []
    for e in examples:
        drawn = rnd.sample(list(pool), need)
        if same_split:
            drawn = [d for d in drawn if (d.prompt, d.solution) != (e.prompt, e.solution)][:shots]
        context = "".join(d.prompt + TARGET_DELIMITER + d.solution + FEWSHOT_DELIMITER for d in drawn)
        out.append(replace(e, fewshot=context))
    return out


def subsample(examples: Sequence[Example], limit: int | None, seed: int = DEFAULT_SEED) -> list[Example]:
    """A deterministic random subsample of ``limit`` examples, kept in file order.

    The same ``(len(examples), limit, seed)`` always picks the same rows
    (``random.Random(seed).sample`` over row indices), on any machine.
    """
    if limit is None or limit >= len(examples):
        return list(examples)
    picked = sorted(random.Random(seed).sample(range(len(examples)), limit))
    return [examples[i] for i in picked]


def format_training_text(example: Example) -> str:
    """Prompt followed by the gold answer: the text a LoRA patch is trained on.

    Classification: ``prompt + " " + gold verbalizer`` (the scored continuation).
    WinoGrande: the sentence with the correct option filled in. GSM8K: the prompt and
    the reference solution.
    """
    if isinstance(example, GenerationExample):
        return example.prompt + TARGET_DELIMITER + example.solution
    context, continuation = example.requests()[example.gold]
    return context + continuation


def training_split(example: Example) -> tuple[str, str]:
    """``(context, target)`` of :func:`format_training_text`, for trainers that mask the prompt."""
    if isinstance(example, GenerationExample):
        return example.prompt, TARGET_DELIMITER + example.solution
    return example.requests()[example.gold]


# --------------------------------------------------------------------------- readers


def _read_tsv(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Read a GLUE TSV: UTF-8 with optional BOM, tab-separated, quoting off.

    Returns:
        ``(header, [(line_number, cells), ...])``; line numbers are 1-based file lines.
    """
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
            rows = list(reader)
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})",
            hint="GLUE files are UTF-8; re-export the file as UTF-8.",
        ) from exc
    if not rows:
        raise DataError(f"{path} is empty", hint="Pass a GLUE .tsv file with a header line.")
    header = [h.strip() for h in rows[0]]
    body = [(i + 2, r) for i, r in enumerate(rows[1:]) if any(c.strip() for c in r)]
    for line, cells in body:
        if len(cells) != len(header):
            raise DataError(
                f"{path} line {line} has {len(cells)} tab-separated fields, the header has {len(header)}",
                hint="GLUE TSVs are read with quoting off; check for stray tabs or a truncated line.",
            )
    return header, body


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, object]]]:
    with open(path, encoding="utf-8-sig") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"{path} line {line_no} is not valid JSON ({exc.msg})",
                    hint="Each line of a JSONL file must be one JSON object.",
                ) from exc
            if not isinstance(rec, dict):
                raise DataError(
                    f"{path} line {line_no} is a JSON {type(rec).__name__}, not an object",
                    hint="Each line of a JSONL file must be one JSON object.",
                )
            yield line_no, rec


def _read_jsonl(
    path: Path, required: Sequence[str], label: str, task: str
) -> list[tuple[int, dict[str, object]]]:
    """Read JSONL records, checking fields and refusing label-less (test) splits."""
    records = list(_iter_jsonl(path))
    if not records:
        raise DataError(f"{path} holds no JSON records", hint=f"Pass a {task} JSONL file.")
    for line_no, rec in records:
        missing = [f for f in required if f not in rec]
        if missing:
            raise DataError(
                f"{path} line {line_no} has fields {sorted(rec)}; {task} expects {[*required, label]} "
                f"(missing {missing})",
                hint=f"Pass a {task} file in its standard JSONL format.",
            )
    with_label = sum(label in rec for _, rec in records)
    if with_label == 0:
        raise DataError(
            f"{path} has no `{label}` field in any record: it looks like a test split, whose labels are hidden",
            hint="Evaluate on the validation split (for example val.jsonl or dev.jsonl).",
        )
    if with_label != len(records):
        line_no = next(n for n, rec in records if label not in rec)
        raise DataError(
            f"{path} line {line_no} has no `{label}` field", hint="Every record needs a label for evaluation."
        )
    return records


def _columns(
    path: Path,
    header: list[str],
    required: Sequence[str],
    label: str,
    task: str,
    aliases: Mapping[str, str] | None = None,
) -> dict[str, int]:
    """Map required column names (and the label) to indices, or explain what is wrong."""
    aliases = aliases or {}
    index: dict[str, int] = {}
    for i, h in enumerate(header):
        index.setdefault(aliases.get(h, h), i)
    missing = [c for c in required if c not in index]
    if missing:
        raise DataError(
            f"{path} has columns {header}; {task} expects {[*required, label]} (missing {missing})",
            hint=f"Pass the GLUE {task} .tsv file (dev.tsv or train.tsv), with its header line.",
        )
    if label not in index:
        raise DataError(
            f"{path} has columns {header} but no `{label}` column: it looks like a GLUE test split, "
            "whose labels are hidden",
            hint="Evaluate on dev.tsv (the validation split); test.tsv cannot be scored.",
        )
    return index


def _label_index(path: Path, line: int, value: object, mapping: Mapping[str, int]) -> int:
    key = str(value).strip()
    if isinstance(value, bool):
        key = "true" if value else "false"
    if key.lower() in mapping:
        return mapping[key.lower()]
    raise DataError(
        f"{path} line {line} has label {value!r}; expected one of {sorted(mapping)}",
        hint="Check that the file belongs to this task.",
    )


def _choice_tsv(
    path: Path,
    *,
    task: str,
    text_cols: Sequence[str],
    label_col: str,
    labels: Mapping[str, int],
    choices: tuple[str, ...],
    label_names: tuple[str, ...],
    prompt: Callable[[dict[str, str]], str],
    id_col: str | None = None,
    aliases: Mapping[str, str] | None = None,
) -> list[Example]:
    header, body = _read_tsv(path)
    idx = _columns(path, header, text_cols, label_col, task, aliases)
    out: list[Example] = []
    for row_no, (line, cells) in enumerate(body):
        rec = {c: cells[idx[c]] for c in text_cols}
        gold = _label_index(path, line, cells[idx[label_col]], labels)
        ex_id = cells[idx[id_col]].strip() if id_col and id_col in idx else str(row_no)
        out.append(ChoiceExample(task, ex_id, prompt(rec), choices, gold, label_names))
    return out


# --------------------------------------------------------------------------- tasks
# Prompts are lm-evaluation-harness 0.4's (lm_eval/tasks/{glue,super_glue,winogrande,gsm8k}/...yaml),
# character for character: fields are inserted as read, never stripped (the GLUE SST-2 sentences
# end with a space, and the harness keeps it). tests/integration/test_harness_parity.py checks it.

_BOOL = {"true": 1, "false": 0, "1": 1, "0": 0}


@register_task(
    "boolq",
    kind="classification",
    title="BoolQ",
    description="Yes/no questions about a Wikipedia passage (SuperGLUE JSONL).",
    default_files=("val.jsonl", "dev.jsonl", "train.jsonl"),
)
def _load_boolq(path: Path, options: LoadOptions) -> list[Example]:
    out: list[Example] = []
    for row_no, (line, rec) in enumerate(_read_jsonl(path, ("question", "passage"), "label", "BoolQ")):
        gold = _label_index(path, line, rec["label"], _BOOL)
        prompt = f"{rec['passage']}\nQuestion: {rec['question']}?\nAnswer:"
        out.append(
            ChoiceExample(
                "boolq", str(rec.get("idx", row_no)), prompt, ("no", "yes"), gold, ("false", "true")
            )
        )
    return out


@register_task(
    "sst2",
    kind="classification",
    title="SST-2",
    description="Movie-review sentence sentiment, negative/positive (GLUE TSV).",
    default_files=("dev.tsv", "train.tsv"),
    aliases=("sst-2",),
)
def _load_sst2(path: Path, options: LoadOptions) -> list[Example]:
    return _choice_tsv(
        path,
        task="SST-2",
        text_cols=("sentence",),
        label_col="label",
        labels={"0": 0, "1": 1},
        choices=("negative", "positive"),
        label_names=("0", "1"),
        prompt=lambda r: f"{r['sentence']}\nQuestion: Is this sentence positive or negative?\nAnswer:",
        aliases={"text": "sentence"},
    )


@register_task(
    "mrpc",
    kind="classification",
    title="MRPC",
    description="Do two news sentences mean the same thing? (GLUE TSV; accuracy and F1).",
    default_files=("dev.tsv", "train.tsv"),
    metrics=("accuracy", "f1"),
    positive_index=1,
)
def _load_mrpc(path: Path, options: LoadOptions) -> list[Example]:
    return _choice_tsv(
        path,
        task="MRPC",
        text_cols=("#1 String", "#2 String"),
        label_col="Quality",
        labels={"0": 0, "1": 1},
        choices=("no", "yes"),
        label_names=("0", "1"),
        prompt=lambda r: (
            f"Sentence 1: {r['#1 String']}\nSentence 2: {r['#2 String']}\n"
            "Question: Do both sentences mean the same thing?\nAnswer:"
        ),
    )


_RTE_LABELS = {"entailment": 0, "not_entailment": 1}


def _rte_prompt(premise: str, hypothesis: str) -> str:
    return f"{premise}\nQuestion: {hypothesis} True or False?\nAnswer:"


@register_task(
    "rte",
    kind="classification",
    title="RTE",
    description="Does the premise entail the hypothesis? (GLUE TSV or SuperGLUE JSONL).",
    default_files=("dev.tsv", "val.jsonl", "train.tsv"),
)
def _load_rte(path: Path, options: LoadOptions) -> list[Example]:
    choices, names = ("True", "False"), ("entailment", "not_entailment")
    if path.suffix.lower() in {".jsonl", ".json"}:
        out: list[Example] = []
        for row_no, (line, rec) in enumerate(_read_jsonl(path, ("premise", "hypothesis"), "label", "RTE")):
            gold = _label_index(path, line, rec["label"], _RTE_LABELS)
            prompt = _rte_prompt(str(rec["premise"]), str(rec["hypothesis"]))
            out.append(ChoiceExample("rte", str(rec.get("idx", row_no)), prompt, choices, gold, names))
        return out
    return _choice_tsv(
        path,
        task="RTE",
        text_cols=("sentence1", "sentence2"),
        label_col="label",
        labels=_RTE_LABELS,
        choices=choices,
        label_names=names,
        prompt=lambda r: _rte_prompt(r["sentence1"], r["sentence2"]),
        id_col="index",
    )


@register_task(
    "wnli",
    kind="classification",
    title="WNLI",
    description="Is the pronoun substitution in sentence 2 entailed? (GLUE TSV).",
    default_files=("dev.tsv", "train.tsv"),
)
def _load_wnli(path: Path, options: LoadOptions) -> list[Example]:
    return _choice_tsv(
        path,
        task="WNLI",
        text_cols=("sentence1", "sentence2"),
        label_col="label",
        labels={"0": 0, "1": 1},
        choices=("False", "True"),
        label_names=("0", "1"),
        prompt=lambda r: _rte_prompt(r["sentence1"], r["sentence2"]),
        id_col="index",
    )


@register_task(
    "winogrande",
    kind="multiple_choice",
    title="WinoGrande",
    description="Fill the blank with one of two options; partial scoring (JSONL).",
    default_files=("dev.jsonl", "train.jsonl"),
)
def _load_winogrande(path: Path, options: LoadOptions) -> list[Example]:
    out: list[Example] = []
    records = _read_jsonl(path, ("sentence", "option1", "option2"), "answer", "WinoGrande")
    for row_no, (line, rec) in enumerate(records):
        sentence = str(rec["sentence"])
        if sentence.count("_") < 1:
            raise DataError(
                f"{path} line {line}: `sentence` has no `_` blank",
                hint="WinoGrande sentences mark the blank with one underscore.",
            )
        gold = _label_index(path, line, rec["answer"], {"1": 0, "2": 1})
        blank = sentence.index("_")
        options_ = (str(rec["option1"]), str(rec["option2"]))
        continuation = TARGET_DELIMITER + sentence[blank + 1 :].strip()
        partial = tuple((sentence[:blank] + opt, continuation) for opt in options_)
        out.append(
            ChoiceExample(
                "winogrande", str(rec.get("qID", row_no)), sentence, options_, gold, ("1", "2"), partial
            )
        )
    return out


@register_task(
    "gsm8k",
    kind="generation",
    title="GSM8K",
    description="Grade-school math word problems; greedy generation, exact match on the final number (JSONL).",
    default_files=("test.jsonl", "train.jsonl"),
    default_fewshot=5,
    fewshot_files=("train.jsonl",),
)
def _load_gsm8k(path: Path, options: LoadOptions) -> list[Example]:
    out: list[Example] = []
    for row_no, (line, rec) in enumerate(_read_jsonl(path, ("question",), "answer", "GSM8K")):
        solution = str(rec["answer"])
        answer = gsm8k_gold_answer(solution)
        if not answer:
            raise DataError(
                f"{path} line {line}: `answer` has no `#### <number>` final line",
                hint="GSM8K answers end with a line `#### <number>`.",
            )
        prompt = f"Question: {rec['question']}\nAnswer:"
        out.append(GenerationExample("gsm8k", str(row_no), prompt, answer, solution))
    return out


DEFAULT_JSONL_TEMPLATE = "{text}\nAnswer:"


@register_task(
    "jsonl",
    kind="classification",
    title="Custom JSONL",
    description="Your own data: JSONL with `text` and `label` fields, an optional prompt template and verbalizers.",
    default_files=("dev.jsonl", "val.jsonl", "test.jsonl", "train.jsonl"),
    aliases=("custom",),
)
def _load_custom_jsonl(path: Path, options: LoadOptions) -> list[Example]:
    records = _read_jsonl(path, ("text",), "label", "the custom task")
    template = options.template or DEFAULT_JSONL_TEMPLATE

    def key(value: object) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value).strip()

    if options.verbalizers:
        label_names = tuple(str(k) for k in options.verbalizers)
        choices = tuple(str(v).strip() for v in options.verbalizers.values())
    else:
        label_names = tuple(sorted({key(rec["label"]) for _, rec in records}))
        choices = label_names
    if len(label_names) < 2:
        raise DataError(
            f"{path} has only one distinct label {list(label_names)}",
            hint="Classification needs at least two labels (or pass verbalizers for all classes).",
        )
    mapping = {name.lower(): i for i, name in enumerate(label_names)}
    out: list[Example] = []
    for row_no, (line, rec) in enumerate(records):
        gold = _label_index(path, line, key(rec["label"]), mapping)
        try:
            prompt = template.format(**{k: v for k, v in rec.items() if isinstance(k, str)})
        except (KeyError, IndexError) as exc:
            raise DataError(
                f"prompt template {template!r} uses field {exc} that {path} line {line} does not have "
                f"(fields: {sorted(rec)})",
                hint="Use {text} or another field present in every record.",
            ) from exc
        out.append(
            ChoiceExample(
                "jsonl", str(rec.get("id", rec.get("idx", row_no))), prompt, choices, gold, label_names
            )
        )
    return out


def parse_verbalizers(items: Sequence[str]) -> dict[str, str]:
    """Parse ``LABEL=WORD`` strings (the CLI's ``--verbalizer``) into an ordered mapping.

    Raises:
        ConfigError: An item without ``=`` or a repeated label.
    """
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(
                f"verbalizer `{item}` is not LABEL=WORD",
                hint="Write for example --verbalizer 0=negative --verbalizer 1=positive.",
            )
        label, word = item.split("=", 1)
        if label.strip() in out:
            raise ConfigError(
                f"verbalizer label `{label.strip()}` is given twice", hint="Give each label once."
            )
        out[label.strip()] = word.strip()
    return out
