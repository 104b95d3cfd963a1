"""The statistics behind ``compare``'s verdicts, in numpy alone (the GPU machines have no scipy).

``welch`` is Welch's two-sample t-test (unequal variances, Welch–Satterthwaite degrees of
freedom), with Student's t distribution from the regularized incomplete beta function
(Numerical Recipes §6.4). ``compare`` applies it to the logarithms of the per-repeat median
step times: the repeat, not the step, is the unit that varies independently from run to
run (steps within a repeat share its conditions), and effects on time are ratios.

``mann_whitney`` is the two-sided Mann–Whitney U (Wilcoxon rank-sum) test with the normal
approximation, tie correction and continuity correction, as in Conover, *Practical
Nonparametric Statistics*, §5.1 (scipy's ``mannwhitneyu(method="asymptotic")`` computes the
same). It asks whether one sample tends to be larger than the other without assuming
step times are normal, which they are not: they are skewed, with a long slow tail.

``holm`` adjusts a family of p-values (Holm 1979) so that the chance of *any* false
positive among them stays at most alpha: a comparison of two runs tests every case at once,
and its exit status answers "did anything get slower?".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MannWhitney:
    """``u``: U of the first sample (pairs (x, y) with x > y, ties counting one half);
    ``z``: the continuity-corrected standard score of ``u``; ``p_value``: two-sided."""

    u: float
    z: float
    p_value: float


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``values``; tied values share the mean of the ranks they span."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    last_rank = np.cumsum(counts)
    return (last_rank - (counts - 1) / 2.0)[inverse]


def mann_whitney(x: np.ndarray | list[float], y: np.ndarray | list[float]) -> MannWhitney:
    """Two-sided Mann–Whitney U test of samples ``x`` and ``y`` (normal approximation)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        raise ValueError(f"Mann–Whitney needs two non-empty samples, got sizes {n1} and {n2}")
    combined = np.concatenate([x, y])
    n = n1 + n2
    u = float(average_ranks(combined)[:n1].sum() - n1 * (n1 + 1) / 2)
    _, tie_counts = np.unique(combined, return_counts=True)
    tie_term = float((tie_counts**3 - tie_counts).sum()) / (n * (n - 1)) if n > 1 else 0.0
    variance = n1 * n2 / 12.0 * ((n + 1) - tie_term)
    if variance <= 0:  # every value equal: no evidence either way
        return MannWhitney(u=u, z=0.0, p_value=1.0)
    deviation = max(abs(u - n1 * n2 / 2.0) - 0.5, 0.0)
    z = math.copysign(deviation / math.sqrt(variance), u - n1 * n2 / 2.0)
    return MannWhitney(u=u, z=z, p_value=min(1.0, math.erfc(abs(z) / math.sqrt(2.0))))


def holm(p_values: np.ndarray | list[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values: reject hypothesis i at level alpha iff
    ``holm(p)[i] <= alpha``; the family-wise error rate is then at most alpha."""
    p = np.asarray(p_values, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted


@dataclass(frozen=True)
class Welch:
    """Welch's t statistic of mean(x) - mean(y), its Welch–Satterthwaite degrees of
    freedom, and the two-sided p-value."""

    t: float
    df: float
    p_value: float


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz's method,
    Numerical Recipes §6.4); converges fast for x < (a + 1) / (a + b + 2)."""
    tiny, eps = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 500):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < eps:
            break
    return result


def regularized_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularized incomplete beta function."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_continued_fraction(a, b, x) / a
    return 1.0 - front * _beta_continued_fraction(b, a, 1.0 - x) / b


def student_t_two_sided(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with ``df`` degrees of freedom."""
    if math.isinf(t):
        return 0.0
    return regularized_beta(df / 2.0, 0.5, df / (df + t * t))


def welch(x: np.ndarray | list[float], y: np.ndarray | list[float]) -> Welch:
    """Welch's two-sample t-test (unequal variances), two-sided."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"Welch's t-test needs at least two values per sample, got {len(x)} and {len(y)}")
    share_x, share_y = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    difference = float(x.mean() - y.mean())
    standard_error = math.sqrt(share_x + share_y)
    if standard_error == 0.0:  # both samples constant: the difference is exact
        return Welch(
            t=math.copysign(math.inf, difference) if difference else 0.0, df=math.inf, p_value=float(not difference)
        )
    df = float((share_x + share_y) ** 2 / (share_x**2 / (len(x) - 1) + share_y**2 / (len(y) - 1)))
    t = difference / standard_error
    return Welch(t=t, df=df, p_value=student_t_two_sided(t, df))
