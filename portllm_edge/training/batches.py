"""Tokenize (prompt, completion) pairs and plain text into padded training batches.

The loss is on completion tokens only (prompt tokens get label -100), which is how
a classification patch is trained to put mass on its verbalizer (e.g. " positive").
The pair is tokenized by :func:`portllm_edge.evaluation.encoding.encode_pair`, the
function evaluation scores with, so the completion's tokens are the ones evaluation
scores (with a SentencePiece tokenizer, encoding the completion alone would not give them).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any

from portllm_edge.evaluation.encoding import encode_pair, special_prefix

IGNORE_INDEX = -100


def encode_pairs(
    tokenizer: Any, pairs: Sequence[tuple[str, str]], max_length: int
) -> list[tuple[list[int], list[int]]]:
    """Token ids and labels for each ``(prompt, completion)`` pair.

    The completion's tokens are those :func:`~portllm_edge.evaluation.encoding.encode_pair`
    gives (the tail of the joint encoding), followed by EOS; the prompt (with the
    tokenizer's BOS where it adds one) is cut from the left to fit ``max_length``.

    Returns:
        ``[(input_ids, labels), ...]`` with ``len(input_ids) == len(labels) <= max_length``;
        labels are ``-100`` on prompt tokens.

    Raises:
        EvaluationError: a completion that encodes to zero tokens.
    """
    out = []
    eos = tokenizer.eos_token_id
    prefix = special_prefix(tokenizer)
    for prompt, completion in pairs:
        pair = encode_pair(tokenizer, prompt, completion, prefix=prefix)
        p, c = pair.context, pair.continuation
        if eos is not None:
            c = [*c, eos]
        c = c[:max_length]
        p = p[-(max_length - len(c)) :] if max_length > len(c) else []
        out.append((p + c, [IGNORE_INDEX] * len(p) + c))
    return out


def collate(encoded: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, Any]:
    """Right-pad a batch: ``input_ids``/``labels``/``attention_mask``, int64 tensors of shape [batch, seq]."""
    import torch

    width = max(len(ids) for ids, _ in encoded)
    ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    labels = torch.full((len(encoded), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for i, (x, y) in enumerate(encoded):
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def epoch_batches(n: int, batch_size: int, seed: int) -> Iterator[list[int]]:
    """Shuffled index batches for one epoch (deterministic for a seed)."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    for i in range(0, n, batch_size):
        yield order[i : i + batch_size]


def chunk_text(
    tokenizer: Any, texts: Sequence[str], seq_len: int, max_blocks: int | None = None
) -> list[list[int]]:
    """Concatenate texts (eos-separated) and cut them into ``seq_len``-token blocks (the last partial one dropped).

    Tokenizes in 20 000-character pieces and stops once ``max_blocks`` blocks are
    available, so a large corpus costs no more than what a short run uses.
    """
    ids: list[int] = []
    eos = tokenizer.eos_token_id
    need = None if max_blocks is None else max_blocks * seq_len
    piece = 20_000
    for t in texts:
        for i in range(0, len(t), piece):
            ids.extend(tokenizer(t[i : i + piece], add_special_tokens=False)["input_ids"])
            if need is not None and len(ids) >= need:
                break
        if eos is not None:
            ids.append(eos)
        if need is not None and len(ids) >= need:
            break
    blocks = [ids[i : i + seq_len] for i in range(0, len(ids) - seq_len + 1, seq_len)]
    return blocks if max_blocks is None else blocks[:max_blocks]
