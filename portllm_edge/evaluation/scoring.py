"""Score a loaded causal LM on task examples: choice log-likelihoods, partial scoring, greedy generation.

Why this module exists: every accuracy number in a PortLLM comparison (new base
zero-shot, old base + patch, new base + ported patch, new base + own LoRA) must come
from the same scoring code, the way lm-eval-harness computes it:

* classification: the summed log-probability of each verbalized choice
  (``" yes"``) given the prompt; the prediction is the arg-max choice;
* WinoGrande "partial" scoring (Sakaguchi et al., 2019; harness ``winogrande``): the
  log-probability of the sentence *after* the blank, conditioned on the prefix with
  each option filled in;
* GSM8K: greedy generation (few-shot by default, as the harness), then its exact-match filters.

It receives a model object (any ``transformers`` causal LM or ``peft`` model) and its
tokenizer; it must not load models, read task files or print. torch is imported
lazily inside functions, so that importing the evaluation package stays cheap.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from portllm_edge.errors import EvaluationError
from portllm_edge.evaluation.encoding import encode_pair, special_prefix
from portllm_edge.evaluation.metrics import (
    INVALID,
    gsm8k_flexible_extract,
    gsm8k_strict_extract,
    harness_exact_match,
)
from portllm_edge.evaluation.results import EvalResult, Prediction
from portllm_edge.evaluation.tasks import ChoiceExample, Example, GenerationExample, TaskData

if TYPE_CHECKING:
    import torch

Normalization = Literal["none", "tokens", "chars", "bytes"]
NORMALIZATIONS: tuple[str, ...] = ("none", "tokens", "chars", "bytes")
Progress = Callable[[int, int], None]
"""``progress(done, total)``: called after each batch; units are scored requests or prompts."""

DEFAULT_STOP = ("Question:", "</s>", "<|im_end|>")
"""GSM8K stop strings (lm-eval-harness ``gsm8k`` ``until``)."""


@dataclass(frozen=True)
class ContinuationScore:
    """Log-likelihood of one continuation given its context.

    Attributes:
        logprob: Sum over continuation tokens of log p(token | preceding tokens), in nats.
        n_tokens: Number of continuation tokens scored.
        n_bytes: UTF-8 length of the continuation text, in bytes.
        greedy: Whether every continuation token is the arg-max of its distribution.
    """

    logprob: float
    n_tokens: int
    n_bytes: int
    greedy: bool


@dataclass(frozen=True)
class _Encoded:
    tokens: list[int]
    ctx_len: int
    n_bytes: int


def _model_device(model: Any) -> torch.device:
    import torch

    dev = getattr(model, "device", None)
    if isinstance(dev, torch.device):
        return dev
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _pad_id(tokenizer: Any) -> int:
    for attr in ("pad_token_id", "eos_token_id", "bos_token_id"):
        value = getattr(tokenizer, attr, None)
        if isinstance(value, int):
            return value
    return 0


def _max_length(model: Any, tokenizer: Any, max_length: int | None) -> int:
    if max_length is not None:
        return max_length
    cfg = getattr(model, "config", None)
    limit = getattr(cfg, "max_position_embeddings", None)
    if isinstance(limit, int) and limit > 0:
        return limit
    tml = getattr(tokenizer, "model_max_length", None)
    if isinstance(tml, int) and 0 < tml < 10**7:
        return tml
    return 2048


def _encode_request(
    tokenizer: Any, context: str, continuation: str, prefix: list[int], max_len: int
) -> _Encoded:
    """Tokenize one request with :func:`~portllm_edge.evaluation.encoding.encode_pair` and fit it to the window.

    As lm-evaluation-harness's ``HFLM._loglikelihood_tokens``: the last ``max_len + 1``
    tokens of ``context + continuation`` are kept (long inputs lose tokens on the left),
    and the model reads all but the last of them; the continuation is kept whole.
    """
    pair = encode_pair(tokenizer, context, continuation, prefix=prefix)
    cont = pair.continuation
    if len(cont) > max_len:
        raise EvaluationError(
            f"continuation {continuation[:40]!r}... is {len(cont)} tokens, over the model's {max_len}-token window",
            hint="Shorten the verbalizer or pass a larger max_length.",
        )
    tokens = (pair.context + cont)[-(max_len + 1) :]
    return _Encoded(tokens, len(tokens) - len(cont), len(pair.continuation_text.encode("utf-8")))


@dataclass(frozen=True)
class _Unit:
    """One row of a forward pass: ``tokens`` and the requests scored from it.

    Requests with a one-token continuation after the same context share a unit: the
    logits at the last context position score every such choice at once (the
    lm-eval-harness one-token-continuation shortcut), which halves the work of a
    binary classification task.
    """

    tokens: list[int]
    ctx_len: int
    members: tuple[int, ...]


def _group_units(encoded: Sequence[_Encoded]) -> list[_Unit]:
    units: list[_Unit] = []
    shared: dict[tuple[int, ...], list[int]] = {}
    for i, e in enumerate(encoded):
        if len(e.tokens) - e.ctx_len == 1:
            shared.setdefault(tuple(e.tokens[: e.ctx_len]), []).append(i)
        else:
            units.append(_Unit(e.tokens, e.ctx_len, (i,)))
    for members in shared.values():
        e = encoded[members[0]]
        units.append(_Unit(e.tokens, e.ctx_len, tuple(members)))
    return units


def _supports_logits_to_keep(model: Any) -> bool:
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return "logits_to_keep" in inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return False


class _EvalMode:
    """Put the model in eval mode for the block and restore its previous mode after.

    Also hands the output head (``lm_head``) a contiguous input for the block. ``logits_to_keep``
    slices the hidden states to a strided view; with a frozen head (``requires_grad=False``, as
    every peft-attached base has) a bf16 CPU ``linear`` over that view materialized one copy of
    the head's weight per batch row: 432 MiB for SmolLM2-135M at batch 8 (8 x 49152 x 576 x 2
    bytes), measured with RssAnon around the head's forward. The copy of the kept rows costs
    ``b x k x H`` elements.
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        self.was_training = bool(getattr(model, "training", False))
        self.hook: Any = None

    def __enter__(self) -> None:
        self.model.eval()
        head = self.model.get_output_embeddings() if hasattr(self.model, "get_output_embeddings") else None
        if head is not None:
            self.hook = head.register_forward_pre_hook(_contiguous_input)

    def __exit__(self, *exc: object) -> None:
        if self.hook is not None:
            self.hook.remove()
        if self.was_training:
            self.model.train()


