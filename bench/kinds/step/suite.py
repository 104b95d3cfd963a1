"""Suites: TOML files naming a grid of cases and how to measure them.

A suite has one ``[suite]`` table and one or more ``[[grid]]`` blocks; each block is a full
product of its lists, and the suite's cases are the blocks' cases in order (a case named
twice runs once). Several blocks let different models have different batch sizes::

    [suite]
    name = "smoke"            # default: the file's name without .toml
    description = "..."
    device = "auto"           # auto | cpu | cuda | cuda:N   (default auto)
    dataset = "synthetic"     # synthetic | mnist | fashionmnist | cifar10   (default synthetic)
    steps = 10                # timed steps per repeat   (default 20)
    warmup = 5                # untimed steps before timing; >= 1, the first creates the optimizer state   (default 5)
    repeats = 3               # (default 5)
    detailed = false          # also time forward, backward and optimizer step apart   (default false)
    isolate = false           # each case in a process of its own (bench.kinds.step.isolation)   (default false)
    threads = 2               # torch intra-op threads for every case   (default: torch's own)
    tags = ["nightly"]        # labels of the run, kept in run.json; compare --baseline-tag picks baselines by them

    input_size = [3, 64, 64]  # (C, H, W) of synthetic samples, for every model   (default: each model's own)
    num_classes = 100         # classes of synthetic labels   (default: each model's own)

    [[grid]]
    models = ["cnn", "resnet20"]   # registry names, model references, or "all"
    optimizers = ["adam", "sgdm"]  # registry names, or "all"
    batch_sizes = [32]
    precision = ["fp32"]           # fp32 | tf32 | bf16 | fp16   (default ["fp32"])
    channels_last = [false]        # (default [false])
    compile = [false]              # torch.compile   (default [false])
    strategy = ["ddp", "zero1"]    # data parallel: ddp | zero1 | fsdp   (default: none, one process)
    world_sizes = [1, 2]           # ranks per case   (default when launched: 1 and all)
    sync_batchnorm = [false]       # BatchNorm as torch.nn.SyncBatchNorm   (default [false])
    compile_mode = ["default"]     # default | reduce-overhead | max-autotune | max-autotune-no-cudagraphs
    lr = [0.1, 0.01]               # hyperparameters, each given to the optimizers that take it:
    momentum = [0.9]               #   lr, momentum, betas ([[0.9, 0.999]]), eps, weight_decay
                                   #   (default: each optimizer's own)

    [models."mypkg.nets:build"]    # keyword arguments for a model's builder
    depth = 18

A model reference is ``package.module:function``, ``torchvision:NAME`` or ``timm:NAME``
(models.references); it is resolved, and its keyword arguments checked, when the suite is
loaded.

``load_suite`` takes a shipped suite's name (``smoke``, ``nightly``, ``full``; see
``shipped()``) or the path of a TOML file. Every key, type and value is checked when the
suite is loaded: a problem raises SuiteError naming the file and the key, before anything
runs. ``Suite.to_toml()`` writes the suite back, resolved (defaults filled in, ``all``
expanded), as it is kept in each run folder.

Other top-level tables can be plugged in through ``SECTIONS``; any other key is an error.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import models
import optimizers
from bench import checks
from bench.checks import COMPILE_MODES, PRECISIONS, STRATEGIES, SuiteError
from bench.measure import data
from bench.record import case_id
from bench.toml_writer import dumps

#: Optimizer hyperparameters a grid can set, each given to the optimizers that take it.
HYPERPARAMETERS = ("lr", "momentum", "betas", "eps", "weight_decay")


#: Optional top-level tables besides [suite] and [[grid]]: name -> a function that checks
#: the table (raising ValueError that names the bad key) and returns its parsed form, which
#: lands in ``Suite.sections[name]``. Adding a section is one line here.
def _rf_section(table: dict) -> object:
    from bench.receptive.section import rf_section_from_toml

    return rf_section_from_toml(table)


SECTIONS: dict[str, Callable[[dict], object]] = {"rf": _rf_section}

#: Bounds on the work one case may ask for (a typo's extra digits); past one, the suite is
#: refused before anything runs. ``--no-limits`` lifts them.
MAX_TIMED_STEPS = 1_000_000  # steps x repeats of one case: every one is a sample in its record
MAX_WARMUP = 10_000
#: How often ``Suite.cases`` reports on a grid it is expanding, in seconds.
PROGRESS_EVERY_S = 1.0
#: A run tag: one word, as a run id is.
TAG = re.compile(r"[A-Za-z0-9._-]{1,100}")


@dataclass(frozen=True)
class Case:
    """One benchmark case: what to train, and how to measure it."""

    model: str
    optimizer: str
    batch_size: int
    precision: str
    channels_last: bool
    compile: bool
    dataset: str
    input_shape: tuple[int, int, int]  # (C, H, W) of one sample
    num_classes: int
    steps: int
    warmup: int
    repeats: int
    detailed: bool
    # data parallel (bench/distributed): None in a single-process case
    strategy: str | None = None  # ddp | zero1 | fsdp
    world_size: int | None = None
    sync_batchnorm: bool | None = None
    model_kwargs: dict = field(default_factory=dict)  # for the model's builder
    compile_mode: str | None = None  # None: the default mode (or not compiled)
    hyperparameters: dict = field(default_factory=dict)  # those that differ from the optimizer's defaults

    def config(self) -> dict:
        """The fields that identify the case (record.CASE_FIELDS) bar ``hyperparameters``,
        which the runner records in full from the optimizer it built."""
        return {
            "model": self.model,
            "optimizer": self.optimizer,
            "batch_size": self.batch_size,
            "precision": self.precision,
            "channels_last": self.channels_last,
            "compile": self.compile,
            "dataset": self.dataset,
            "input_shape": list(self.input_shape),
            "strategy": self.strategy,
            "world_size": self.world_size,
            "sync_batchnorm": self.sync_batchnorm,
            "model_kwargs": dict(self.model_kwargs) or None,
            "compile_mode": self.compile_mode,
        }

    @property
    def case_id(self) -> str:
        return case_id({**self.config(), "hyperparameter_overrides": self.hyperparameters})


@dataclass(frozen=True)
class Grid:
    """One ``[[grid]]`` block, names resolved."""

    models: tuple[str, ...]
    optimizers: tuple[str, ...]
    batch_sizes: tuple[int, ...]
    precision: tuple[str, ...] = ("fp32",)
    channels_last: tuple[bool, ...] = (False,)
    compile: tuple[bool, ...] = (False,)
    # data parallel: strategies x world sizes x SyncBatchNorm; none for single-process cases
    strategy: tuple[str, ...] = ()
    world_sizes: tuple[int, ...] = ()
    sync_batchnorm: tuple[bool, ...] = ()

    def parallel(self) -> list[tuple[str | None, int | None, bool | None]]:
        """(strategy, world size, sync_batchnorm) of each case, smallest world first (the
        one-rank case is the reference of scaling efficiency); one empty triple if none."""
        if not self.strategy:
            return [(None, None, None)]
        if not self.world_sizes:
            raise SuiteError(f"strategy {list(self.strategy)} needs world_sizes (filled in when launched)")
        return list(itertools.product(self.strategy, sorted(self.world_sizes), self.sync_batchnorm or (False,)))

    compile_mode: tuple[str, ...] = ("default",)
    # Hyperparameters: empty means each optimizer's own default.
    lr: tuple[float, ...] = ()
    momentum: tuple[float, ...] = ()
    betas: tuple[tuple[float, float], ...] = ()
    eps: tuple[float, ...] = ()
    weight_decay: tuple[float, ...] = ()

    def size(self) -> int:
        """How many cases the block multiplies out to, worked out without making them (a
        product of lengths, so a grid past the limits costs nothing to count)."""
        lists = (self.models, self.optimizers, self.batch_sizes, self.precision, self.channels_last, self.compile)
        parallel = len(self.strategy) * len(self.world_sizes) * len(self.sync_batchnorm or (False,))
        settings = math.prod(len(getattr(self, key)) for key in HYPERPARAMETERS if getattr(self, key))
        return math.prod(map(len, lists)) * (parallel if self.strategy else 1) * len(self.compile_mode) * settings

    def hyperparameter_grid(self) -> list[dict]:
        """Every combination of the hyperparameters this block sets (one empty dict if none)."""
        given = {key: getattr(self, key) for key in HYPERPARAMETERS if getattr(self, key)}
        return [dict(zip(given, values, strict=True)) for values in itertools.product(*given.values())]


@dataclass(frozen=True)
class Suite:
    name: str
    grids: tuple[Grid, ...]
    description: str = ""
    device: str = "auto"
    dataset: str = data.SYNTHETIC
    steps: int = 20
    warmup: int = 5
    repeats: int = 5
    detailed: bool = False
    isolate: bool = False  # each case in its own process
    threads: int | None = None  # torch intra-op threads for every case (default: torch's own)
    tags: tuple[str, ...] = ()  # labels of the run (e.g. nightly), which baselines can be chosen by
    input_size: tuple[int, int, int] | None = None  # synthetic samples' (C, H, W) for every model
    num_classes: int | None = None  # synthetic labels' class count for every model
    model_kwargs: dict[str, dict] = field(default_factory=dict)  # model name -> builder keyword arguments
    sections: dict[str, object] = field(default_factory=dict)  # parsed, by SECTIONS
    section_tables: dict[str, dict] = field(default_factory=dict)  # as written, for to_toml

    def size(self) -> int:
        """How many cases the grid blocks multiply out to, before a case named twice counts once."""
        return sum(grid.size() for grid in self.grids)

    def check_limits(self) -> None:
        """SuiteError if the suite asks for more work than the limits allow (``checks.MAX_CASES``,
        ``MAX_TIMED_STEPS``, ``MAX_WARMUP``), before any case is made."""
        checks.check_limit("warmup", self.warmup, MAX_WARMUP)
        checks.check_limit(
            f"steps x repeats ({self.steps:,} x {self.repeats:,}), the timed steps of a case,",
            self.steps * self.repeats,
            MAX_TIMED_STEPS,
        )
        checks.check_limit("the number of cases the grid multiplies out to", self.size(), checks.MAX_CASES)

    def cases(self, limits: bool = True, progress: Callable[[int, int], None] | None = None) -> list[Case]:
        """Every case of every grid block, in order, each once. ``limits``: refuse a suite
        past the limits first (``check_limits``); ``progress(made, total)`` is called about
        once a second while a large grid expands."""
        if limits:
            self.check_limits()
        total, made, reported = self.size(), 0, time.monotonic()
        found: dict[str, Case] = {}
        for grid in self.grids:
            combinations = itertools.product(
                grid.models,
                grid.optimizers,
                grid.batch_sizes,
                grid.precision,
                grid.channels_last,
                grid.compile,
                grid.parallel(),
                grid.compile_mode,
                grid.hyperparameter_grid(),
            )
            for (
                model,
                optimizer,
                batch_size,
                precision,
                channels_last,
                compile_,
                parallel,
                mode,
                settings,
            ) in combinations:
                kwargs = self.model_kwargs.get(model, {})
                input_shape, num_classes = self._input(model, kwargs)
                case = Case(
                    model,
                    optimizer,
                    batch_size,
                    precision,
                    channels_last,
                    compile_,
                    self.dataset,
                    input_shape,
                    num_classes,
                    self.steps,
                    self.warmup,
                    self.repeats,
                    self.detailed,
                    *parallel,
                    kwargs,
                    mode if compile_ and mode != "default" else None,
                    _overrides(optimizer, settings),
                )
                found.setdefault(case.case_id, case)
                made += 1
                if progress is not None and time.monotonic() - reported >= PROGRESS_EVERY_S:
                    progress(made, total)
                    reported = time.monotonic()
        return list(found.values())

    def _input(self, model: str, kwargs: dict) -> tuple[tuple[int, int, int], int]:
        """One sample's shape and the number of classes: the dataset's; for synthetic data
        ``input_size`` / ``num_classes`` if set, else the model's own."""
        if self.dataset != data.SYNTHETIC:
            if self.input_size or self.num_classes:
                raise SuiteError(f"input_size and num_classes apply to synthetic data, not to {self.dataset}")
            source = data.DATASETS[self.dataset]
            return tuple(source.input_shape), source.num_classes
        entry = models.spec(model)
        input_shape = self.input_size or entry.input_shape
        if input_shape is None:
            raise SuiteError(
                f"model {model!r} does not say its input shape: give --input-size C,H,W (input_size in [suite]), "
                "or set the function's input_shape attribute"
            )
        num_classes = self.num_classes or entry.num_classes or _output_width(model, kwargs, input_shape)
        return tuple(input_shape), num_classes

    def with_model_kwargs(self, kwargs: dict[str, object], where: str = "--model-kwargs") -> Suite:
        """This suite with ``kwargs`` given to every model's builder (over its [models.NAME]
        table); each model is checked to take them."""
        names = dict.fromkeys(name for grid in self.grids for name in grid.models)
        table = {name: {**self.model_kwargs.get(name, {}), **kwargs} for name in names}
        return dataclasses.replace(self, model_kwargs=_models_table(table, where))

    def override(self, **changes: object) -> Suite:
        """This suite with [suite] keys or grid lists replaced (in every block), e.g. from
        command-line flags; each value is checked as in a file, named by its flag."""
        suite_changes, grid_changes = {}, {}
        for key, value in changes.items():
            where = f"--{key.replace('_', '-')}"
            if key in _SUITE_KEYS:
                suite_changes[key] = _SUITE_KEYS[key](value, where)
            elif key in _GRID_KEYS:
                grid_changes[key] = _GRID_KEYS[key](value, where)
            else:
                raise SuiteError(f"{where}: not a suite setting")
        grids = tuple(dataclasses.replace(grid, **grid_changes) for grid in self.grids)
        for grid in grids:
            _check_hyperparameters(grid, "", lambda key: f"--{key.replace('_', '-')}")
        return dataclasses.replace(self, grids=grids, **suite_changes)

    def to_toml(self) -> str:
        table = {
            "name": self.name,
            "description": self.description,
            "device": self.device,
            "dataset": self.dataset,
            "steps": self.steps,
            "warmup": self.warmup,
            "repeats": self.repeats,
            "detailed": self.detailed,
            "isolate": self.isolate,
        }
        if self.input_size is not None:
            table["input_size"] = list(self.input_size)
        if self.num_classes is not None:
            table["num_classes"] = self.num_classes
        if self.threads is not None:
            table["threads"] = self.threads
        if self.tags:
            table["tags"] = list(self.tags)
        grids = [
            {k: [list(x) if isinstance(x, tuple) else x for x in v] for k, v in dataclasses.asdict(grid).items() if v}
            for grid in self.grids
        ]
        document = {"suite": table, "grid": grids}
        if self.model_kwargs:
            document["models"] = self.model_kwargs
        return dumps({**document, **self.section_tables})


