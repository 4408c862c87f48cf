"""lm-evaluation-harness task configs over our local task files, and a side-by-side runner.

Used by tests/integration/test_harness_parity.py and benchmarks/harness_parity.py.
Each config takes the harness's own built-in task (its YAML in the installed
``lm_eval`` package: ``glue/sst2``, ``super_glue/boolq``, ``glue/rte``, ``glue/mrpc``,
``glue/wnli``, ``winogrande``) and changes only where the documents come from: a
local ``json``/``csv`` file through ``datasets`` (no hub), plus ``process_docs`` that
maps our files' columns and label strings onto the hub datasets' fields (MRPC's
``#1 String`` -> ``sentence1``, RTE's ``entailment`` -> 0, BoolQ's ``"true"`` -> 1).
Prompts (``doc_to_text``), choices and the target delimiter stay the harness's.
"""

from __future__ import annotations

import csv
import functools
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TASKS = ("sst2", "boolq", "rte", "winogrande", "mrpc", "wnli")

# our task -> (harness yaml under lm_eval/tasks, data file under shared/data/<task>/)
_SOURCES = {
    "sst2": ("glue/sst2/default.yaml", "dev.tsv"),
    "boolq": ("super_glue/boolq/default.yaml", "val.jsonl"),
    "rte": ("glue/rte/default.yaml", "dev.tsv"),
    "mrpc": ("glue/mrpc/default.yaml", "dev.tsv"),
    "wnli": ("glue/wnli/default.yaml", "dev.tsv"),
    "winogrande": ("winogrande/default.yaml", "dev.jsonl"),
}

# pandas must read GLUE TSVs as GLUE does: tab-separated, quoting off, no "NA" guessing
_TSV = {"delimiter": "\t", "quoting": csv.QUOTE_NONE, "keep_default_na": False}


def _boolq(doc: dict[str, Any]) -> dict[str, Any]:
    return {"label": 1 if str(doc["label"]).strip().lower() == "true" else 0}


def _int_label(doc: dict[str, Any]) -> dict[str, Any]:
    return {"label": int(doc["label"])}


def _rte(doc: dict[str, Any]) -> dict[str, Any]:
    return {"label": {"entailment": 0, "not_entailment": 1}[doc["label"].strip()]}


def _mrpc(doc: dict[str, Any]) -> dict[str, Any]:
    return {"sentence1": doc["#1 String"], "sentence2": doc["#2 String"], "label": int(doc["Quality"])}


_MAPPERS = {"sst2": _int_label, "boolq": _boolq, "rte": _rte, "mrpc": _mrpc, "wnli": _int_label}


@functools.cache
def task_manager() -> Any:
    """The harness's ``TaskManager``, built once per process: it indexes every built-in task YAML
    (~5 s on 2 cores), which ``simple_evaluate`` would otherwise redo on each call. ``metadata={}``
    is what ``simple_evaluate`` builds for a model passed as an ``LM`` object."""
    from lm_eval.tasks import TaskManager

    return TaskManager(metadata={})


def data_file(task: str, shared_data: Path) -> Path:
    """Our file for ``task`` under ``shared_data`` (``sst2/dev.tsv``)."""
    return shared_data / task / _SOURCES[task][1]


