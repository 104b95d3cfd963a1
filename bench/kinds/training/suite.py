"""Training suites: TOML files naming a grid of model x recipe x seed to train to accuracy.

A training suite has one ``[train]`` table, one or more ``[[recipe]]`` tables and one or
more ``[[grid]]`` blocks::

    [train]
    name = "cifar10"             # default: the file's name without .toml
    description = "..."
    device = "auto"              # auto | cpu | cuda | cuda:N   (default auto)
    dataset = "cifar10"          # mnist | fashionmnist | cifar10   (required)
    batch_size = 128
    epochs = 30                  # the budget: epochs, or else steps = N (exactly one of the two)
    target_accuracy = 0.92       # test accuracy, a fraction in (0, 1]   (required)
    stop_at_target = false       # end a training run at the first evaluation at or above target
    eval_every = 0               # steps between test evaluations; 0 = at the end of every epoch
    eval_batch_size = 1000
    augment = true               # crop and flip (default: true for cifar10 only)
    seeds = 3                    # N (seeds 0..N-1) or a list   (default 3 on CUDA, 1 on the CPU)

    [[recipe]]
    name = "sgdm"                # how the grid and the records name it
    optimizer = "sgdm"           # a registry name (`convbench optimizers`)
    lr = 0.1                     # then the optimizer's hyperparameters: lr, momentum, betas,
    momentum = 0.9               #   eps, weight_decay, as optimizers.build takes them
    weight_decay = 5e-4
    schedule = "onecycle"        # constant | step | onecycle   (default constant)
    warmup = 0.25                # onecycle: rising fraction; step: milestones (fractions), gamma

    [[grid]]
    models = ["resnet20", "plain20"]
    recipes = ["sgdm", "adam"]   # recipe names, or "all"

Each (model, recipe, seed) is one training run and one Record. Runs with the same seed
start from the same initial weights and see the same batches in the same order, whatever
the recipe: only what the grid names differs between cases. Everything is checked when the
suite is loaded; a problem raises SuiteError naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import models
import optimizers
from bench import checks
from bench.checks import MAX_CASES, SuiteError, check_limit, read_toml
from bench.kinds.training.datasets import AUGMENTED_BY_DEFAULT
from bench.kinds.training.schedule import SCHEDULES, Schedule
from bench.measure import data
from bench.toml_writer import dumps

#: Seeds per case when a suite does not say, by device kind.
DEFAULT_SEEDS = {"cuda": 3, "cpu": 1}
#: The hyperparameters a recipe may give its optimizer (optimizers.build checks the values).
OPTIMIZER_KEYS = ("lr", "momentum", "betas", "eps", "weight_decay")
SCHEDULE_KEYS = ("schedule", "milestones", "gamma", "warmup")
PRECISION = "fp32"


#: Bounds on a training suite's budget (see bench.kinds.step.suite's limits; --no-limits lifts them).
MAX_EPOCHS = 10_000
MAX_STEPS = 100_000_000


@dataclass(frozen=True)
class Recipe:
    """An optimizer with its hyperparameters and learning-rate schedule."""

    name: str
    optimizer: str
    hyperparameters: dict
    schedule: Schedule

    def settings(self) -> dict:
        """The recipe as the record keeps it: hyperparameters plus the schedule's settings."""
        return {**self.hyperparameters, "schedule": self.schedule.settings()}


@dataclass(frozen=True)
class TrainCase:
    """One training run: a model trained with a recipe from a seed."""

    model: str
    recipe: Recipe
    seed: int
    dataset: str
    input_shape: tuple[int, int, int]
    num_classes: int
    batch_size: int
    epochs: int | None
    steps: int | None
    target_accuracy: float
    stop_at_target: bool
    eval_every: int
    eval_batch_size: int
    augment: bool
    precision: str = PRECISION

    @property
    def model_kwargs(self) -> dict:
        """Keyword arguments for the model's builder: none, training suites build each model
        with its defaults (the shape check before a run asks for them)."""
        return {}

    @property
    def group_id(self) -> str:
        """The case without its seed: seeds of one group are samples of the same thing."""
        return f"{self.model}/{self.recipe.name}/b{self.batch_size}/{self.precision}/{self.dataset}"

    @property
    def case_id(self) -> str:
        return f"{self.group_id}/seed{self.seed}"


