"""The hyperparameters the registry's optimizers take: their names, the values an optimizer
was built with, and the validation every optimizer shares (bad values fail by name)."""

from __future__ import annotations

import math

from torch.optim import Optimizer

#: The hyperparameters a suite can set and a record keeps, each given to the optimizers that take it.
HYPERPARAMETERS = ("lr", "momentum", "betas", "eps", "weight_decay")


def used(optimizer: Optimizer) -> dict:
    """The optimizer's ``HYPERPARAMETERS`` as JSON-ready values (tuples as lists);
    weight_decay only when set, so that records of undecayed cases keep their old identity."""
    values = {k: optimizer.defaults[k] for k in HYPERPARAMETERS if optimizer.defaults.get(k) not in (None, 0)}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def _real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    return float(value)


def check_lr(lr: float) -> None:
    """The learning rate eta must be >= 0."""
    if _real("lr", lr) < 0:
        raise ValueError(f"lr (learning rate) must be >= 0, got {lr}")


def check_beta(name: str, beta: float) -> None:
    """A decay rate beta must lie in the open interval (0, 1)."""
    if not 0 < _real(name, beta) < 1:
        raise ValueError(f"{name} must be in (0, 1), got {beta}")


def check_eps(eps: float) -> None:
    """Adam's epsilon must be >= 0."""
    if _real("eps", eps) < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")


def check_weight_decay(weight_decay: float) -> None:
    """The L2 weight-decay coefficient lambda must be >= 0."""
    if _real("weight_decay", weight_decay) < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
