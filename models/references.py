"""Models by reference, for networks that are not in the registry.

Three forms, each resolved to a ``ModelSpec`` exactly like a registry name, so everything
downstream (suites, the runner, receptive fields, FLOPs) sees a name and a spec:

- ``package.module:function``: any importable callable returning an ``nn.Module``. Its input
  shape is the callable's ``input_shape`` attribute ``(C, H, W)`` (or ``--input-size``); its
  class count is its ``num_classes`` attribute, else the default of its ``num_classes``
  parameter, else the width of its output. It gets ``in_channels`` and ``num_classes`` only
  if it takes them.
- ``torchvision:NAME``: any torchvision classification model
  (``torchvision.models.list_models(module=torchvision.models)``), randomly initialised; input
  and classes from its first published weights' metadata (nothing is downloaded).
- ``timm:NAME``: any timm model (``timm.list_models()``), randomly initialised; input and
  classes from its ``pretrained_cfg``. timm is optional (``pip install convbench[timm]``).

Installed packages add models by name through the ``convbench.models`` entry-point group;
each entry point names a callable, read as a ``package.module:function`` reference.

A ``package.module:function`` reference imports and calls code named by whoever wrote the
suite or the command line, as a test file runs code under pytest. A job that runs suites it
did not write refuses them with ``--no-model-code`` (or ``CONVBENCH_NO_MODEL_CODE=1``, which
child processes inherit); ``without_model_code()`` does the same for a block, e.g. while a
run folder's suite is read back. Registry names, ``torchvision:NAME``, ``timm:NAME`` and
installed entry points stay allowed: they name code installed on the machine.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
import re
from collections.abc import Callable, Iterator
from importlib import metadata

import torch
from torch import nn

from models.registry import ModelSpec, UnknownNameError
from models.zoo import torchvision_builder

ENTRY_POINT_GROUP = "convbench.models"
#: Set to anything but empty or 0: ``package.module:function`` references are refused.
NO_MODEL_CODE_VARIABLE = "CONVBENCH_NO_MODEL_CODE"
_refusing = [False]  # without_model_code() blocks in force
#: ``package.module:attribute`` with dotted names on both sides, as entry points write them.
_FUNCTION_REFERENCE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


class ModelReferenceError(UnknownNameError):
    """A model reference that cannot be resolved; the message names it and says why."""

    def __init__(self, reference: str, problem: str) -> None:
        ValueError.__init__(self, f"model {reference!r}: {problem}")
        self.kind, self.name, self.valid = "model", reference, []


def is_reference(name: str) -> bool:
    """Whether ``name`` is written as a reference (it holds a colon) rather than a registry name."""
    return ":" in name


def runs_code(name: str) -> bool:
    """Whether ``name`` is a ``package.module:function`` reference: code named by whoever
    wrote it, imported and called (not ``torchvision:`` or ``timm:``)."""
    prefix, colon, _ = name.partition(":")
    return bool(colon) and prefix not in ("torchvision", "timm")


def model_code_refused() -> bool:
    """Whether ``package.module:function`` references are refused now: ``--no-model-code``
    (``NO_MODEL_CODE_VARIABLE``) or inside ``without_model_code()``."""
    return _refusing[0] or os.environ.get(NO_MODEL_CODE_VARIABLE, "") not in ("", "0")


@contextlib.contextmanager
def without_model_code() -> Iterator[None]:
    """Refuse ``package.module:function`` references inside the block (reading a run folder's
    suite back must never import what it names)."""
    before, _refusing[0] = _refusing[0], True
    try:
        yield
    finally:
        _refusing[0] = before


def check_allowed(name: str) -> None:
    """ModelReferenceError if ``name`` runs code (``runs_code``) while that is refused."""
    if runs_code(name) and model_code_refused():
        raise ModelReferenceError(
            name,
            f"a package.module:function reference runs the code it names, and --no-model-code "
            f"({NO_MODEL_CODE_VARIABLE}) refuses that; use a registry name, torchvision:NAME or timm:NAME",
        )


def entry_point_names() -> list[str]:
    """Names of the models installed packages add through ``ENTRY_POINT_GROUP``."""
    return sorted(point.name for point in metadata.entry_points(group=ENTRY_POINT_GROUP))


def resolve(name: str) -> ModelSpec:
    """The spec of a reference or an entry-point model; raises ModelReferenceError."""
    prefix, _, rest = name.partition(":")
    if not rest:
        points = [p for p in metadata.entry_points(group=ENTRY_POINT_GROUP) if p.name == name]
        if not points:
            raise ModelReferenceError(name, "neither a registry name nor an installed entry point")
        return _function_spec(name, points[0].value, family=f"entry point {points[0].value}")
    if prefix == "torchvision":
        return _torchvision_spec(name, rest)
    if prefix == "timm":
        return _timm_spec(name, rest)
    return _function_spec(name, name, family="function")


def _function_spec(name: str, target: str, family: str) -> ModelSpec:
    if not _FUNCTION_REFERENCE.match(target):
        raise ModelReferenceError(
            name, "expected package.module:function, torchvision:NAME or timm:NAME (or a registry name)"
        )
    module_name, _, attribute = target.partition(":")
    try:
        function: object = importlib.import_module(module_name)
    except ImportError as error:
        raise ModelReferenceError(
            name,
            f"cannot import module {module_name!r}: {error} (a module of your own must be importable: run from "
            "the folder that holds it, or add that folder to PYTHONPATH)",
        ) from None
    for part in attribute.split("."):
        if not hasattr(function, part):
            raise ModelReferenceError(name, f"module {module_name!r} has no attribute {attribute!r}")
        function = getattr(function, part)
    if not callable(function):
        raise ModelReferenceError(name, f"{attribute!r} is not callable")
    input_shape = getattr(function, "input_shape", None)
    if input_shape is not None:
        input_shape = _shape(name, input_shape)
    num_classes = getattr(function, "num_classes", None)
    if num_classes is None:
        default = _parameters(function).get("num_classes")
        num_classes = default.default if default is not None and isinstance(default.default, int) else None
    return ModelSpec(name, _adapted(function), input_shape, num_classes, family)


def _shape(name: str, value: object) -> tuple[int, int, int]:
    if not (isinstance(value, tuple | list) and len(value) == 3 and all(isinstance(n, int) and n > 0 for n in value)):
        raise ModelReferenceError(name, f"input_shape must be (C, H, W) of positive integers, got {value!r}")
    return tuple(value)


def _parameters(function: Callable) -> dict[str, inspect.Parameter]:
    try:
        return dict(inspect.signature(function).parameters)
    except (TypeError, ValueError):  # a builtin without a signature: pass nothing extra
        return {}


def _adapted(function: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """``function`` taking ``in_channels`` and ``num_classes`` always, passing on only what it
    accepts; a model that ignores them is checked against its input and output shapes later."""
    parameters = _parameters(function)
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())

    def builder(in_channels: int | None = None, num_classes: int | None = None, **kwargs: object) -> nn.Module:
        for key, value in (("in_channels", in_channels), ("num_classes", num_classes)):
            if value is not None and (key in parameters or open_ended):
                kwargs.setdefault(key, value)
        model = function(**kwargs)
        if not isinstance(model, nn.Module):
            raise TypeError(f"{function.__qualname__} returned {type(model).__name__}, not an nn.Module")
        return model

    # What check_kwargs binds against: the function's own parameters, all by keyword.
    keyword = inspect.Parameter.KEYWORD_ONLY
    builder.__signature__ = inspect.Signature(
        [inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)]
        if open_ended
        else [
            inspect.Parameter("in_channels", keyword, default=None),
            inspect.Parameter("num_classes", keyword, default=None),
            *(
                p.replace(kind=keyword)
                for k, p in parameters.items()
                if k not in ("in_channels", "num_classes") and p.kind is not inspect.Parameter.VAR_POSITIONAL
            ),
        ]
    )
    builder.__doc__ = function.__doc__
    return builder


def _torchvision_spec(name: str, model: str) -> ModelSpec:
    import torchvision

    valid = torchvision.models.list_models(module=torchvision.models)
    if model not in valid:
        raise ModelReferenceError(name, f"not a torchvision classification model; valid: {', '.join(valid)}")
    # The first weights are the model's original ImageNet training; reading their metadata
    # downloads nothing. A vision transformer's size is fixed by its constructor, so that wins.
    weights = next(iter(torchvision.models.get_model_weights(model)))
    size = weights.transforms.keywords.get("crop_size", 224)
    builder = torchvision_builder(model)
    with torch.device("meta"):
        size = getattr(builder(), "image_size", size)
    return ModelSpec(name, builder, (3, size, size), len(weights.meta["categories"]), "torchvision")


def _timm_spec(name: str, model: str) -> ModelSpec:
    try:
        import timm
    except ImportError:
        raise ModelReferenceError(
            name, "timm is not installed; install it (pip install 'convbench[timm]') or use another model"
        ) from None
    if not timm.is_model(model):
        raise ModelReferenceError(name, "not a timm model; see timm.list_models() for the valid names")
    config = timm.get_pretrained_cfg(model)
    input_shape = tuple(config.input_size) if config is not None else None
    num_classes = config.num_classes if config is not None else None

    def builder(in_channels: int = 3, num_classes: int = 1000, **kwargs: object) -> nn.Module:
        return timm.create_model(model, pretrained=False, in_chans=in_channels, num_classes=num_classes, **kwargs)

    builder.__doc__ = f"timm {model}, random weights: output (N, num_classes)."
    return ModelSpec(name, builder, input_shape, num_classes, "timm")
