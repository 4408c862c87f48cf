"""Evaluation: task loaders (BoolQ, SST-2, MRPC, RTE, WNLI, WinoGrande, GSM8K, your own JSONL), metrics, scoring.

Public API (importing this package does not import torch):

* :func:`load_task` -> :class:`TaskData` of :class:`ChoiceExample` / :class:`GenerationExample`;
* :func:`format_training_text` — the text a patch is trained on (prompt + gold answer);
* :func:`portllm_edge.evaluation.scoring.evaluate` (model, tokenizer, data) -> :class:`EvalResult`.
"""

from __future__ import annotations

from portllm_edge.evaluation.results import EvalResult, Prediction
from portllm_edge.evaluation.tasks import (
    ChoiceExample,
    Example,
    GenerationExample,
    LoadOptions,
    TaskData,
    TaskSpec,
    format_training_text,
    get_task,
    list_tasks,
    load_task,
    register_task,
    training_split,
)

__all__ = [
    "ChoiceExample",
    "EvalResult",
    "Example",
    "GenerationExample",
    "LoadOptions",
    "Prediction",
    "TaskData",
    "TaskSpec",
    "format_training_text",
    "get_task",
    "list_tasks",
    "load_task",
    "register_task",
    "training_split",
]
