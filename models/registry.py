"""The model registry: one decorator line per model (``register``).

Looking a model up by any name, registered or a reference, is ``models.catalog``'s; this
module only holds what was registered, so the modules that register models and the one that
resolves references both build on it without importing each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn


class UnknownNameError(ValueError):
    """A name that is not in a registry; the message lists the valid names."""

    def __init__(self, kind: str, name: str, valid: list[str]) -> None:
        self.kind = kind
        self.name = name
        self.valid = valid
        super().__init__(f"unknown {kind} {name!r}; valid {kind}s: {', '.join(valid)}")


@dataclass(frozen=True)
class ModelSpec:
    """What the suite needs to know about a model before building it.

    ``input_shape`` is (channels, height, width) of one sample at the model's natural
    resolution; ``num_classes`` is the default width of its output. Either is ``None`` only
    for a ``package.module:function`` reference that does not say (then ``--input-size``
    must, and the class count is read from the output's width).
    """

    name: str
    builder: Callable[..., nn.Module]
    input_shape: tuple[int, int, int] | None
    num_classes: int | None
    family: str


_REGISTRY: dict[str, ModelSpec] = {}


def register(
    name: str, *, input_shape: tuple[int, int, int], num_classes: int, family: str
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Add a builder to the registry under ``name`` (a decorator).

    The builder returns a randomly initialised ``nn.Module`` taking input
    (N, in_channels, H, W) and giving logits (N, num_classes); it must accept the keyword
    arguments ``in_channels`` and ``num_classes``. ``input_shape`` is (C, H, W) of one sample
    at the model's natural resolution, ``num_classes`` its default class count, ``family`` a
    free-form group name shown by ``convbench models``. Registering a name twice raises
    ValueError. A name holding ``:`` would read as a model reference and is refused.
    """
    if ":" in name:
        raise ValueError(f"model name {name!r} holds ':', which marks a model reference; choose another")

    def add(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelSpec(name, builder, input_shape, num_classes, family)
        return builder

    return add


def registered(name: str) -> ModelSpec | None:
    """The entry registered under ``name``, or None."""
    return _REGISTRY.get(name)


def registered_names() -> list[str]:
    """Names registered in this process, in registration order."""
    return list(_REGISTRY)
