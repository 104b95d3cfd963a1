"""Before any work: the device a run names, and whether each case can run on it at all
(``SetupError``); the device's name as records give it."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Protocol

import torch

import models
from bench.measure import precision


class SetupError(ValueError):
    """A case that cannot run here at all (no such device, a precision the device lacks, a
    model that cannot take the input); raised before anything runs."""


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SetupError(f"device {name!r}: CUDA is not available on this machine; use --device cpu")
        index = torch.cuda.current_device() if device.index is None else device.index
        if index >= torch.cuda.device_count():
            raise SetupError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        device = torch.device("cuda", index)
    return device


class ModelCase(Protocol):
    """What ``check_cases`` reads of a case: its model and the batches it trains on."""

    model: str
    model_kwargs: dict
    input_shape: tuple[int, int, int]
    num_classes: int
    batch_size: int
    precision: str


def check_cases(cases: Iterable[ModelCase], device: torch.device) -> None:
    """Fail before any work on a case that cannot run: a float32 precision that cannot be
    set as asked (``bench.measure.precision.check``: TF32 off CUDA or turned off by the environment,
    settings PyTorch refuses), or a model that cannot take its input (checked by a forward
    pass on the meta device, which costs no memory)."""
    problem = precision.check({case.precision for case in cases}, device)
    if problem is not None:
        raise SetupError(problem)
    shapes = {(c.model, c.input_shape, c.num_classes, c.batch_size, json.dumps(c.model_kwargs)) for c in cases}
    for model_name, input_shape, num_classes, batch_size, kwargs_json in sorted(shapes):
        kwargs = json.loads(kwargs_json)
        try:
            with torch.device("meta"):
                model = models.build(model_name, in_channels=input_shape[0], num_classes=num_classes, **kwargs)
                output = model(torch.empty(batch_size, *input_shape))
        except NotImplementedError:
            continue  # an operator without a meta kernel: nothing learnt, the real run will tell
        except (RuntimeError, ValueError, TypeError) as error:
            raise SetupError(
                f"model {model_name!r} cannot train on batches of {batch_size} x {tuple(input_shape)}: {error}"
            ) from None
        if tuple(output.shape) != (batch_size, num_classes):
            raise SetupError(
                f"model {model_name!r} gives outputs of shape {tuple(output.shape)} for input "
                f"{tuple(input_shape)}; expected ({batch_size}, {num_classes})"
            )


def device_name(device: torch.device, env: dict) -> str:
    """The GPU's name for a CUDA device, else the CPU's model from ``env`` (``collect_env``)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return env.get("cpu", {}).get("model", "")
