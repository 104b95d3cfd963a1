"""Closed forms of SGDM and Adam under a constant gradient.

The gradient is held at ``c`` for every step, the weight starts at w(0) = 0 and all
state at zero; ``t`` >= 1 counts the steps taken.

SGDM (m <- beta m + c, w <- w - lr m):
    m(t) = c (1 - beta^t) / (1 - beta)
    w(t) = -lr c / (1 - beta) * (t - beta (1 - beta^t) / (1 - beta))
so w is linear in c.

Adam (bias-corrected):
    m(t) = c (1 - beta1^t),  v(t) = c^2 (1 - beta2^t),  m^ = c,  v^ = c^2
    w(t) = -lr t c / (|c| + eps)
so with eps = 0 every step moves w by exactly -lr sign(c), whatever the size of c.
"""

from __future__ import annotations

import math

from optimizers.hyperparameters import check_beta, check_eps, check_lr


def _check_step(t: int) -> None:
    if isinstance(t, bool) or not isinstance(t, int) or t < 1:
        raise ValueError(f"t (step) must be an integer >= 1, got {t!r}")


def _one_minus_power(beta: float, t: int) -> float:
    """1 - beta^t without the cancellation that loses digits when beta is close to 1."""
    return -math.expm1(t * math.log(beta))


def sgdm_constant_gradient(t: int, c: float, lr: float, beta: float) -> dict[str, float]:
    """Momentum buffer ``m`` and weight ``w`` of SGDM after ``t`` steps of gradient ``c``."""
    _check_step(t)
    check_lr(lr)
    check_beta("beta", beta)
    decayed = _one_minus_power(beta, t)
    m = c * decayed / (1 - beta)
    w = -lr * c / (1 - beta) * (t - beta * decayed / (1 - beta))
    return {"m": m, "w": w}


def adam_constant_gradient(
    t: int, c: float, lr: float, beta1: float, beta2: float, eps: float = 0.0
) -> dict[str, float]:
    """Adam's ``m``, ``v``, ``m_hat``, ``v_hat`` and weight ``w`` after ``t`` steps of gradient ``c``.

    With ``c = 0`` and ``eps = 0`` the update is 0/0; that raises ValueError rather than
    returning NaN.
    """
    _check_step(t)
    check_lr(lr)
    check_beta("beta1", beta1)
    check_beta("beta2", beta2)
    check_eps(eps)
    if c == 0 and eps == 0:
        raise ValueError("Adam's update is 0/0 for a zero gradient (c = 0) with eps = 0; give eps > 0")
    return {
        "m": c * _one_minus_power(beta1, t),
        "v": c * c * _one_minus_power(beta2, t),
        "m_hat": c,
        "v_hat": c * c,
        "w": -lr * t * c / (abs(c) + eps),
    }