@dataclass(frozen=True)
class TrainSuite:
    name: str
    dataset: str
    target_accuracy: float
    recipes: dict[str, Recipe]
    grids: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]  # (models, recipe names) per block
    description: str = ""
    device: str = "auto"
    batch_size: int = 128
    epochs: int | None = None
    steps: int | None = None
    stop_at_target: bool = False
    eval_every: int = 0
    eval_batch_size: int = 1000
    augment: bool | None = None  # None: the dataset's default
    seeds: Sequence[int] | None = None  # None: DEFAULT_SEEDS for the device; N seeds as range(N)

    def resolve(self, device_kind: str) -> TrainSuite:
        """The suite with the device-dependent defaults (seeds, augmentation) filled in."""
        seeds = self.seeds if self.seeds is not None else tuple(range(DEFAULT_SEEDS[device_kind]))
        augment = self.augment if self.augment is not None else self.dataset in AUGMENTED_BY_DEFAULT
        return dataclasses.replace(self, seeds=seeds, augment=augment)

    def override(self, **changes: object) -> TrainSuite:
        """This suite with [train] keys replaced (from command-line flags, each checked as in
        a file and named by its flag); ``models`` and ``recipes`` replace every grid's lists.
        A budget given in epochs replaces one in steps and the other way round."""
        suite_changes = {}
        grids = self.grids
        for key, value in changes.items():
            where = "--target" if key == "target_accuracy" else f"--{key.replace('_', '-')}"
            if key == "models":
                models_ = _models(value, where)
                grids = tuple((models_, recipes) for _, recipes in grids)
            elif key == "recipes":
                names = _recipe_names(value, where, self.recipes)
                grids = tuple((models_, names) for models_, _ in grids)
            elif key == "seeds":
                suite_changes[key] = _seeds(value, where)
            elif key in _KEYS:
                suite_changes[key] = _KEYS[key](value, where)
            else:
                raise SuiteError(f"{where}: not a training-suite setting")
        if "epochs" in suite_changes:
            suite_changes.setdefault("steps", None)
        if "steps" in suite_changes and suite_changes["steps"] is not None:
            suite_changes.setdefault("epochs", None)
        return dataclasses.replace(self, grids=grids, **suite_changes)

    def check_limits(self) -> None:
        """SuiteError if the suite asks for more work than the limits allow: more than
        ``MAX_CASES`` training runs, ``MAX_EPOCHS`` epochs or ``MAX_STEPS`` steps each."""
        seeds = len(self.seeds or (0,))
        check_limit(
            "the number of training runs (models x recipes x seeds)",
            seeds * sum(len(models_) * len(recipes) for models_, recipes in self.grids),
            MAX_CASES,
        )
        check_limit("epochs", self.epochs or 0, MAX_EPOCHS)
        check_limit("steps", self.steps or 0, MAX_STEPS)

    def cases(self, limits: bool = True) -> list[TrainCase]:
        """Every (model, recipe, seed) of every grid block, each once, seeds innermost;
        ``limits``: refuse a suite past the limits first (``check_limits``)."""
        if limits:
            self.check_limits()
        spec = data.DATASETS[self.dataset]
        found: dict[str, TrainCase] = {}
        for models_, recipes in self.grids:
            for model, recipe, seed in itertools.product(models_, recipes, self.seeds or (0,)):
                case = TrainCase(
                    model,
                    self.recipes[recipe],
                    seed,
                    self.dataset,
                    spec.input_shape,
                    spec.num_classes,
                    self.batch_size,
                    self.epochs,
                    self.steps,
                    self.target_accuracy,
                    self.stop_at_target,
                    self.eval_every,
                    self.eval_batch_size,
                    bool(self.augment),
                )
                found.setdefault(case.case_id, case)
        return list(found.values())

    def to_toml(self) -> str:
        """The suite as resolved, in its own format (kept in each run folder as suite.toml)."""
        table = {
            "name": self.name,
            "description": self.description,
            "device": self.device,
            "dataset": self.dataset,
            "batch_size": self.batch_size,
            **({"epochs": self.epochs} if self.epochs is not None else {"steps": self.steps}),
            "target_accuracy": self.target_accuracy,
            "stop_at_target": self.stop_at_target,
            "eval_every": self.eval_every,
            "eval_batch_size": self.eval_batch_size,
        }
        if self.augment is not None:
            table["augment"] = self.augment
        if self.seeds is not None:
            table["seeds"] = list(self.seeds)
        recipes = [
            {"name": r.name, "optimizer": r.optimizer, **_toml_values(r.hyperparameters), **_schedule_table(r.schedule)}
            for r in self.recipes.values()
        ]
        grids = [{"models": list(m), "recipes": list(r)} for m, r in self.grids]
        return dumps({"train": table, "recipe": recipes, "grid": grids})


