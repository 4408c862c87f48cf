"""One tokenization of a ``(context, continuation)`` pair, shared by training and scoring.

Why this module exists: a patch is trained to put mass on the tokens of its target
("... Answer:" + " positive"), and evaluation scores the log-likelihood of that same
continuation. If the two steps tokenize the pair differently, the patch is trained on
tokens that evaluation never scores. That happens with SentencePiece tokenizers that
add a prefix space (Llama-2, Mistral <= v0.3): encoded alone, ``" positive"`` becomes
``["▁", "▁positive"]`` or ``["▁▁positive"]``, while inside ``"Answer: positive"`` it is
``["▁positive"]``. Both :mod:`portllm_edge.training.batches` and
:mod:`portllm_edge.evaluation.scoring` call :func:`encode_pair`, which follows
lm-evaluation-harness (``lm_eval/api/model.py``, ``TemplateLM._encode_pair``): trailing
whitespace of the context moves to the continuation, the whole string and the context
are encoded, and the continuation's tokens are the tail of the whole encoding.

It imports neither torch nor transformers; the tokenizer is any object with the
``transformers`` call signature (``tokenizer(text, add_special_tokens=...)["input_ids"]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from portllm_edge.errors import EvaluationError


@dataclass(frozen=True)
class EncodedPair:
    """Token ids of one ``(context, continuation)`` pair.

    Attributes:
        context: The tokenizer's special prefix (a BOS for Llama-style tokenizers) followed by
            the context's tokens; never empty (an empty context becomes the BOS, else EOS, id,
            as the harness's ``prefix_token_id``).
        continuation: The continuation's tokens: the tail of the encoding of
            ``context + continuation`` after the context's own encoding; never empty.
        continuation_text: The continuation as encoded, with the context's trailing whitespace
            moved onto it (``" positive"``).
    """

    context: list[int]
    continuation: list[int]
    continuation_text: str


def special_prefix(tokenizer: Any) -> list[int]:
    """Tokens the tokenizer puts before text by default.

    A BOS for Llama/Mistral/Gemma tokenizers; none for GPT-2-style tokenizers (SmolLM2).
    Found by encoding ``"a"`` with and without special tokens.
    """
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    with_sp = tokenizer("a")["input_ids"]
    for k in range(len(with_sp) - len(plain) + 1):
        if with_sp[k : k + len(plain)] == plain:
            return list(with_sp[:k])
    return []


def move_trailing_whitespace(context: str, continuation: str) -> tuple[str, str]:
    """Move the context's trailing whitespace to the front of the continuation.

    ``("Answer: ", "yes")`` -> ``("Answer:", " yes")``, as the harness does, so that the
    space is tokenized with the word it precedes.
    """
    n_space = len(context) - len(context.rstrip())
    if n_space:
        return context[:-n_space], context[-n_space:] + continuation
    return context, continuation


def _empty_context_token(tokenizer: Any) -> int:
    for attr in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = getattr(tokenizer, attr, None)
        if isinstance(value, int):
            return value
    return 0


def encode_pair(
    tokenizer: Any, context: str, continuation: str, *, prefix: list[int] | None = None
) -> EncodedPair:
    """Tokenize ``context + continuation`` so that the continuation's tokens are known.

    Source: lm-evaluation-harness 0.4 ``TemplateLM._encode_pair`` and ``loglikelihood``
    (causal backend): ``whole = enc(context + continuation)``, ``ctx = enc(context)``,
    ``continuation = whole[len(ctx):]``. An empty context is replaced by one BOS (else EOS)
    token and the continuation is encoded alone.

    Args:
        tokenizer: A ``transformers`` tokenizer.
        context: Conditioning text (``"...\\nAnswer:"``), may be empty.
        continuation: Text to score or train on (``" positive"``).
        prefix: The tokenizer's special prefix when already known (:func:`special_prefix`);
            computed when ``None``.

    Returns:
        The :class:`EncodedPair`.

    Raises:
        EvaluationError: the continuation encodes to zero tokens.
    """
    prefix = special_prefix(tokenizer) if prefix is None else prefix
    context, continuation = move_trailing_whitespace(context, continuation)
    if context:
        whole = list(tokenizer(context + continuation, add_special_tokens=False)["input_ids"])
        ctx = list(tokenizer(context, add_special_tokens=False)["input_ids"])
        cont = whole[len(ctx) :]
    else:
        ctx, cont = [], list(tokenizer(continuation, add_special_tokens=False)["input_ids"])
    if not cont:
        raise EvaluationError(
            f"continuation {continuation!r} after context {context[-40:]!r} encodes to zero tokens",
            hint="Use a non-empty verbalizer or target text.",
        )
    ctx = prefix + ctx
    if not ctx:
        ctx = [_empty_context_token(tokenizer)]
    return EncodedPair(ctx, cont, continuation)
