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
    isolate = false           # each case in a process of its own (bench.isolation)   (default false)

    [[grid]]
    models = ["cnn", "resnet20"]   # registry names, or "all"
    optimizers = ["adam", "sgdm"]  # registry names, or "all"
    batch_sizes = [32]
    precision = ["fp32"]           # fp32 | tf32 | bf16 | fp16   (default ["fp32"])
    channels_last = [false]        # (default [false])
    compile = [false]              # torch.compile   (default [false])
    strategy = ["ddp", "zero1"]    # data parallel: ddp | zero1 | fsdp   (default: none, one process)
    world_sizes = [1, 2]           # ranks per case   (default when launched: 1 and all)
    sync_batchnorm = [false]       # BatchNorm as torch.nn.SyncBatchNorm   (default [false])

``load_suite`` takes a shipped suite's name (``smoke``, ``nightly``, ``full``; see
``shipped()``) or the path of a TOML file. Every key, type and value is checked when the
suite is loaded: a problem raises SuiteError naming the file and the key, before anything
runs. ``Suite.to_toml()`` writes the suite back, resolved (defaults filled in, ``all``
expanded), as it is kept in each run folder.

Other top-level tables can be plugged in through ``SECTIONS``; any other key is an error.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import models
import optimizers
from bench import data
from bench.distributed import STRATEGIES
from bench.record import case_id
from bench.toml_writer import dumps

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")


#: Optional top-level tables besides [suite] and [[grid]]: name -> a function that checks
#: the table (raising ValueError that names the bad key) and returns its parsed form, which
#: lands in ``Suite.sections[name]``. Adding a section is one line here.
def _rf_section(table: dict) -> object:
    from bench.receptive.section import rf_section_from_toml

    return rf_section_from_toml(table)


SECTIONS: dict[str, Callable[[dict], object]] = {"rf": _rf_section}

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


class SuiteError(ValueError):
    """A suite that cannot be run as written; the message names the file and the key."""


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

    def config(self) -> dict:
        """The fields that identify the case (record.CASE_FIELDS)."""
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
        }

    @property
    def case_id(self) -> str:
        return case_id(self.config())


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
    sections: dict[str, object] = field(default_factory=dict)  # parsed, by SECTIONS
    section_tables: dict[str, dict] = field(default_factory=dict)  # as written, for to_toml

    def cases(self) -> list[Case]:
        """Every case of every grid block, in order, each once."""
        found: dict[str, Case] = {}
        for grid in self.grids:
            for model, optimizer, batch_size, precision, channels_last, compile_, parallel in itertools.product(
                grid.models,
                grid.optimizers,
                grid.batch_sizes,
                grid.precision,
                grid.channels_last,
                grid.compile,
                grid.parallel(),
            ):
                input_shape, num_classes = _input(self.dataset, model)
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
                )
                found.setdefault(case.case_id, case)
        return list(found.values())

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
        grids = [{k: list(v) for k, v in dataclasses.asdict(grid).items() if v} for grid in self.grids]
        return dumps({"suite": table, "grid": grids, **self.section_tables})


def _input(dataset: str, model: str) -> tuple[tuple[int, int, int], int]:
    """One sample's shape and the number of classes: the dataset's, or the model's own for
    synthetic data."""
    source = models.spec(model) if dataset == data.SYNTHETIC else data.DATASETS[dataset]
    return tuple(source.input_shape), source.num_classes


# Checks: each takes the raw value and where it came from, and returns the clean value.


def _type_name(value: object) -> str:
    return type(value).__name__


