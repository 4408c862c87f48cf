"""Paired statistics: McNemar's exact p-value against scipy and textbook values, bootstrap coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest

from portllm_edge.evaluation.paired import (
    binomial_two_sided_half,
    compare_paired,
    mcnemar,
    paired_bootstrap_difference,
    recovered_gain_interval,
)


def test_mcnemar_counts_and_textbook_p_value():
    # b = 1 (only A right), c = 6 (only B right): p = 2·(C(7,0) + C(7,1)) / 2^7 = 16/128
    a = [True] * 10 + [True] * 1 + [False] * 6 + [False] * 3
    b = [True] * 10 + [False] * 1 + [True] * 6 + [False] * 3
    m = mcnemar(a, b)
    assert (m.n, m.both_correct, m.only_a, m.only_b, m.both_wrong) == (20, 10, 1, 6, 3)
    assert m.p_value == pytest.approx(0.125, abs=1e-15)
    assert mcnemar(b, a).p_value == m.p_value
    assert mcnemar([True, False], [True, False]).p_value == 1.0  # never disagree


@pytest.mark.parametrize(
    "k,n", [(0, 1), (0, 5), (2, 10), (5, 10), (3, 25), (40, 100), (86, 236), (480, 1000)]
)
def test_exact_p_value_equals_scipy_binomtest(k, n):
    stats = pytest.importorskip("scipy.stats")
    assert binomial_two_sided_half(k, n) == pytest.approx(
        stats.binomtest(k, n, 0.5).pvalue, rel=1e-12, abs=1e-300
    )


def test_large_counts_agree_with_the_chi_square_approximation():
    # Agresti (2013), Table 11.1 (approval ratings): b = 150, c = 86; continuity-corrected chi2 = 63²/236
    p_exact = binomial_two_sided_half(86, 236)
    chi2 = (abs(150 - 86) - 1) ** 2 / 236
    p_chi2 = math.erfc(math.sqrt(chi2 / 2))
    assert p_exact == pytest.approx(p_chi2, rel=0.1)
    assert p_exact < 1e-4


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="same examples"):
        mcnemar([True], [True, False])
    with pytest.raises(ValueError, match="zero examples"):
        paired_bootstrap_difference([], [])
    with pytest.raises(ValueError, match="level"):
        paired_bootstrap_difference([True], [False], level=1.5)


def _correlated_pair(rng, n: int, p_a: float, p_b: float, rho_share: float):
    """Verdicts with P(A)=p_a, P(B)=p_b, sharing a latent draw with probability rho_share."""
    u = rng.random(n)
    v = np.where(rng.random(n) < rho_share, u, rng.random(n))
    return u < p_a, v < p_b


def test_paired_bootstrap_difference_covers_the_true_difference_about_95_percent():
    rng = np.random.default_rng(123)
    trials, hits = 300, 0
    for t in range(trials):
        a, b = _correlated_pair(rng, 200, 0.70, 0.60, 0.8)
        ci = paired_bootstrap_difference(a, b, resamples=1000, seed=t)
        assert ci.low <= ci.estimate <= ci.high
        hits += ci.low <= 0.10 <= ci.high
    assert 0.91 <= hits / trials <= 0.985, hits / trials


def test_pairing_narrows_the_interval_of_correlated_rows():
    rng = np.random.default_rng(7)
    a, b = _correlated_pair(rng, 400, 0.70, 0.66, 0.95)
    paired = paired_bootstrap_difference(a, b, resamples=2000)
    # the unpaired (independent-rows) standard error of the difference, times 2·1.96
    se = math.sqrt(a.mean() * (1 - a.mean()) / 400 + b.mean() * (1 - b.mean()) / 400)
    assert paired.high - paired.low < 0.6 * (2 * 1.96 * se)


def _shared_latent(rng, u, p: float):
    """Verdicts right with probability p, drawn from the shared latent u on 70 % of the examples."""
    return np.where(rng.random(u.size) < 0.7, u, rng.random(u.size)) < p


def test_recovered_gain_interval_covers_the_true_gain():
    rng = np.random.default_rng(5)
    trials, hits = 200, 0
    for t in range(trials):
        u = rng.random(400)  # one latent difficulty per example, shared (70 %) by the three rows
        zero, old, ported = (_shared_latent(rng, u, p) for p in (0.50, 0.80, 0.65))  # true gain 0.5
        ci = recovered_gain_interval(zero, old, ported, resamples=1000, seed=t)
        assert ci is not None and ci.undefined == 0
        assert ci.estimate == pytest.approx((ported.mean() - zero.mean()) / (old.mean() - zero.mean()))
        hits += ci.low <= 0.5 <= ci.high
    assert 0.90 <= hits / trials <= 0.99, hits / trials


def test_recovered_gain_is_undefined_without_a_gain():
    same = [True, False, True, False]
    assert recovered_gain_interval(same, same, [True, True, True, False]) is None


def test_compare_paired_record_round_trips():
    from portllm_edge.evaluation.paired import PairedComparison

    a = [True, True, False, True, False, True]
    b = [True, False, False, False, False, True]
    pc = compare_paired("ported", a, "old + patch", b, resamples=500)
    assert (pc.accuracy_a, pc.accuracy_b) == (4 / 6, 2 / 6)
    assert pc.difference.estimate == pytest.approx(2 / 6)
    assert pc.mcnemar.only_a == 2 and pc.mcnemar.only_b == 0 and pc.mcnemar.p_value == 0.5
    assert PairedComparison.from_dict(pc.to_dict()) == pc
    assert "McNemar p=0.5 (2 vs 0 discordant)" in pc.summary()


def _compare_result():
    from portllm_edge.porting.compare import (
        ROW_BASELINE,
        ROW_OLD_PATCH,
        ROW_PORTED,
        ROW_ZERO_SHOT,
        CompareResult,
        CompareRow,
    )

    rng = np.random.default_rng(3)
    u = rng.random(300)
    verdicts = {
        ROW_ZERO_SHOT: u < 0.5,
        ROW_OLD_PATCH: u < 0.8,
        ROW_PORTED: u < 0.75,
        ROW_BASELINE: u < 0.82,
    }
    rows = [
        CompareRow(name, "b", None, "fp32", float(v.mean()), 0.0, 1.0, None, 300, 1.0, tuple(map(bool, v)))
        for name, v in verdicts.items()
    ]
    return CompareResult("sst2", "dev.tsv", None, 0, rows)


def test_compare_result_carries_paired_statistics_to_the_report():
    from portllm_edge.reports import build_report, render_markdown

    res = _compare_result()
    stats = res.paired()
    # nested thresholds on one latent draw: ported is right wherever zero-shot is, old+patch wherever ported is
    assert stats.ported_vs_old.mcnemar.only_a == 0
    assert stats.ported_vs_old.mcnemar.only_b == round(300 * (res.rows[1].accuracy - res.rows[2].accuracy))
    assert stats.ported_vs_old.mcnemar.p_value == binomial_two_sided_half(
        0, stats.ported_vs_old.mcnemar.only_b
    )
    assert stats.ported_vs_baseline is not None and stats.ported_vs_baseline.difference.high < 0
    g = stats.recovered_gain
    assert g.estimate == pytest.approx(res.recovered_gain()) and g.low < g.estimate < g.high <= 1.0
    d = res.to_dict()
    assert d["paired"]["recovered_gain"]["estimate"] == pytest.approx(g.estimate)
    run = {"id": "compare-1", "kind": "compare", "status": "ok", "inputs": {"task": "sst2"}, "results": d}
    md = render_markdown(build_report([run]))
    assert f"(95% paired bootstrap CI {100 * g.low:.1f}% – {100 * g.high:.1f}%)" in md
    assert "  - new base + ported patch − old base + patch: " in md and "McNemar p=" in md


def test_rows_without_verdicts_give_no_paired_statistics():
    from dataclasses import replace

    res = _compare_result()
    res.rows = [replace(r, correct=()) for r in res.rows]
    assert res.paired() is None and res.to_dict()["paired"] is None
