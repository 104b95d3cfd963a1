"""The model registry: one decorator line per model, one lookup for everything else.

``spec`` and ``build`` also take model references (``package.module:function``,
``torchvision:NAME``, ``timm:NAME``) and the names installed packages add through the
``convbench.models`` entry-point group; see models.references. A reference is resolved
once, when first named, and then behaves like a registry name.
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
_RESOLVED: dict[str, ModelSpec] = {}  # references and entry points, resolved when first named


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


def available() -> list[str]:
    """Names of all registered models, in registration order, then those installed packages
    add through the ``convbench.models`` entry-point group."""
    from models.references import entry_point_names

    return list(_REGISTRY) + [name for name in entry_point_names() if name not in _REGISTRY]


def spec(name: str) -> ModelSpec:
    """The entry for a registry name, an entry-point name or a model reference.

    Raises UnknownNameError listing the valid names for an unknown plain name, and its
    subclass ModelReferenceError saying what went wrong for a reference that cannot be
    resolved (no such module, function, torchvision or timm model; timm not installed).
    """
    from models import references

    if name in _REGISTRY:
        return _REGISTRY[name]
    references.check_allowed(name)  # before the cache: a reference resolved earlier is refused too
    if name not in _RESOLVED:
        if not references.is_reference(name) and name not in references.entry_point_names():
            raise UnknownNameError("model", name, available())
        _RESOLVED[name] = references.resolve(name)
    return _RESOLVED[name]


def build(name: str, **kwargs: object) -> nn.Module:
    """Build a randomly initialised model by name.

    Keyword arguments go to the builder: ``in_channels`` and ``num_classes`` for every
    model, ``width`` for the CIFAR family, anything a referenced function takes.
    """
    entry = spec(name)
    if entry.input_shape is not None:
        kwargs.setdefault("in_channels", entry.input_shape[0])
    if entry.num_classes is not None:
        kwargs.setdefault("num_classes", entry.num_classes)
    return entry.builder(**kwargs)


def check_kwargs(name: str, kwargs: dict[str, object]) -> None:
    """Raise ValueError naming the model and the argument if its builder cannot take
    ``kwargs`` (checked against the builder's signature; builders taking ``**kwargs`` pass
    them on and are checked when the model is first built on the meta device)."""
    import inspect

    try:
        inspect.signature(spec(name).builder).bind_partial(**kwargs)
    except TypeError as error:
        raise ValueError(f"model {name!r} cannot take the keyword arguments {kwargs}: {error}") from None