def single_case(
    model: str,
    optimizer: str,
    batch_size: int,
    precision: str = "fp32",
    channels_last: bool = False,
    input_size: list[int] | None = None,
    num_classes: int | None = None,
) -> Case:
    """One case on synthetic data (one untimed and one timed step), its input and classes
    worked out as a suite's are: ``input_size`` (C, H, W) and ``num_classes`` if given, else
    the model's own. Raises SuiteError naming the flag for a bad value, or a model that does
    not say its input shape when ``input_size`` is not given."""
    grid = Grid((model,), (optimizer,), (batch_size,), (precision,), (channels_last,))
    suite = Suite(name="single", grids=(grid,), steps=1, warmup=1, repeats=1)
    given = {"input_size": input_size, "num_classes": num_classes}
    return suite.override(**{key: value for key, value in given.items() if value is not None}).cases()[0]


def _output_width(model: str, kwargs: dict, input_shape: tuple[int, int, int]) -> int:
    """The class count of a model that does not declare one: its output's width, from a
    forward pass on the meta device (no memory, no arithmetic)."""
    import torch

    try:
        with torch.device("meta"):
            output = models.build(model, in_channels=input_shape[0], **kwargs)(torch.empty(2, *input_shape))
    except Exception as error:  # noqa: BLE001  (whatever the user's model raises, say which model)
        raise SuiteError(
            f"model {model!r} fails on input {tuple(input_shape)}: {type(error).__name__}: {error}"
        ) from None
    if output.dim() != 2:
        raise SuiteError(f"model {model!r} gives outputs of shape {tuple(output.shape)}; expected (N, classes)")
    return int(output.shape[1])