def _toml_values(values: dict) -> dict:
    return {key: list(value) if isinstance(value, tuple) else value for key, value in values.items()}


def _schedule_table(schedule: Schedule) -> dict:
    settings = schedule.settings()
    return {"schedule": settings.pop("name"), **settings}


def _fraction(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise SuiteError(f"{where}: expected a fraction in (0, 1], got {value!r} ({checks.type_name(value)})")
    return float(value)


def _count(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SuiteError(f"{where}: expected an integer >= 0, got {value!r} ({checks.type_name(value)})")
    return value


def _seeds(value: object, where: str) -> Sequence[int]:
    """``N`` (seeds 0 … N-1, kept as a range until used, so a huge N costs nothing before
    the limits refuse it) or a list of seeds."""
    if isinstance(value, int) and not isinstance(value, bool):
        return range(checks.positive_int(value, where))
    return checks.list_of(_count)(value, where)


def _models(value: object, where: str) -> tuple[str, ...]:
    if value == "all":
        return tuple(models.available())
    names = checks.list_of(checks.text)(value, where)
    valid = models.available()
    for index, name in enumerate(names):
        if name not in valid:
            raise SuiteError(f"{where}[{index}]: unknown model {name!r}; valid models: {', '.join(valid)}")
    return names


def _recipe_names(value: object, where: str, recipes: dict[str, Recipe]) -> tuple[str, ...]:
    if value == "all":
        return tuple(recipes)
    names = checks.list_of(checks.text)(value, where)
    for index, name in enumerate(names):
        if name not in recipes:
            raise SuiteError(f"{where}[{index}]: unknown recipe {name!r}; this suite's recipes: {', '.join(recipes)}")
    return names


_KEYS = {
    "name": checks.text,
    "description": checks.text,
    "device": checks.device,
    "dataset": checks.one_of(list(data.DATASETS)),
    "batch_size": checks.positive_int,
    "epochs": checks.positive_int,
    "steps": checks.positive_int,
    "target_accuracy": _fraction,
    "stop_at_target": checks.boolean,
    "eval_every": _count,
    "eval_batch_size": checks.positive_int,
    "augment": checks.boolean,
    "seeds": _seeds,
}
_RECIPE_KEYS = dict.fromkeys(("name", "optimizer", *OPTIMIZER_KEYS, *SCHEDULE_KEYS), lambda value, where: value)


def _recipe(table: object, where: str) -> Recipe:
    """A [[recipe]] table checked: the optimizer and its hyperparameters by building it on a
    dummy parameter (so a bad value fails now, named), the schedule by constructing it."""
    import torch

    values = checks.table(table, where, _RECIPE_KEYS)
    for key in ("name", "optimizer"):
        if key not in values:
            raise SuiteError(f"{where}: missing {key}")
    name, optimizer = (
        checks.text(values["name"], f"{where}.name"),
        checks.text(values["optimizer"], f"{where}.optimizer"),
    )
    if optimizer not in optimizers.available():
        raise SuiteError(
            f"{where}.optimizer: unknown optimizer {optimizer!r}; valid optimizers: {', '.join(optimizers.available())}"
        )
    hyperparameters = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in OPTIMIZER_KEYS}
    try:
        optimizers.build(optimizer, [torch.zeros(1, requires_grad=True)], **hyperparameters)
    except (TypeError, ValueError) as error:
        raise SuiteError(f"{where}: optimizer {optimizer!r}: {error}") from None
    settings = {k: values[k] for k in SCHEDULE_KEYS if k in values}
    schedule_name = settings.pop("schedule", "constant")
    if schedule_name not in SCHEDULES:
        raise SuiteError(f"{where}.schedule: {schedule_name!r} is not one of {', '.join(SCHEDULES)}")
    if "milestones" in settings:
        settings["milestones"] = tuple(settings["milestones"])
    try:
        schedule = Schedule(schedule_name, **settings)
    except (TypeError, ValueError) as error:
        raise SuiteError(f"{where}: {error}") from None
    return Recipe(name, optimizer, hyperparameters, schedule)


def parse_train_suite(document: dict, source: str, default_name: str) -> TrainSuite:
    """Check a parsed TOML document and build the TrainSuite; ``source`` names it in errors."""
    for key in document:
        if key not in ("train", "recipe", "grid"):
            raise SuiteError(f"{source}: {key}: unknown top-level key; valid: train, recipe, grid")
    settings = checks.table(document.get("train", {}), f"{source}: [train]", _KEYS)
    settings.setdefault("name", default_name)
    for key in ("dataset", "target_accuracy"):
        if key not in settings:
            raise SuiteError(f"{source}: [train]: missing {key}")
    if ("epochs" in settings) == ("steps" in settings):
        raise SuiteError(f"{source}: [train]: give the budget as exactly one of epochs or steps")
    recipes: dict[str, Recipe] = {}
    for index, table in enumerate(_blocks(document, "recipe", source), start=1):
        recipe = _recipe(table, f"{source}: [[recipe]] #{index}")
        if recipe.name in recipes:
            raise SuiteError(f"{source}: [[recipe]] #{index}: recipe {recipe.name!r} is defined twice")
        recipes[recipe.name] = recipe
    grids = []
    for index, block in enumerate(_blocks(document, "grid", source), start=1):
        where = f"{source}: [[grid]] #{index}"
        checked = checks.table(block, where, {"models": _models, "recipes": lambda value, where: value})
        if set(checked) != {"models", "recipes"}:
            raise SuiteError(f"{where}: needs models and recipes")
        grids.append((checked["models"], _recipe_names(checked["recipes"], f"{where}.recipes", recipes)))
    return TrainSuite(recipes=recipes, grids=tuple(grids), **settings)


def _blocks(document: dict, key: str, source: str) -> list:
    blocks = document.get(key, [])
    if not isinstance(blocks, list) or not blocks:
        raise SuiteError(f"{source}: needs at least one [[{key}]] table")
    return blocks


def shipped() -> list[str]:
    """Names of the training suites shipped with convbench."""
    folder = resources.files("bench.kinds.training") / "suites"
    return sorted(entry.name.removesuffix(".toml") for entry in folder.iterdir() if entry.name.endswith(".toml"))


def load_train_suite(name_or_path: str | Path) -> TrainSuite:
    """A shipped training suite by name, or a training-suite file by path."""
    path = Path(name_or_path)
    if path.suffix != ".toml" and not path.exists():
        path = Path(str(resources.files("bench.kinds.training") / "suites" / f"{name_or_path}.toml"))
        if not path.is_file():
            raise SuiteError(
                f"{name_or_path}: no such training suite; shipped: {', '.join(shipped())}, or give a .toml file"
            )
    if not path.is_file():
        raise SuiteError(f"{path}: no such training-suite file")
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as error:
        raise SuiteError(f"{path}: cannot be read as TOML text: {error}") from None
    return parse_train_suite(read_toml(text, str(path)), str(path), path.stem)
