"""Looking models up: ``spec``, ``build``, ``available`` and ``check_kwargs`` over the registry
(``models.registry``) and model references (``models.references``).

``spec`` and ``build`` take registry names, model references (``package.module:function``,
``torchvision:NAME``, ``timm:NAME``) and the names installed packages add through the
``convbench.models`` entry-point group. A reference is resolved once, when first named, and
then behaves like a registry name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from models import references
from models.registry import ModelSpec, UnknownNameError, registered, registered_names

if TYPE_CHECKING:
    from torch import nn

_RESOLVED: dict[str, ModelSpec] = {}  # references and entry points, resolved when first named


def available() -> list[str]:
    """Names of all registered models, in registration order, then those installed packages
    add through the ``convbench.models`` entry-point group."""
    names = registered_names()
    return names + [name for name in references.entry_point_names() if name not in names]


def spec(name: str) -> ModelSpec:
    """The entry for a registry name, an entry-point name or a model reference.

    Raises UnknownNameError listing the valid names for an unknown plain name, and its
    subclass ModelReferenceError saying what went wrong for a reference that cannot be
    resolved (no such module, function, torchvision or timm model; timm not installed).
    """
    entry = registered(name)
    if entry is not None:
        return entry
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