@functools.cache
def _defaults(optimizer: str) -> dict:
    return _optimizer_defaults(optimizer, {})


def _optimizer_defaults(optimizer: str, settings: dict) -> dict:
    """The hyperparameters ``optimizer`` ends up with given ``settings``; ValueError names a
    bad value, TypeError one it does not take."""
    import torch

    built = optimizers.build(optimizer, [torch.nn.Parameter(torch.zeros(1))], **settings)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in built.defaults.items()}


def _overrides(optimizer: str, settings: dict) -> dict:
    """Of ``settings``, those ``optimizer`` takes and that differ from its defaults."""
    taken = {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items() if k in _takes(optimizer)}
    defaults = _defaults(optimizer)
    return {k: v for k, v in taken.items() if defaults.get(k) != v}


def _check_hyperparameters(grid: Grid, where: str, key_name: Callable[[str], str]) -> None:
    """Each hyperparameter the block sets is taken by one of its optimizers at least, and
    every value is valid for each optimizer that takes it; errors name the block (``where``)
    and the key as ``key_name`` writes it."""
    for key in HYPERPARAMETERS:
        if getattr(grid, key) and not any(key in _takes(name) for name in grid.optimizers):
            takers = [name for name in optimizers.available() if key in _takes(name)]
            raise SuiteError(
                f"{key_name(key)}: none of the optimizers {', '.join(grid.optimizers)} takes {key}; "
                f"optimizers that do: {', '.join(takers)}"
            )
    for settings in grid.hyperparameter_grid():
        for name in grid.optimizers:
            try:
                _optimizer_defaults(name, {k: v for k, v in settings.items() if k in _takes(name)})
            except ValueError as error:
                raise SuiteError(f"{where + ': ' if where else ''}optimizer {name!r}: {error}") from None