def _contiguous_input(_module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(a.contiguous() if hasattr(a, "contiguous") else a for a in args)


def score_continuations(
    model: Any,
    tokenizer: Any,
    requests: Sequence[tuple[str, str]],
    *,
    batch_size: int = 8,
    max_length: int | None = None,
    progress: Progress | None = None,
) -> tuple[list[ContinuationScore], int]:
    """Log-likelihood of each ``(context, continuation)`` pair under a causal LM.

    Requests are sorted longest first and batched with right padding (requests that
    share a context and have one-token continuations share one row); each item's
    score is ``sum_t log_softmax(logits[t-1])[token_t]`` over its continuation tokens,
    computed in float32 from the model's logits. Only the logit rows that some item in
    the batch needs are materialized (``logits_to_keep``) when the model supports it,
    which bounds memory for long BoolQ passages.

    Args:
        model: A causal LM (``transformers`` or ``peft``), already on its device.
        tokenizer: Its tokenizer.
        requests: ``(context, continuation)`` pairs; the continuation normally starts
            with a space (``"...Answer:"``, ``" yes"``).
        batch_size: Requests per forward pass (>= 1).
        max_length: Token window; default the model's ``max_position_embeddings``.
        progress: Called with ``(done, total)`` after each batch.

    Returns:
        ``(scores in request order, tokens processed)``; tokens counts non-padding input tokens.

    Raises:
        EvaluationError: ``batch_size < 1`` or a continuation that can't be scored.
    """
    import torch

    if batch_size < 1:
        raise EvaluationError(
            f"`batch_size` must be at least 1, got {batch_size}", hint="Pass --batch-size 1 or more."
        )
    prefix = special_prefix(tokenizer)
    max_len = _max_length(model, tokenizer, max_length)
    encoded = [_encode_request(tokenizer, c, x, prefix, max_len) for c, x in requests]
    units = _group_units(encoded)
    order = sorted(range(len(units)), key=lambda u: -len(units[u].tokens))
    device = _model_device(model)
    pad = _pad_id(tokenizer)
    keep_ok = _supports_logits_to_keep(model)
    results: list[ContinuationScore | None] = [None] * len(encoded)
    n_tokens = 0
    done = 0
    with _EvalMode(model), torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = [units[u] for u in order[start : start + batch_size]]
            # the model reads every token but the last: no logit row predicts past the end
            width = max(len(u.tokens) - 1 for u in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, u in enumerate(batch):
                ids[row, : len(u.tokens) - 1] = torch.tensor(u.tokens[:-1], dtype=torch.long)
                mask[row, : len(u.tokens) - 1] = 1
            first = min(u.ctx_len - 1 for u in batch)  # earliest logit row any item needs
            kwargs: dict[str, Any] = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
            if keep_ok:
                kwargs["logits_to_keep"] = width - first
            logits = model(**kwargs).logits
            offset = width - logits.shape[1]  # 0 without logits_to_keep
            for row, u in enumerate(batch):
                for i in u.members:
                    e = encoded[i]
                    cont = e.tokens[e.ctx_len :]
                    rows = logits[row, u.ctx_len - 1 - offset : u.ctx_len - 1 - offset + len(cont)].float()
                    target = torch.tensor(cont, dtype=torch.long, device=rows.device)
                    logp = torch.log_softmax(rows, dim=-1)
                    token_lp = logp.gather(1, target.unsqueeze(1)).squeeze(1)
                    greedy = bool((rows.argmax(dim=-1) == target).all())
                    results[i] = ContinuationScore(float(token_lp.sum()), len(cont), e.n_bytes, greedy)
                done += len(u.members)
            n_tokens += int(mask.sum())
            if progress is not None:
                progress(done, len(encoded))
    return [r for r in results if r is not None], n_tokens


class _StopOnStrings:
    """A ``transformers`` stopping criterion: a row is done once its new text holds a stop string."""

    def __init__(self, tokenizer: Any, stops: Sequence[str], prompt_width: int, window: int = 24) -> None:
        self.tokenizer = tokenizer
        self.stops = tuple(stops)
        self.prompt_width = prompt_width
        self.window = window

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        import torch

        new = input_ids[:, self.prompt_width :]
        done = []
        for row in new:
            tail = self.tokenizer.decode(row[-self.window :], skip_special_tokens=False)
            done.append(any(s in tail for s in self.stops))
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def _truncate_at_stop(text: str, stops: Sequence[str]) -> str:
    cut = len(text)
    for s in stops:
        pos = text.find(s)
        if pos != -1:
            cut = min(cut, pos)
    return text[:cut]


def generate_greedy(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 256,
    batch_size: int = 8,
    stop: Sequence[str] = DEFAULT_STOP,
    progress: Progress | None = None,
) -> tuple[list[str], int]:
    """Greedy continuations of ``prompts``, cut at the first stop string.

    Prompts are batched with **left** padding (decoder-only generation needs the last
    real token at the same position in every row).

    Args:
        model: A causal LM or peft model.
        tokenizer: Its tokenizer.
        prompts: Texts to continue.
        max_new_tokens: Generation budget per prompt (>= 1).
        batch_size: Prompts per ``generate`` call (>= 1).
        stop: Strings that end an answer (kept out of the returned text).
        progress: Called with ``(done, total)`` after each batch.

    Returns:
        ``(continuations in prompt order, tokens processed)``; tokens counts non-padding
        prompt tokens plus generated tokens.

    Raises:
        EvaluationError: ``batch_size`` or ``max_new_tokens`` below 1.
    """
    import torch
    from transformers import GenerationConfig, StoppingCriteriaList

    if batch_size < 1 or max_new_tokens < 1:
        raise EvaluationError(
            f"`batch_size` ({batch_size}) and `max_new_tokens` ({max_new_tokens}) must be at least 1",
            hint="Pass positive values.",
        )
    prefix = special_prefix(tokenizer)
    pad = _pad_id(tokenizer)
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = getattr(tokenizer, "eos_token_id", None)
    device = _model_device(model)
    max_len = _max_length(model, tokenizer, None)
    encoded = [prefix + list(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    encoded = [e[-max(1, max_len - max_new_tokens) :] for e in encoded]
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    outputs: list[str] = [""] * len(encoded)
    n_tokens = 0
    gen_cfg = GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, pad_token_id=pad, eos_token_id=eos
    )
    with _EvalMode(model), torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            width = max(len(encoded[i]) for i in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                e = encoded[i]
                ids[row, width - len(e) :] = torch.tensor(e, dtype=torch.long)
                mask[row, width - len(e) :] = 1
            out = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                generation_config=gen_cfg,
                stopping_criteria=StoppingCriteriaList([_StopOnStrings(tokenizer, stop, width)]),
            )
            n_tokens += int(mask.sum())
            for row, i in enumerate(batch):
                new = out[row, width:].tolist()
                if eos is not None:
                    eos_ids = set(eos) if isinstance(eos, list) else {eos}
                    for k, tok in enumerate(new):
                        if tok in eos_ids:
                            new = new[: k + 1]
                            break
                n_tokens += len(new)
                text = tokenizer.decode(new, skip_special_tokens=True)
                outputs[i] = _truncate_at_stop(text, stop).strip()
            if progress is not None:
                progress(min(start + batch_size, len(order)), len(order))
    return outputs, n_tokens


def extract_answer(output: str) -> str | None:
    """The GSM8K answer lm-eval's "flexible-extract" filter takes: the last number-like token, or ``None``."""
    found = gsm8k_flexible_extract(output)
    return None if found == INVALID else found


def normalized_score(score: ContinuationScore, normalization: Normalization, choice_text: str) -> float:
    """A choice's score under ``normalization``.

    Source: lm-evaluation-harness 0.4 ``ConfigurableTask.process_results`` (multiple choice):
    ``acc`` ranks the summed log-likelihoods (``"none"``); ``acc_norm`` divides them by
    ``len(choice)`` in characters (``"chars"``); ``acc_bytes`` by its UTF-8 length
    (``"bytes"``). ``choice`` is the harness's ``doc_to_choice`` string, without the
    target delimiter (:meth:`~portllm_edge.evaluation.tasks.ChoiceExample.choice_texts`).
    ``"tokens"`` divides by the number of continuation tokens (not a harness metric).
    """
    if normalization == "tokens":
        return score.logprob / max(1, score.n_tokens)
    if normalization == "chars":
        return score.logprob / max(1, len(choice_text))
    if normalization == "bytes":
        return score.logprob / max(1, len(choice_text.encode("utf-8")))
    return score.logprob


def _argmax(values: Sequence[float]) -> int:
    """Index of the largest value; the first one on ties (``numpy.argmax``, as the harness)."""
    return max(range(len(values)), key=lambda j: (values[j], -j))


def evaluate(
    model: Any,
    tokenizer: Any,
    data: TaskData | Sequence[Example],
    *,
    task: str | None = None,
    batch_size: int = 8,
    normalization: Normalization = "none",
    max_new_tokens: int = 256,
    keep_predictions: bool = False,
    progress: Progress | None = None,
) -> EvalResult:
    """Score ``model`` on the examples of one task and summarize as an :class:`EvalResult`.

    Args:
        model: A causal LM or peft model, on its device.
        tokenizer: Its tokenizer.
        data: Loaded task data (:func:`~portllm_edge.evaluation.tasks.load_task`) or a
            list of examples of one kind.
        task: Task name for the record; default taken from ``data``.
        batch_size: Forward-pass batch size.
        normalization: Which choice score picks the prediction (:func:`normalized_score`):
            summed log-probability (``"none"``, the harness's ``acc``), per character of
            the choice (``"chars"``, the harness's ``acc_norm``), per UTF-8 byte
            (``"bytes"``, ``acc_bytes``) or per token (``"tokens"``). ``acc_norm`` is
            reported for choice tasks whatever this is.
        max_new_tokens: Generation budget (GSM8K).
        keep_predictions: Keep per-example predictions in the result.
        progress: ``(done, total)`` callback, in examples (choice tasks score several
            continuations per example, batched longest first: ``done`` is the scored
            continuations scaled to examples, and ends at ``total`` = examples).

    Returns:
        The result: accuracy, Wilson 95 % interval, ``acc_norm`` (choice tasks), F1 (MRPC),
        seconds, tokens/s. GSM8K: ``accuracy`` is lm-eval's "flexible-extract" exact match and
        ``strict_match`` its "strict-match" (:mod:`portllm_edge.evaluation.metrics`); the
        prompts carry the examples' few-shot context.

    Raises:
        EvaluationError: No examples, mixed example kinds, or bad options.
    """
    examples = list(data.examples if isinstance(data, TaskData) else data)
    if not examples:
        raise EvaluationError("no examples to evaluate", hint="Check the data file and --limit.")
    positive = data.task.positive_index if isinstance(data, TaskData) else None
    name = task or (data.task.name if isinstance(data, TaskData) else examples[0].task)
    if normalization not in NORMALIZATIONS:
        raise EvaluationError(
            f"unknown normalization `{normalization}`", hint=f"Use one of {', '.join(NORMALIZATIONS)}."
        )
    options: dict[str, Any] = {"batch_size": batch_size}
    t0 = time.perf_counter()
    predictions: list[Prediction] = []
    if all(isinstance(e, GenerationExample) for e in examples):
        gen = [e for e in examples if isinstance(e, GenerationExample)]
        outputs, tokens = generate_greedy(
            model,
            tokenizer,
            [e.context for e in gen],
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            progress=progress,
        )
        for g, out in zip(gen, outputs, strict=True):
            flexible, strict = gsm8k_flexible_extract(out), gsm8k_strict_extract(out)
            predictions.append(
                Prediction(
                    g.id,
                    None if flexible == INVALID else flexible,
                    g.answer,
                    harness_exact_match(flexible, g.solution),
                    None,
                    out,
                    correct_strict=harness_exact_match(strict, g.solution),
                )
            )
        options["max_new_tokens"] = max_new_tokens
        options["num_fewshot"] = data.num_fewshot if isinstance(data, TaskData) else None
    elif all(isinstance(e, ChoiceExample) for e in examples):
        choice = [e for e in examples if isinstance(e, ChoiceExample)]
        flat: list[tuple[str, str]] = []
        for c in choice:
            flat.extend(c.requests())
        per_example = None
        if progress is not None:
            report = progress  # bound now: mypy keeps the narrowing inside the closure

            def per_example(done: int, total: int) -> None:
                report(done * len(choice) // max(1, total), len(choice))

        scores, tokens = score_continuations(
            model, tokenizer, flat, batch_size=batch_size, progress=per_example
        )
        pos = 0
        for c in choice:
            k = len(c.choices)
            mine = scores[pos : pos + k]
            pos += k
            texts = c.choice_texts()
            values = tuple(normalized_score(s, normalization, t) for s, t in zip(mine, texts, strict=True))
            pred = _argmax(values)
            pred_norm = _argmax([normalized_score(s, "chars", t) for s, t in zip(mine, texts, strict=True)])
            predictions.append(
                Prediction(c.id, pred, c.gold, pred == c.gold, values, None, predicted_norm=pred_norm)
            )
        options["normalization"] = normalization
    else:
        raise EvaluationError("examples mix generation and choice tasks", hint="Evaluate one task at a time.")
    seconds = time.perf_counter() - t0
    return EvalResult.from_predictions(
        name,
        predictions,
        seconds=seconds,
        tokens=tokens,
        positive=positive,
        options=options,
        keep_predictions=keep_predictions,
    )
