"""What a command is asked to do, as typed, frozen options: where results go, what to run,
and (bench.kinds.parallel.launch.LaunchOptions) how to launch it.

The field names are the command line's flags (``batch_sizes`` for ``--batch-sizes``) and
the values are Python values; ``None`` means "the suite's" or "the default". Nothing here
checks a value: the API does, before any work, with the same errors as the command line.
Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TypeVar

from bench import defaults
from bench.kinds.parallel.launch import LaunchOptions

__all__ = ["Destinations", "LaunchOptions", "OptimOptions", "RunOptions", "TrainOptions", "from_namespace"]


@dataclasses.dataclass(frozen=True)
class Destinations:
    """Where a measuring command's run goes: the results root (the run folder is
    ``results/run_id``), the history (default ``results/history.sqlite``), the run folder's
    name (default: time + random) and the machine it is filed under (default:
    ``$CONVBENCH_MACHINE``, else the GPU's UUID or the CPU model; bench.measure.machine)."""

    results: Path | str = defaults.RESULTS
    history: Path | str | None = None
    run_id: str | None = None
    machine: str | None = None


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """``convbench run``: a suite (a shipped suite's name, a TOML file, or a dict shaped like
    one; None: nightly where CUDA is available, else smoke) and what overrides it."""

    suite: str | Path | dict | None = None
    # overrides of the suite's keys
    device: str | None = None
    models: list[str] | str | None = None
    optimizers: list[str] | str | None = None
    batch_sizes: list[int] | None = None
    precision: list[str] | None = None
    dataset: str | None = None
    steps: int | None = None
    warmup: int | None = None
    repeats: int | None = None
    threads: int | None = None
    detailed: bool = False
    isolate: bool = False
    tag: list[str] | None = None  # labels of the run (run.json's tags), besides the suite's
    # switches (timm's benchmark script's, and models by reference)
    model_kwargs: dict | None = None
    input_size: list[int] | None = None
    num_classes: int | None = None
    channels_last: bool = False
    compile: bool = False
    compile_mode: str | None = None
    amp: bool = False
    lr: list[float] | None = None
    momentum: list[float] | None = None
    betas: list[list[float]] | None = None
    eps: list[float] | None = None
    weight_decay: list[float] | None = None
    peak_tflops: float | None = None
    # what else each case measures
    find_max_batch: bool = False
    no_memory_pass: bool = False
    no_rf: bool = False
    predict_ahead: bool = False
    memory_cap: int | None = None
    memory_limit: float | None = None
    # data and limits
    data_root: str | None = None
    download: bool = False
    no_limits: bool = False
    no_model_code: bool = False


@dataclasses.dataclass(frozen=True)
class OptimOptions:
    """``convbench optim``: the optimizer step alone on each model's parameters."""

    models: list[str] = dataclasses.field(default_factory=lambda: ["resnet18"])
    optimizers: list[str] | str = "all"
    precision: list[str] = dataclasses.field(default_factory=lambda: ["fp32"])
    device: str = "auto"
    steps: int = 20
    warmup: int = 3
    repeats: int = 5
    bandwidth_mib: int | None = None
    no_model_code: bool = False


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    """``convbench train``: a training suite's grid of (model, recipe, seed) to accuracy."""

    suite: str | Path = "mnist"
    data_root: str | None = None
    download: bool = False
    device: str | None = None
    models: list[str] | str | None = None
    recipes: list[str] | str | None = None
    seeds: int | None = None
    epochs: int | None = None
    steps: int | None = None
    batch_size: int | None = None
    target: float | None = None
    stop_at_target: bool = False
    no_limits: bool = False
    no_model_code: bool = False


Options = TypeVar("Options")


def from_namespace(kind: type[Options], namespace: object) -> Options:
    """``kind`` (an options dataclass) filled from the attributes of ``namespace`` (parsed
    flags) that it has; the others keep their defaults."""
    names = {field.name for field in dataclasses.fields(kind)}
    return kind(**{name: value for name, value in vars(namespace).items() if name in names})


def with_flags(kind: type[Options], flags: dict[str, object], **given: object) -> Options:
    """``kind`` from keyword ``flags`` as a Python caller gives them. Raises TypeError naming
    an unknown flag and the valid ones."""
    names = sorted(field.name for field in dataclasses.fields(kind))
    for name in flags:
        if name not in names:
            raise TypeError(f"unknown flag {name!r}; valid: {', '.join(names)}")
    return kind(**given, **flags)