def _takes(optimizer: str) -> tuple[str, ...]:
    """The HYPERPARAMETERS that ``optimizer`` accepts."""
    return tuple(key for key in HYPERPARAMETERS if key in _defaults(optimizer))


def _model_names(value: object, where: str) -> tuple[str, ...]:
    """Registry names or model references (resolved here, so a bad one fails now), or "all"."""
    if value == "all":
        return tuple(models.available())
    names = checks.list_of(checks.text)(value, where)
    for index, name in enumerate(names):
        try:
            models.spec(name)
        except models.UnknownNameError as error:
            raise SuiteError(f"{where}[{index}]: {error}") from None
    return names


def _input_size(value: object, where: str) -> tuple[int, int, int]:
    if not isinstance(value, list | tuple) or len(value) != 3:
        raise SuiteError(f"{where}: expected [C, H, W], three positive integers, got {value!r}")
    return tuple(checks.positive_int(item, f"{where}[{i}]") for i, item in enumerate(value))


def _models_table(value: object, where: str) -> dict[str, dict]:
    """``{model: {keyword: value}}``: each model resolved and checked to take its arguments."""
    if not isinstance(value, dict):
        raise SuiteError(f"{where}: expected a table of model = {{keyword arguments}}, got {value!r}")
    for name, kwargs in value.items():
        if not isinstance(kwargs, dict):
            raise SuiteError(f"{where}.{name}: expected a table of keyword arguments, got {kwargs!r}")
        try:
            models.check_kwargs(name, kwargs)
        except ValueError as error:
            raise SuiteError(f"{where}.{name}: {error}") from None
    return {name: dict(kwargs) for name, kwargs in value.items() if kwargs}


