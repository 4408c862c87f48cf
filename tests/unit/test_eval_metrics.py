"""Metrics against hand-computed values: accuracy, binary F1, Wilson interval, GSM8K number matching."""

from __future__ import annotations

import pytest

from portllm_edge.evaluation.metrics import (
    INVALID,
    accuracy,
    binary_f1,
    gsm8k_flexible_extract,
    gsm8k_gold_answer,
    gsm8k_strict_extract,
    harness_exact_match,
    wilson_interval,
)
from portllm_edge.evaluation.results import EvalResult, Prediction


def test_accuracy_counts_matches():
    assert accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == pytest.approx(0.5)
    assert accuracy(["18"], ["18"]) == 1.0


def test_accuracy_rejects_mismatched_lengths_and_empty():
    with pytest.raises(ValueError, match="`predictions` has 2 items but `golds` has 1"):
        accuracy([1, 0], [1])
    with pytest.raises(ValueError, match="zero examples"):
        accuracy([], [])


def test_binary_f1_hand_computed():
    # TP=2 (rows 0, 4), FP=1 (row 1), FN=1 (row 3): F1 = 2*2 / (2*2 + 1 + 1) = 4/6
    assert binary_f1([1, 1, 0, 0, 1], [1, 0, 0, 1, 1]) == pytest.approx(4 / 6)
    # positive label chosen explicitly: class 0 has TP=1 (row 2), FP=1 (row 3), FN=1 (row 1)
    assert binary_f1([1, 1, 0, 0, 1], [1, 0, 0, 1, 1], positive=0) == pytest.approx(2 / 4)
    # no positives anywhere: scikit-learn's zero_division=0 convention
    assert binary_f1([0, 0], [0, 0]) == 0.0


def test_wilson_interval_hand_computed():
    # 8/10, z=1.96: centre = (0.8 + 0.19207)/1.38415 = 0.71674; half = 1.41600*sqrt(0.016 + 0.0096037) = 0.22658
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.49016, abs=1e-4)
    assert high == pytest.approx(0.94331, abs=1e-4)
    # 0/10: low is 0, high = (z²/n)/(1 + z²/n) = 0.38415/1.38415
    low, high = wilson_interval(0, 10)
    assert low == 0.0
    assert high == pytest.approx(0.38415 / 1.38415, abs=1e-4)
    # symmetric about 0.5 for k = n/2
    low, high = wilson_interval(50, 100)
    assert 0.5 - low == pytest.approx(high - 0.5)
    assert high - low == pytest.approx(2 * 0.0960, abs=5e-4)


def test_wilson_interval_rejects_bad_counts():
    with pytest.raises(ValueError, match="`n` must be >= 1"):
        wilson_interval(0, 0)
    with pytest.raises(ValueError, match=r"`successes` must be in \[0, 3\]"):
        wilson_interval(4, 3)


@pytest.mark.parametrize(
    ("output", "strict", "flexible"),
    [
        ("She makes 9 * 2 = $18 every day.\n#### 18", "18", "18"),
        ("The total is $1,234.50.", INVALID, "$1,234.50."),
        ("It drops by -3 degrees, then 7", INVALID, "7"),
        ("#### -3.\nso 12", "-3.", "12"),
        ("no digits here", INVALID, INVALID),
    ],
)
def test_gsm8k_filters(output, strict, flexible):
    assert gsm8k_strict_extract(output) == strict
    assert gsm8k_flexible_extract(output) == flexible


def test_gsm8k_gold_and_harness_exact_match():
    solution = "Natalia sold 48/2 = <<48/2=24>>24 clips.\n#### 1,072"
    assert gsm8k_gold_answer(solution) == "1072"
    assert gsm8k_gold_answer("no marker") is None
    assert harness_exact_match("$1,072.", solution)  # "," "$" and a final "." are ignored
    assert not harness_exact_match("1072.00", solution)  # a string match, as the harness
    assert not harness_exact_match(INVALID, solution)


def test_eval_result_from_predictions_and_round_trip():
    preds = [
        Prediction("a", 1, 1, True, (-1.0, -0.5)),
        Prediction("b", 1, 0, False, (-2.0, -1.0)),
        Prediction("c", 0, 0, True, (-0.1, -3.0)),
        Prediction("d", 0, 1, False, (-0.2, -0.3)),
    ]
    r = EvalResult.from_predictions("mrpc", preds, seconds=2.0, tokens=100, positive=1, keep_predictions=True)
    assert (r.n, r.correct, r.accuracy) == (4, 2, 0.5)
    assert r.f1 == pytest.approx(0.5)  # TP=1, FP=1, FN=1
    assert r.tokens_per_s == pytest.approx(50.0)
    assert (r.ci_low, r.ci_high) == pytest.approx(wilson_interval(2, 4))
    back = EvalResult.from_dict({**r.to_dict(), "added_by_newer_version": 1})
    assert back == r
    assert "accuracy 0.500" in r.summary() and "F1 0.500" in r.summary()
