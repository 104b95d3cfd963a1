"""The model registry: one decorator line per model, one lookup for everything else."""

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
    resolution; ``num_classes`` is the default width of its output.
    """

    name: str
    builder: Callable[..., nn.Module]
    input_shape: tuple[int, int, int]
    num_classes: int
    family: str


_REGISTRY: dict[str, ModelSpec] = {}


def register(
    name: str, *, input_shape: tuple[int, int, int], num_classes: int, family: str
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Add a builder to the registry under ``name``."""

    def add(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelSpec(name, builder, input_shape, num_classes, family)
        return builder

    return add


def available() -> list[str]:
    """Names of all registered models, in registration order."""
    return list(_REGISTRY)


def spec(name: str) -> ModelSpec:
    """The registry entry for ``name``; raises UnknownNameError listing the valid names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownNameError("model", name, available()) from None


def build(name: str, **kwargs: object) -> nn.Module:
    """Build a randomly initialised model by name.

    Keyword arguments go to the builder: ``in_channels`` and ``num_classes`` for every
    model, ``width`` for the CIFAR family.
    """
    entry = spec(name)
    kwargs.setdefault("in_channels", entry.input_shape[0])
    kwargs.setdefault("num_classes", entry.num_classes)
    return entry.builder(**kwargs)
