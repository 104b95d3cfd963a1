"""The statistics behind ``compare``'s verdicts, in numpy alone (the GPU machines have no scipy).

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