def _registry_names(kind: str, available: Callable[[], list[str]]) -> Callable[[object, str], tuple[str, ...]]:
    def check(value: object, where: str) -> tuple[str, ...]:
        if value == "all":
            return tuple(available())
        names = checks.list_of(checks.text)(value, where)
        valid = available()
        for index, name in enumerate(names):
            if name not in valid:
                raise SuiteError(f"{where}[{index}]: unknown {kind} {name!r}; valid {kind}s: {', '.join(valid)}")
        return names

    return check


def _tag(value: object, where: str) -> str:
    """A run tag: 1 to 100 letters, digits, '.', '_' or '-' (one word, as run ids are)."""
    if not (isinstance(value, str) and TAG.fullmatch(value)):
        raise SuiteError(f"{where}: {value!r} is not a tag: 1 to 100 letters, digits, '.', '_' or '-'")
    return value


_SUITE_KEYS: dict[str, Callable[[object, str], object]] = {
    "name": checks.text,
    "description": checks.text,
    "device": checks.device,
    "dataset": checks.one_of(data.names()),
    "steps": checks.positive_int,
    "warmup": checks.positive_int,
    "repeats": checks.positive_int,
    "detailed": checks.boolean,
    "isolate": checks.boolean,
    "threads": checks.positive_int,
    "tags": checks.list_of(_tag),
    "input_size": _input_size,
    "num_classes": checks.positive_int,
}
_GRID_KEYS: dict[str, Callable[[object, str], tuple]] = {
    "models": _model_names,
    "optimizers": _registry_names("optimizer", optimizers.available),
    "batch_sizes": checks.list_of(checks.positive_int),
    "precision": checks.list_of(checks.one_of(PRECISIONS)),
    "channels_last": checks.list_of(checks.boolean),
    "compile": checks.list_of(checks.boolean),
    "strategy": checks.list_of(checks.one_of(STRATEGIES)),
    "world_sizes": checks.list_of(checks.positive_int),
    "sync_batchnorm": checks.list_of(checks.boolean),
    "compile_mode": checks.list_of(checks.one_of(COMPILE_MODES)),
    "lr": checks.list_of(checks.real),
    "momentum": checks.list_of(checks.real),
    "betas": checks.list_of(checks.pair),
    "eps": checks.list_of(checks.real),
    "weight_decay": checks.list_of(checks.real),
}
_GRID_REQUIRED = ("models", "optimizers", "batch_sizes")