def harness_config(task: str, shared_data: Path, *, metrics: tuple[str, ...] = ("acc", "acc_norm")) -> dict:
    """The harness's built-in ``task`` as a config dict reading our local file."""
    import lm_eval
    import yaml

    yaml_rel, _ = _SOURCES[task]
    path = Path(lm_eval.__file__).parent / "tasks" / yaml_rel
    if task == "winogrande":  # its YAML uses !function tags: take the functions themselves
        wg = importlib.import_module("lm_eval.tasks.winogrande.preprocess_winogrande")
        base: dict[str, Any] = {
            "doc_to_text": wg.doc_to_text,
            "doc_to_target": wg.doc_to_target,
            "doc_to_choice": wg.doc_to_choice,
        }
    else:
        raw = yaml.safe_load(path.read_text())
        base = {k: raw[k] for k in ("doc_to_text", "doc_to_target", "doc_to_choice")}
    file = data_file(task, shared_data)
    kwargs: dict[str, Any] = {"data_files": {"validation": str(file)}}
    if file.suffix == ".tsv":
        kwargs.update(_TSV)
    mapper = _MAPPERS.get(task)
    cfg: dict[str, Any] = {
        "task": f"local_{task}",
        "dataset_path": "json" if file.suffix == ".jsonl" else "csv",
        "dataset_kwargs": kwargs,
        "output_type": "multiple_choice",
        "validation_split": "validation",
        **base,
        "metric_list": [{"metric": m} for m in metrics],
    }
    if mapper is not None:
        cfg["process_docs"] = lambda ds, _m=mapper: _remap(ds, _m)
    return cfg


def _remap(ds: Any, fn: Any) -> Any:
    """``ds.map(fn)`` with ``label`` typed int64 (else ``datasets`` casts the new int back to the file's str)."""
    import datasets

    features = datasets.Features(dict(ds.features))
    features["label"] = datasets.Value("int64")
    for name in fn(ds[0]):
        if name not in features:
            features[name] = datasets.Value("string")
    return ds.map(fn, features=features)


@dataclass(frozen=True)
class Side:
    """One side's per-example results: log-likelihood per choice, the acc pick, acc_norm's verdict."""

    lls: list[tuple[float, ...]]
    pred: list[int]
    correct_norm: list[bool]
    gold: list[int]
    acc: float
    acc_norm: float


def run_harness(model_dir: Path, task: str, shared_data: Path, limit: int, batch_size: int = 8) -> Side:
    """Run the harness's ``HFLM`` (fp32, CPU) on the first ``limit`` documents of ``task``."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=str(model_dir), dtype="float32", device="cpu", batch_size=batch_size)
    out = lm_eval.simple_evaluate(
        model=lm,
        tasks=[harness_config(task, shared_data)],
        limit=limit,
        log_samples=True,
        bootstrap_iters=0,
        task_manager=task_manager(),
    )
    name = f"local_{task}"
    samples = sorted(out["samples"][name], key=lambda s: s["doc_id"])
    lls = [tuple(float(r[0]) for r in s["filtered_resps"]) for s in samples]
    res = out["results"][name]
    return Side(
        lls=lls,
        pred=[max(range(len(x)), key=lambda j, x=x: (x[j], -j)) for x in lls],
        correct_norm=[bool(s["acc_norm"]) for s in samples],  # the harness logs acc_norm's verdict only
        # multiple-input tasks (WinoGrande) keep the gold index in doc_to_text, others in doc_to_target
        gold=[int(s["target"]) if task != "winogrande" else int(s["doc"]["answer"]) - 1 for s in samples],
        acc=float(res["acc,none"]),
        acc_norm=float(res["acc_norm,none"]),
    )


def run_ours(model_dir: Path, task: str, shared_data: Path, limit: int, batch_size: int = 8) -> Side:
    """Our :func:`~portllm_edge.evaluation.scoring.evaluate` on the same first ``limit`` examples."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from portllm_edge.evaluation.scoring import evaluate
    from portllm_edge.evaluation.tasks import load_task

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(model_dir)
    examples = load_task(task, data_file(task, shared_data)).examples[:limit]
    r = evaluate(model, tok, examples, batch_size=batch_size, keep_predictions=True)
    assert r.predictions is not None and r.acc_norm is not None
    return Side(
        lls=[tuple(p.scores or ()) for p in r.predictions],
        pred=[int(p.predicted) for p in r.predictions],  # type: ignore[arg-type]
        correct_norm=[p.predicted_norm == p.gold for p in r.predictions],
        gold=[int(p.gold) for p in r.predictions],
        acc=r.accuracy,
        acc_norm=r.acc_norm,
    )
