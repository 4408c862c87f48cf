"""Paired statistics for configurations scored on the same examples: McNemar's test and the paired bootstrap.

Why this module exists: the rows of a PortLLM comparison (new base zero-shot, old base
+ patch, new base + ported patch, new base + own LoRA) are scored on the *same*
examples, so their accuracies are correlated. Independent Wilson intervals per row
say little about a difference of a few points between two rows; the paired tests
here use the per-example agreement:

* :func:`mcnemar` — is one configuration right more often than the other, counting
  only the examples where they disagree? (McNemar 1947; exact binomial form);
* :func:`paired_bootstrap_difference` — an interval for the accuracy difference,
  resampling examples (both configurations keep their verdicts on each drawn example);
* :func:`recovered_gain_interval` — an interval for the recovered gain
  ``(ported − zero-shot) / (old + patch − zero-shot)``, resampling examples jointly
  across the three rows.

Pure functions over per-example correctness vectors; numpy is imported lazily for
the bootstrap. They must not import torch or read files.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any

DEFAULT_RESAMPLES = 10_000
DEFAULT_LEVEL = 0.95
DEFAULT_SEED = 0


@dataclass(frozen=True)
class McNemarResult:
    """McNemar's test of two configurations scored on the same n examples.

    Attributes:
        n: Examples scored by both.
        both_correct: Examples both got right.
        only_a: Examples only configuration A got right (b in McNemar's table).
        only_b: Examples only configuration B got right (c).
        both_wrong: Examples both got wrong.
        p_value: Two-sided exact p-value, ``min(1, 2·P(X ≤ min(b, c)))`` with
            ``X ~ Binomial(b + c, 1/2)``; 1.0 when the two never disagree.
    """

    n: int
    both_correct: int
    only_a: int
    only_b: int
    both_wrong: int
    p_value: float

    @property
    def discordant(self) -> int:
        """Examples where the two disagree (b + c)."""
        return self.only_a + self.only_b


@dataclass(frozen=True)
class BootstrapInterval:
    """A percentile bootstrap interval.

    Attributes:
        estimate: The statistic on the examples themselves.
        low: Lower end (the ``(1 − level)/2`` quantile of the resampled statistics).
        high: Upper end (the ``(1 + level)/2`` quantile).
        level: Nominal coverage (0.95).
        resamples: Resamples drawn.
        undefined: Resamples where the statistic was undefined (a recovered gain whose
            denominator is 0) and that were left out of the quantiles.
        seed: Seed of the resampling.
    """

    estimate: float
    low: float
    high: float
    level: float
    resamples: int
    undefined: int = 0
    seed: int = DEFAULT_SEED


@dataclass(frozen=True)
class PairedComparison:
    """Configuration A against configuration B on the same examples.

    Attributes:
        a: Name of configuration A (``"new base + ported patch"``).
        b: Name of configuration B (``"old base + patch"``).
        accuracy_a: A's accuracy.
        accuracy_b: B's accuracy.
        difference: ``accuracy_a − accuracy_b`` with its paired bootstrap interval.
        mcnemar: McNemar's exact test.
    """

    a: str
    b: str
    accuracy_a: float
    accuracy_b: float
    difference: BootstrapInterval
    mcnemar: McNemarResult

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PairedComparison:
        """Inverse of :meth:`to_dict`."""
        return cls(
            a=data["a"],
            b=data["b"],
            accuracy_a=data["accuracy_a"],
            accuracy_b=data["accuracy_b"],
            difference=BootstrapInterval(**data["difference"]),
            mcnemar=McNemarResult(**data["mcnemar"]),
        )

    def summary(self) -> str:
        """``new + ported − old + patch: −0.012 (95% CI −0.031 to +0.006), McNemar p=0.210 (9 vs 14)``."""
        d, m = self.difference, self.mcnemar
        return (
            f"{self.a} − {self.b}: {d.estimate:+.3f} ({d.level:.0%} CI {d.low:+.3f} to {d.high:+.3f}), "
            f"McNemar p={m.p_value:.3g} ({m.only_a} vs {m.only_b} discordant)"
        )


def _check_pair(a: Sequence[bool], b: Sequence[bool]) -> None:
    if len(a) != len(b):
        raise ValueError(
            f"paired statistics need the same examples: got {len(a)} and {len(b)} verdicts; "
            "score both configurations on the same task data"
        )
    if len(a) == 0:
        raise ValueError("paired statistics of zero examples are undefined; pass at least one example")


def binomial_two_sided_half(k: int, n: int) -> float:
    """Two-sided exact p-value of ``k`` successes in ``n`` trials under ``p = 1/2``.

    ``min(1, 2·Σ_{i ≤ min(k, n−k)} C(n, i) / 2ⁿ)``, computed in exact rational
    arithmetic. For ``p = 1/2`` this equals ``scipy.stats.binomtest(k, n, 0.5).pvalue``.

    Raises:
        ValueError: ``n < 0`` or ``k`` outside [0, n].
    """
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(k, n - k) + 1))
    return float(min(Fraction(1), Fraction(2 * tail, 2**n)))


def mcnemar(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> McNemarResult:
    """McNemar's test for two configurations' verdicts on the same examples.

    Source: Q. McNemar (1947), "Note on the sampling error of the difference between
    correlated proportions or percentages", Psychometrika 12(2); exact form as in
    ``statsmodels.stats.contingency_tables.mcnemar(exact=True)``: under the null the
    ``b`` examples only A got right are ``Binomial(b + c, 1/2)``. The exact form is used
    at every count (the chi-square form approximates it; it costs microseconds here).

    Args:
        a_correct: A's per-example verdicts, length n.
        b_correct: B's verdicts on the same examples, in the same order.

    Returns:
        The :class:`McNemarResult`.

    Raises:
        ValueError: Lengths differ or n is 0.
    """
    _check_pair(a_correct, b_correct)
    pairs = list(zip(map(bool, a_correct), map(bool, b_correct), strict=True))
    both = sum(x and y for x, y in pairs)
    only_a = sum(x and not y for x, y in pairs)
    only_b = sum(y and not x for x, y in pairs)
    return McNemarResult(
        n=len(pairs),
        both_correct=both,
        only_a=only_a,
        only_b=only_b,
        both_wrong=len(pairs) - both - only_a - only_b,
        p_value=binomial_two_sided_half(only_a, only_a + only_b),
    )


def _bootstrap_means(vectors: Sequence[Any], resamples: int, seed: int, block: int = 256) -> list[Any]:
    """Means of each vector over the same ``resamples`` draws of n indices with replacement.

    Draws ``block`` resamples at a time, so memory stays at ``block × n`` indices.
    Returns one float64 array of length ``resamples`` per vector.
    """
    import numpy as np

    if resamples < 1:
        raise ValueError(f"`resamples` must be at least 1, got {resamples}")
    rng = np.random.default_rng(seed)
    n = len(vectors[0])
    out: list[list[Any]] = [[] for _ in vectors]
    for start in range(0, resamples, block):
        idx = rng.integers(0, n, size=(min(block, resamples - start), n))
        for acc, v in zip(out, vectors, strict=True):
            acc.append(v[idx].mean(axis=1))
    return [np.concatenate(parts) for parts in out]


def _percentiles(values: Any, level: float) -> tuple[float, float]:
    import numpy as np

    if not 0 < level < 1:
        raise ValueError(f"`level` must be in (0, 1), got {level}")
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def paired_bootstrap_difference(
    a_correct: Sequence[bool],
    b_correct: Sequence[bool],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    seed: int = DEFAULT_SEED,
) -> BootstrapInterval:
    """Percentile bootstrap interval of ``accuracy(A) − accuracy(B)``, resampling examples.

    Source: B. Efron and R. Tibshirani (1993), *An Introduction to the Bootstrap*, ch. 13
    (percentile interval); the paired form draws example indices with replacement and
    keeps both configurations' verdicts on each drawn example (Koehn 2004, "Statistical
    significance tests for machine translation evaluation").

    Args:
        a_correct: A's per-example verdicts, length n.
        b_correct: B's verdicts on the same examples.
        resamples: Bootstrap resamples (>= 1).
        level: Nominal coverage in (0, 1).
        seed: Seed of numpy's ``default_rng``.

    Returns:
        The :class:`BootstrapInterval` (units: accuracy, a fraction in [−1, 1]).

    Raises:
        ValueError: Lengths differ, n is 0, or bad ``resamples``/``level``.
    """
    import numpy as np

    _check_pair(a_correct, b_correct)
    diff = np.asarray(a_correct, dtype=np.float64) - np.asarray(b_correct, dtype=np.float64)
    (stats,) = _bootstrap_means([diff], resamples, seed)
    low, high = _percentiles(stats, level)
    return BootstrapInterval(float(diff.mean()), low, high, level, resamples, 0, seed)


def recovered_gain(zero_shot: float, old_patch: float, ported: float) -> float | None:
    """``(ported − zero-shot) / (old + patch − zero-shot)``, or ``None`` when the patch gains nothing.

    The share of the patch's gain over the new base's zero-shot accuracy that the
    ported patch keeps (PortLLM's "recovered performance").
    """
    if old_patch == zero_shot:
        return None
    return (ported - zero_shot) / (old_patch - zero_shot)


def recovered_gain_interval(
    zero_shot: Sequence[bool],
    old_patch: Sequence[bool],
    ported: Sequence[bool],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    seed: int = DEFAULT_SEED,
) -> BootstrapInterval | None:
    """Paired percentile bootstrap interval of the recovered gain.

    The three rows are scored on the same examples; each resample draws example indices
    with replacement and recomputes all three accuracies on them, so the rows'
    correlation is kept. Resamples whose denominator is 0 are left out and counted in
    ``undefined``.

    Args:
        zero_shot: New base zero-shot verdicts, length n.
        old_patch: Old base + patch verdicts on the same examples.
        ported: New base + ported patch verdicts on the same examples.
        resamples, level, seed: As :func:`paired_bootstrap_difference`.

    Returns:
        The interval (units: a fraction; 1.0 = the whole gain kept), or ``None`` when the
        gain is undefined on the examples themselves (the patch gains nothing).

    Raises:
        ValueError: Lengths differ, n is 0, or bad ``resamples``/``level``.
    """
    import numpy as np

    _check_pair(zero_shot, old_patch)
    _check_pair(zero_shot, ported)
    z, o, p = (np.asarray(v, dtype=np.float64) for v in (zero_shot, old_patch, ported))
    estimate = recovered_gain(float(z.mean()), float(o.mean()), float(p.mean()))
    if estimate is None:
        return None
    zs, os_, ps = _bootstrap_means([z, o, p], resamples, seed)
    denom = os_ - zs
    ok = denom != 0
    gains = (ps[ok] - zs[ok]) / denom[ok]
    if gains.size == 0:
        return BootstrapInterval(estimate, math.nan, math.nan, level, resamples, resamples, seed)
    low, high = _percentiles(gains, level)
    return BootstrapInterval(estimate, low, high, level, resamples, int((~ok).sum()), seed)


def compare_paired(
    a: str,
    a_correct: Sequence[bool],
    b: str,
    b_correct: Sequence[bool],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    seed: int = DEFAULT_SEED,
) -> PairedComparison:
    """McNemar's test and the paired bootstrap difference of A against B, as one record.

    Raises:
        ValueError: Lengths differ or n is 0.
    """
    _check_pair(a_correct, b_correct)
    n = len(a_correct)
    return PairedComparison(
        a=a,
        b=b,
        accuracy_a=sum(map(bool, a_correct)) / n,
        accuracy_b=sum(map(bool, b_correct)) / n,
        difference=paired_bootstrap_difference(
            a_correct, b_correct, resamples=resamples, level=level, seed=seed
        ),
        mcnemar=mcnemar(a_correct, b_correct),
    )


@dataclass(frozen=True)
class PortStatistics:
    """Paired statistics of a PortLLM comparison (rows scored on the same examples).

    Attributes:
        ported_vs_old: New base + ported patch against old base + patch.
        ported_vs_baseline: New base + ported patch against new base + own LoRA, or ``None``
            without that row.
        recovered_gain: Paired bootstrap interval of the recovered gain, or ``None`` when the
            patch gains nothing over zero-shot on these examples.
    """

    ported_vs_old: PairedComparison
    ported_vs_baseline: PairedComparison | None
    recovered_gain: BootstrapInterval | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PortStatistics:
        """Inverse of :meth:`to_dict`."""
        base = data.get("ported_vs_baseline")
        gain = data.get("recovered_gain")
        return cls(
            ported_vs_old=PairedComparison.from_dict(data["ported_vs_old"]),
            ported_vs_baseline=PairedComparison.from_dict(base) if base else None,
            recovered_gain=BootstrapInterval(**gain) if gain else None,
        )

    def lines(self) -> list[str]:
        """Human-readable lines: the recovered gain's interval, then each paired comparison."""
        out = []
        g = self.recovered_gain
        if g is not None:
            out.append(
                f"recovered gain {g.estimate:.1%} ({g.level:.0%} paired bootstrap CI {g.low:.1%} to {g.high:.1%})"
            )
        out.append(self.ported_vs_old.summary())
        if self.ported_vs_baseline is not None:
            out.append(self.ported_vs_baseline.summary())
        return out


def port_statistics(
    zero_shot: Sequence[bool],
    old_patch: Sequence[bool],
    ported: Sequence[bool],
    baseline: Sequence[bool] | None = None,
    *,
    names: tuple[str, str, str] = ("new base + ported patch", "old base + patch", "new base + own LoRA"),
    resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    seed: int = DEFAULT_SEED,
) -> PortStatistics:
    """McNemar tests, paired difference intervals and the recovered gain's interval of one comparison.

    Args:
        zero_shot, old_patch, ported: Per-example verdicts of the three rows, same examples, same order.
        baseline: The own-LoRA row's verdicts, or ``None``.
        names: Display names of (ported, old + patch, own LoRA).
        resamples, level, seed: Bootstrap settings (the same resampled indices serve every statistic).

    Raises:
        ValueError: Lengths differ or n is 0.
    """
    kw: dict[str, Any] = {"resamples": resamples, "level": level, "seed": seed}
    ported_name, old_name, base_name = names
    return PortStatistics(
        ported_vs_old=compare_paired(ported_name, ported, old_name, old_patch, **kw),
        ported_vs_baseline=(
            compare_paired(ported_name, ported, base_name, baseline, **kw) if baseline is not None else None
        ),
        recovered_gain=recovered_gain_interval(zero_shot, old_patch, ported, **kw),
    )
