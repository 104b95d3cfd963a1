"""Welch's t-test, the rank test and Holm's correction against hand computation, textbook
examples, closed forms and the exact permutation distribution."""

import math
from itertools import combinations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.analyse.stats import average_ranks, holm, mann_whitney, regularized_beta, student_t_two_sided, welch


def pairs_u(x, y) -> float:
    """U from its definition: pairs with x > y, ties counting one half."""
    return sum((a > b) + 0.5 * (a == b) for a in x for b in y)


def test_average_ranks_share_tied_ranks():
    assert average_ranks(np.array([3.0, 1.0, 2.0, 2.0, 5.0, 2.0])).tolist() == [5, 1, 3, 3, 6, 3]


def test_separated_samples_by_hand():
    # U = 0; mean n1 n2 / 2 = 4.5; variance 3 * 3 * 7 / 12 = 5.25;
    # z = -(4.5 - 0.5) / sqrt(5.25) = -1.74574; p = 2 (1 - Phi(1.74574)) = 0.08086
    result = mann_whitney([1, 2, 3], [4, 5, 6])
    assert result.u == 0
    assert result.z == pytest.approx(-4 / math.sqrt(5.25))
    assert result.p_value == pytest.approx(0.08086, abs=5e-5)


def test_ties_by_hand():
    # ranks of 1,2,2,2,3,3,4,5: 1 | 3 3 3 | 5.5 5.5 | 7 | 8; x = {1, 2, 2, 3} has rank sum 12.5,
    # U = 12.5 - 4 * 5 / 2 = 2.5. Ties: one triple, one pair: sum(t^3 - t) = 24 + 6 = 30, so the
    # variance is 4 * 4 / 12 * (9 - 30 / 56) = 11.2857; z = -(8 - 2.5 - 0.5) / 3.35942 = -1.48835;
    # p = 0.13666
    result = mann_whitney([1, 2, 2, 3], [2, 3, 4, 5])
    assert result.u == 2.5
    assert result.z == pytest.approx(-5 / math.sqrt(16 / 12 * (9 - 30 / 56)))
    assert result.p_value == pytest.approx(0.13666, abs=5e-5)


def test_textbook_example_hollander_wolfe():
    # Hollander & Wolfe's depression scores, as in R's ?wilcox.test: W = 58, and the
    # normal approximation with continuity correction gives two-sided p = 2 * 0.06646.
    x = [1.83, 0.50, 1.62, 2.48, 1.68, 1.88, 1.55, 3.06, 1.30]
    y = [0.878, 0.647, 0.598, 2.05, 1.06, 1.29, 1.06, 3.14, 1.29]
    result = mann_whitney(x, y)
    assert result.u == 58
    assert result.p_value == pytest.approx(2 * 0.06646, abs=2e-4)


def test_normal_approximation_is_close_to_the_exact_permutation_p_value():
    rng = np.random.default_rng(3)
    x, y = rng.normal(0.0, 1.0, 8), rng.normal(0.8, 1.0, 8)
    # Without ties U = (rank sum of the first sample) - 8 * 9 / 2; under the null every split of
    # the 16 ranks into two groups of 8 is equally likely, so enumerate all of them.
    ranks = np.argsort(np.argsort(np.concatenate([x, y]))) + 1
    splits = np.array(list(combinations(range(16), 8)))
    null_u = ranks[splits].sum(axis=1) - 36
    observed = pairs_u(x, y)
    exact = np.mean(np.abs(null_u - 32) >= abs(observed - 32))
    assert 0.01 < exact < 0.5  # a case where the approximation matters
    assert mann_whitney(x, y).p_value == pytest.approx(exact, abs=0.01)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.integers(0, 6), min_size=1, max_size=12),
    st.lists(st.integers(0, 6), min_size=1, max_size=12),
)
def test_u_is_the_pair_count_and_the_test_is_symmetric(x, y):
    forward, backward = mann_whitney(x, y), mann_whitney(y, x)
    assert forward.u == pairs_u(x, y)
    assert forward.u + backward.u == len(x) * len(y)
    assert forward.p_value == pytest.approx(backward.p_value)
    assert 0.0 <= forward.p_value <= 1.0