def parse_suite(document: dict, source: str, default_name: str) -> Suite:
    """Check a parsed TOML document and build the Suite; ``source`` names it in errors."""
    top_level = ("suite", "grid", "models", *SECTIONS)
    for key in document:
        if key not in top_level:
            raise SuiteError(f"{source}: {key}: unknown top-level key; valid: {', '.join(top_level)}")
    settings = checks.table(document.get("suite", {}), f"{source}: [suite]", _SUITE_KEYS)
    settings.setdefault("name", default_name)

    blocks = document.get("grid", [])
    if not isinstance(blocks, list):
        raise SuiteError(f"{source}: grid: expected [[grid]] blocks, got {checks.type_name(blocks)}")
    grids = []
    for index, block in enumerate(blocks, start=1):
        where = f"{source}: [[grid]] #{index}"
        checked = checks.table(block, where, _GRID_KEYS)
        missing = [key for key in _GRID_REQUIRED if key not in checked]
        if missing:
            raise SuiteError(f"{where}: missing {', '.join(missing)}")
        grid = Grid(**checked)
        _check_hyperparameters(grid, where, lambda key, where=where: f"{where}.{key}")
        grids.append(grid)
    model_kwargs = _models_table(document.get("models", {}), f"{source}: [models]")

    sections, section_tables = {}, {}
    for name, parse in SECTIONS.items():
        if name in document:
            try:
                sections[name] = parse(document[name])
            except ValueError as error:
                raise SuiteError(f"{source}: [{name}]: {error}") from None
            section_tables[name] = document[name]
    if not grids and not sections:
        raise SuiteError(f"{source}: nothing to run; add a [[grid]] block")
    return Suite(
        grids=tuple(grids), model_kwargs=model_kwargs, sections=sections, section_tables=section_tables, **settings
    )


def shipped() -> list[str]:
    """Names of the suites shipped with convbench."""
    folder = resources.files("bench.kinds.step") / "suites"
    return sorted(entry.name.removesuffix(".toml") for entry in folder.iterdir() if entry.name.endswith(".toml"))


def load_suite(name_or_path: str | Path | dict) -> Suite:
    """A shipped suite by name, a suite file by path, or a suite as a dict shaped like the
    TOML (``{"suite": {...}, "grid": [{...}]}``, as from Python)."""
    if isinstance(name_or_path, dict):
        return parse_suite(name_or_path, "suite", str(name_or_path.get("suite", {}).get("name", "python")))
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise SuiteError(f"{path}: no such suite file")
        try:
            text, source = path.read_text(encoding="utf-8"), str(path)
        except (UnicodeDecodeError, OSError) as error:
            raise SuiteError(f"{path}: cannot be read as TOML text: {error}") from None
    else:
        shipped_file = resources.files("bench.kinds.step") / "suites" / f"{name_or_path}.toml"
        if not shipped_file.is_file():
            raise SuiteError(
                f"{name_or_path}: no such suite; shipped suites: {', '.join(shipped())}, or give a .toml file"
            )
        text, source = shipped_file.read_text(encoding="utf-8"), str(shipped_file)
    return parse_suite(checks.read_toml(text, source), source, Path(source).stem)


def expected_case_ids(run: object) -> list[str] | None:
    """The case ids a run folder's suite (its ``suite.toml``, a bench.storage.store.Run's
    ``suite_toml``) expands to, in suite order; None where the suite cannot be expanded here
    (a model this install lacks). Reading a run folder never imports the model code it names."""
    import tomllib

    from models.references import without_model_code

    try:
        with without_model_code():
            suite = parse_suite(tomllib.loads(run.suite_toml), str(run.path / "suite.toml"), "")
            return [case.case_id for case in suite.cases(limits=False)]
    except Exception:  # noqa: BLE001  (any suite that does not expand here: say how many, not which)
        return None
