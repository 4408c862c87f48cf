"""Evaluation metrics: accuracy, binary F1, the Wilson score interval, lm-eval's GSM8K answer filters.

Why this module exists: the numbers a user compares across configurations (zero-shot,
old base + patch, new base + ported patch) must be computed one way, in one place,
with tests against hand-computed values. These are pure functions over plain Python
values; they must not import torch or read files.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

Z_95 = 1.959963984540054
"""The two-sided 95 % standard-normal quantile, Φ⁻¹(0.975)."""


def accuracy(predictions: Sequence[object], golds: Sequence[object]) -> float:
    """Fraction of positions where ``predictions[i] == golds[i]``.

    Args:
        predictions: Predicted labels (any comparable values), length n.
        golds: Gold labels, length n.

    Returns:
        Accuracy in [0, 1].

    Raises:
        ValueError: The sequences differ in length or are empty.
    """
    if len(predictions) != len(golds):
        raise ValueError(f"`predictions` has {len(predictions)} items but `golds` has {len(golds)}")
    if not golds:
        raise ValueError("accuracy of zero examples is undefined; pass at least one example")
    return sum(p == g for p, g in zip(predictions, golds, strict=True)) / len(golds)


def binary_f1(predictions: Sequence[object], golds: Sequence[object], positive: object = 1) -> float:
    """F1 of the ``positive`` class: 2·TP / (2·TP + FP + FN).

    This is the GLUE MRPC F1 (positive = "paraphrase"), as in scikit-learn's
    ``f1_score(average="binary")``. When there is no positive prediction and no
    positive gold (TP + FP + FN = 0) it returns 0.0, like scikit-learn's
    ``zero_division=0``.

    Args:
        predictions: Predicted labels, length n.
        golds: Gold labels, length n.
        positive: The label counted as positive.

    Returns:
        F1 in [0, 1].

    Raises:
        ValueError: The sequences differ in length.
    """
    if len(predictions) != len(golds):
        raise ValueError(f"`predictions` has {len(predictions)} items but `golds` has {len(golds)}")
    tp = sum(p == positive and g == positive for p, g in zip(predictions, golds, strict=True))
    fp = sum(p == positive and g != positive for p, g in zip(predictions, golds, strict=True))
    fn = sum(p != positive and g == positive for p, g in zip(predictions, golds, strict=True))
    denom = 2 * tp + fp + fn
    return 0.0 if denom == 0 else 2 * tp / denom


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (default 95 %).

    Source: E. B. Wilson (1927), "Probable inference, the law of succession, and
    statistical inference", JASA 22(158). With p̂ = k/n::

        centre = (p̂ + z²/(2n)) / (1 + z²/n)
        half   = z / (1 + z²/n) · sqrt(p̂(1-p̂)/n + z²/(4n²))

    Unlike the normal (Wald) interval it stays inside [0, 1] and is not empty at
    p̂ = 0 or 1, which matters for the short ``--limit`` runs.

    Args:
        successes: Number of correct examples k, 0 <= k <= n.
        n: Number of examples, n >= 1.
        z: Standard-normal quantile (1.96 for 95 %).

    Returns:
        ``(low, high)`` in [0, 1], with ``low <= k/n <= high``.

    Raises:
        ValueError: ``n < 1`` or ``successes`` outside [0, n].
    """
    if n < 1:
        raise ValueError(f"`n` must be >= 1 for a confidence interval, got {n}")
    if not 0 <= successes <= n:
        raise ValueError(f"`successes` must be in [0, {n}], got {successes}")
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # At k = 0 or k = n one end equals p̂ exactly; rounding left it 1e-16 past p̂ (0.9999999999999999
    # at 48/48), an interval not containing its estimate. Clamp each end at p̂ and at [0, 1].
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


INVALID = "[invalid]"
"""What the harness's regex filter returns when the pattern does not match."""

GSM8K_STRICT = r"#### (\-?[0-9\.\,]+)"
"""lm-eval ``gsm8k`` "strict-match" filter: the number after ``#### `` (first match)."""

GSM8K_FLEXIBLE = r"(-?[$0-9.,]{2,})|(-?[0-9]+)"
"""lm-eval ``gsm8k`` "flexible-extract" filter: the last number-like token of the output."""

GSM8K_IGNORE = (",", r"\$", r"(?s).*#### ", r"\.$")
"""``regexes_to_ignore`` of lm-eval's ``gsm8k`` ``exact_match``, removed from both sides in this order."""


def regex_extract(text: str, pattern: str, group_select: int = 0) -> str:
    """lm-eval's ``regex`` filter (``lm_eval/filters/extraction.py``, ``RegexFilter``).

    ``re.findall(pattern, text)[group_select]``; a tuple of groups yields its first
    non-empty group; the result is stripped. No match: :data:`INVALID`.

    Args:
        text: Generated text.
        pattern: Regular expression.
        group_select: Which match to take (0 first, -1 last).

    Returns:
        The extracted string, or ``"[invalid]"``.
    """
    found = re.findall(pattern, text)
    if not found:
        return INVALID
    match = found[group_select]
    if isinstance(match, tuple):
        nonempty = [m for m in match if m]
        match = nonempty[0] if nonempty else INVALID
    return str(match).strip()


def gsm8k_strict_extract(output: str) -> str:
    """The harness's GSM8K "strict-match" answer: the number after the first ``#### ``."""
    return regex_extract(output, GSM8K_STRICT, 0)


def gsm8k_flexible_extract(output: str) -> str:
    """The harness's GSM8K "flexible-extract" answer: the last number-like token (``"$1,234."``)."""
    return regex_extract(output, GSM8K_FLEXIBLE, -1)


def harness_exact_match(prediction: str, reference: str) -> bool:
    """lm-eval's GSM8K ``exact_match``: drop :data:`GSM8K_IGNORE` from both, lower-case, compare.

    Source: ``lm_eval/api/metrics.py`` ``exact_match_hf_evaluate`` with the ``gsm8k``
    YAML's ``ignore_case: true``, ``ignore_punctuation: false`` and ``regexes_to_ignore``.
    ``reference`` is the full GSM8K solution (``"...\n#### 1,072"`` -> ``"1072"``).
    """
    for pattern in GSM8K_IGNORE:
        prediction = re.sub(pattern, "", prediction)
        reference = re.sub(pattern, "", reference)
    return prediction.lower() == reference.lower()


def gsm8k_gold_answer(solution: str) -> str | None:
    """Return the gold final answer of a GSM8K solution: the text after ``####``, commas removed.

    Args:
        solution: A GSM8K ``answer`` field (steps, then ``#### <number>``).

    Returns:
        The answer string, or ``None`` when there is no ``####`` marker.
    """
    if "####" not in solution:
        return None
    return solution.rsplit("####", 1)[1].strip().replace(",", "")