def test_identical_values_give_no_evidence():
    assert mann_whitney([2.0, 2.0], [2.0, 2.0, 2.0]).p_value == 1.0


def test_empty_sample_is_refused():
    with pytest.raises(ValueError, match="non-empty"):
        mann_whitney([], [1.0])


def test_holm_textbook_example():
    # sorted: 0.005 * 4 = 0.02, 0.01 * 3 = 0.03, 0.03 * 2 = 0.06, 0.04 * 1 = 0.04 -> 0.06 (monotone)
    assert holm([0.01, 0.04, 0.03, 0.005]).tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.01, 0.5]).tolist() == pytest.approx([0.02, 0.5])
    assert holm([0.5, 0.9]).tolist() == [1.0, 1.0]
    assert holm([]).tolist() == []


@pytest.mark.parametrize(
    "t,df,p",
    [
        (2.776, 4, 0.05),  # the t table: two-sided 5% and 1% points
        (2.228, 10, 0.05),
        (3.169, 10, 0.01),
        (12.706, 1, 0.05),
        (1.960, 1e7, 0.05),  # the normal limit
    ],
)
def test_student_t_against_the_table(t, df, p):
    assert student_t_two_sided(t, df) == pytest.approx(p, rel=2e-3)


@pytest.mark.parametrize("t", [0.0, 0.3, 1.0, 2.0, 7.5, 40.0])
def test_student_t_against_closed_forms(t):
    # df = 1 is the Cauchy distribution: P(|T| > t) = 1 - (2 / pi) atan t;
    # df = 2: P(|T| > t) = 1 - t / sqrt(2 + t^2).
    assert student_t_two_sided(t, 1) == pytest.approx(1 - 2 / math.pi * math.atan(t), rel=1e-9, abs=1e-14)
    assert student_t_two_sided(t, 2) == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-9, abs=1e-14)


def test_regularized_beta_against_closed_forms():
    # I_x(1, 1) = x; I_x(a, 1) = x^a; I_x(1, b) = 1 - (1 - x)^b
    assert regularized_beta(1, 1, 0.3) == pytest.approx(0.3)
    assert regularized_beta(3.5, 1, 0.7) == pytest.approx(0.7**3.5)
    assert regularized_beta(1, 4.0, 0.2) == pytest.approx(1 - 0.8**4)


def test_welch_textbook_example():
    # Wikipedia, "Welch's t-test", example 1: t = -2.46, df = 24.99, p = 0.021.
    a1 = [27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4]
    a2 = [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4]
    result = welch(a1, a2)
    assert result.t == pytest.approx(-2.46, abs=0.005)
    assert result.df == pytest.approx(24.99, abs=0.005)
    assert result.p_value == pytest.approx(0.021, abs=0.0005)


def test_welch_by_hand():
    # x = 1, 2, 3: mean 2, variance 1; y = 4, 6, 8: mean 6, variance 4.
    # se^2 = 1/3 + 4/3 = 5/3; t = -4 / sqrt(5/3); df = (5/3)^2 / ((1/3)^2/2 + (4/3)^2/2) = 50/17
    result = welch([1, 2, 3], [4, 6, 8])
    assert result.t == pytest.approx(-4 / math.sqrt(5 / 3))
    assert result.df == pytest.approx(50 / 17)


def test_welch_on_constant_samples_and_too_few_values():
    assert welch([1.0, 1.0], [1.0, 1.0]).p_value == 1.0
    assert welch([1.0, 1.0], [2.0, 2.0]).p_value == 0.0
    with pytest.raises(ValueError, match="at least two"):
        welch([1.0], [1.0, 2.0])
