"""Optimizers by name: the textbook ones and torch.optim with each implementation forced."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch.optim import Optimizer

from models.registry import UnknownNameError
from optimizers.hyperparameters import check_beta, check_eps, check_lr, check_weight_decay
from optimizers.textbook import SGDM, Adam, CompiledAdam, CompiledSGDM

#: Tensors shaped like the parameter that each algorithm keeps per parameter.
STATE_BUFFERS = {"adam": 2, "sgdm": 1}


@dataclass(frozen=True)
class OptimizerSpec:
    """A registry entry. ``algorithm`` is ``adam`` or ``sgdm``; ``implementation`` is
    ``for-loop``, ``foreach``, ``fused`` or ``compiled``; ``source`` is ``textbook`` or ``torch``."""

    name: str
    builder: Callable[..., Optimizer]
    algorithm: str
    implementation: str
    source: str


_REGISTRY: dict[str, OptimizerSpec] = {}


def register(
    name: str, *, algorithm: str, implementation: str, source: str
) -> Callable[[Callable[..., Optimizer]], Callable[..., Optimizer]]:
    """Add an optimizer builder ``builder(params, **hyperparameters)`` under ``name``."""

    def add(builder: Callable[..., Optimizer]) -> Callable[..., Optimizer]:
        if algorithm not in STATE_BUFFERS:
            raise ValueError(f"algorithm must be one of {sorted(STATE_BUFFERS)}, got {algorithm!r}")
        _REGISTRY[name] = OptimizerSpec(name, builder, algorithm, implementation, source)
        return builder

    return add


def available() -> list[str]:
    """Names of all registered optimizers, in registration order."""
    return list(_REGISTRY)


def spec(name: str) -> OptimizerSpec:
    """The registry entry for ``name``; raises UnknownNameError listing the valid names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownNameError("optimizer", name, available()) from None


def build(name: str, params: Iterable, **hyperparameters: object) -> Optimizer:
    """Build the optimizer ``name`` over ``params``.

    Adam-family optimizers take ``lr``, ``betas``, ``eps`` and ``weight_decay``; SGDM-family
    ones ``lr``, ``momentum`` and ``weight_decay`` (L2 added to the gradient, as torch.optim does).
    Invalid values raise ValueError naming the hyperparameter.
    """
    return spec(name).builder(params, **hyperparameters)


def state_buffers(name: str) -> int:
    """Theoretical number of parameter-shaped state tensors the optimizer keeps per parameter."""
    return STATE_BUFFERS[spec(name).algorithm]


def _torch_adam(implementation: str) -> Callable[..., Optimizer]:
    def builder(
        params: Iterable,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> Optimizer:
        check_lr(lr)
        check_beta("betas[0]", betas[0])
        check_beta("betas[1]", betas[1])
        check_eps(eps)
        check_weight_decay(weight_decay)
        return torch.optim.Adam(
            params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, **_FORCE[implementation]
        )

    return builder


def _torch_sgdm(implementation: str) -> Callable[..., Optimizer]:
    def builder(params: Iterable, lr: float = 1e-2, momentum: float = 0.9, weight_decay: float = 0.0) -> Optimizer:
        check_lr(lr)
        check_beta("momentum", momentum)
        check_weight_decay(weight_decay)
        return torch.optim.SGD(
            params,
            lr=lr,
            momentum=momentum,
            dampening=0,
            nesterov=False,
            weight_decay=weight_decay,
            **_FORCE[implementation],
        )

    return builder


_FORCE = {
    "for-loop": dict(foreach=False, fused=False),
    "foreach": dict(foreach=True, fused=False),
    "fused": dict(foreach=False, fused=True),
}


def _textbook(cls: type[Optimizer], foreach: bool) -> Callable[..., Optimizer]:
    def builder(params: Iterable, **hyperparameters: object) -> Optimizer:
        return cls(params, foreach=foreach, **hyperparameters)

    return builder


def _compiled(cls: type[Optimizer]) -> Callable[..., Optimizer]:
    def builder(params: Iterable, **hyperparameters: object) -> Optimizer:
        return cls(params, **hyperparameters)

    return builder


for _algorithm, _cls, _compiled_cls, _torch in (
    ("adam", Adam, CompiledAdam, _torch_adam),
    ("sgdm", SGDM, CompiledSGDM, _torch_sgdm),
):
    register(_algorithm, algorithm=_algorithm, implementation="for-loop", source="textbook")(
        _textbook(_cls, foreach=False)
    )
    register(f"{_algorithm}-foreach", algorithm=_algorithm, implementation="foreach", source="textbook")(
        _textbook(_cls, foreach=True)
    )
    register(f"{_algorithm}-compiled", algorithm=_algorithm, implementation="compiled", source="textbook")(
        _compiled(_compiled_cls)
    )
    for _implementation, _suffix in (("for-loop", ""), ("foreach", "-foreach"), ("fused", "-fused")):
        register(f"torch-{_algorithm}{_suffix}", algorithm=_algorithm, implementation=_implementation, source="torch")(
            _torch(_implementation)
        )