def _positive_int(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SuiteError(f"{where}: expected a positive integer, got {value!r} ({_type_name(value)})")
    return value


def _bool(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise SuiteError(f"{where}: expected true or false, got {value!r} ({_type_name(value)})")
    return value


def _text(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise SuiteError(f"{where}: expected a string, got {value!r} ({_type_name(value)})")
    return value


def _one_of(choices: tuple[str, ...] | list[str]) -> Callable[[object, str], str]:
    def check(value: object, where: str) -> str:
        if _text(value, where) not in choices:
            raise SuiteError(f"{where}: {value!r} is not one of {', '.join(choices)}")
        return value

    return check


def _device(value: object, where: str) -> str:
    if not _DEVICE.match(_text(value, where)):
        raise SuiteError(f"{where}: {value!r} is not a device; expected auto, cpu, cuda or cuda:N")
    return value


def _list_of(check: Callable[[object, str], object]) -> Callable[[object, str], tuple]:
    def check_list(value: object, where: str) -> tuple:
        if not isinstance(value, list) or not value:
            raise SuiteError(f"{where}: expected a non-empty list, got {value!r} ({_type_name(value)})")
        return tuple(dict.fromkeys(check(item, f"{where}[{i}]") for i, item in enumerate(value)))

    return check_list


def _registry_names(kind: str, available: Callable[[], list[str]]) -> Callable[[object, str], tuple[str, ...]]:
    def check(value: object, where: str) -> tuple[str, ...]:
        if value == "all":
            return tuple(available())
        names = _list_of(_text)(value, where)
        valid = available()
        for index, name in enumerate(names):
            if name not in valid:
                raise SuiteError(f"{where}[{index}]: unknown {kind} {name!r}; valid {kind}s: {', '.join(valid)}")
        return names

    return check


_SUITE_KEYS: dict[str, Callable[[object, str], object]] = {
    "name": _text,
    "description": _text,
    "device": _device,
    "dataset": _one_of(data.names()),
    "steps": _positive_int,
    "warmup": _positive_int,
    "repeats": _positive_int,
    "detailed": _bool,
    "isolate": _bool,
}
_GRID_KEYS: dict[str, Callable[[object, str], tuple]] = {
    "models": _registry_names("model", models.available),
    "optimizers": _registry_names("optimizer", optimizers.available),
    "batch_sizes": _list_of(_positive_int),
    "precision": _list_of(_one_of(PRECISIONS)),
    "channels_last": _list_of(_bool),
    "compile": _list_of(_bool),
    "strategy": _list_of(_one_of(STRATEGIES)),
    "world_sizes": _list_of(_positive_int),
    "sync_batchnorm": _list_of(_bool),
}
_GRID_REQUIRED = ("models", "optimizers", "batch_sizes")


def _table(value: object, where: str, known: dict) -> dict:
    if not isinstance(value, dict):
        raise SuiteError(f"{where}: expected a table, got {value!r} ({_type_name(value)})")
    for key in value:
        if key not in known:
            raise SuiteError(f"{where}.{key}: unknown key; valid keys: {', '.join(known)}")
    return {key: known[key](item, f"{where}.{key}") for key, item in value.items()}


def parse_suite(document: dict, source: str, default_name: str) -> Suite:
    """Check a parsed TOML document and build the Suite; ``source`` names it in errors."""
    top_level = ("suite", "grid", *SECTIONS)
    for key in document:
        if key not in top_level:
            raise SuiteError(f"{source}: {key}: unknown top-level key; valid: {', '.join(top_level)}")
    settings = _table(document.get("suite", {}), f"{source}: [suite]", _SUITE_KEYS)
    settings.setdefault("name", default_name)

    blocks = document.get("grid", [])
    if not isinstance(blocks, list):
        raise SuiteError(f"{source}: grid: expected [[grid]] blocks, got {_type_name(blocks)}")
    grids = []
    for index, block in enumerate(blocks, start=1):
        where = f"{source}: [[grid]] #{index}"
        checked = _table(block, where, _GRID_KEYS)
        missing = [key for key in _GRID_REQUIRED if key not in checked]
        if missing:
            raise SuiteError(f"{where}: missing {', '.join(missing)}")
        grids.append(Grid(**checked))

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
    return Suite(grids=tuple(grids), sections=sections, section_tables=section_tables, **settings)


def shipped() -> list[str]:
    """Names of the suites shipped with convbench."""
    folder = resources.files("bench") / "suites"
    return sorted(entry.name.removesuffix(".toml") for entry in folder.iterdir() if entry.name.endswith(".toml"))


def load_suite(name_or_path: str | Path) -> Suite:
    """A shipped suite by name, or a suite file by path."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise SuiteError(f"{path}: no such suite file")
        text, source = path.read_text(encoding="utf-8"), str(path)
    else:
        shipped_file = resources.files("bench") / "suites" / f"{name_or_path}.toml"
        if not shipped_file.is_file():
            raise SuiteError(
                f"{name_or_path}: no such suite; shipped suites: {', '.join(shipped())}, or give a .toml file"
            )
        text, source = shipped_file.read_text(encoding="utf-8"), str(shipped_file)
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise SuiteError(f"{source}: not valid TOML: {error}") from None
    return parse_suite(document, source, Path(source).stem)
