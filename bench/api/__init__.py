"""convbench from Python: one function per command, taking typed options and returning data.

- Measuring (bench.api.measuring): ``run(RunOptions, Destinations, LaunchOptions)``,
  ``optim(OptimOptions, Destinations)``, ``train(TrainOptions, Destinations)``, each a
  RunResult (the run folder and the exit status); ``run_suite`` is ``run`` returning the
  records as a DataFrame.
- Reading (bench.api.reading): ``history_runs``, ``ingest``, ``compare``, ``trend``,
  ``gpus``, ``export_run``, ``export_history``, ``report``, ``dashboard``;
  ``compare_results`` is ``compare``'s verdicts.
- Looking up (bench.api.lookup): ``models_frame``, ``optimizers_frame``, ``environment``,
  ``receptive_fields``, ``predict_memory``.

Bad input raises before any work (models.UnknownNameError, bench.checks.SuiteError,
bench.measure.setup.SetupError, bench.storage.history.HistoryError, ...). Thresholds are
fractions (0.05 is 5%). Importing this package does not import torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from bench import defaults
from bench.api.lookup import environment, models_frame, optimizers_frame, predict_memory, receptive_fields
from bench.api.measuring import RunResult, optim, run, train
from bench.api.options import Destinations, LaunchOptions, OptimOptions, RunOptions, TrainOptions, with_flags
from bench.api.reading import (
    compare,
    dashboard,
    export_history,
    export_run,
    gpus,
    history_runs,
    ingest,
    judge,
    report,
    resolve_runs,
    trend,
)
from bench.api.session import EXIT_INTERRUPTED, Console

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "Console",
    "Destinations",
    "LaunchOptions",
    "OptimOptions",
    "RunOptions",
    "RunResult",
    "TrainOptions",
    "compare",
    "compare_results",
    "dashboard",
    "environment",
    "export_history",
    "export_run",
    "gpus",
    "history_runs",
    "ingest",
    "judge",
    "models_frame",
    "optim",
    "optimizers_frame",
    "predict_memory",
    "receptive_fields",
    "report",
    "resolve_runs",
    "run",
    "run_suite",
    "train",
    "trend",
]


def run_suite(
    suite: str | Path | dict | None = None,
    *,
    results: str | Path = defaults.RESULTS,
    run_id: str | None = None,
    history: str | Path | None = None,
    machine: str | None = None,
    **flags: object,
) -> pd.DataFrame:
    """Run ``suite`` (a shipped suite's name, a TOML file, or a dict shaped like one; default
    as ``convbench run``) and return its records, one row per case, the Record fields as
    columns (units in their names).

    ``flags`` are RunOptions' fields (``convbench run``'s flags by their Python names, with
    Python values), e.g. ``models=["cnn", "torchvision:squeezenet1_1"]``,
    ``batch_sizes=[32]``, ``steps=10``, ``lr=[0.1]``, ``model_kwargs={"width": 32}``,
    ``input_size=[3, 64, 64]``, ``amp=True``. Bad input raises before any work
    (models.UnknownNameError, bench.checks.SuiteError, bench.measure.setup.SetupError, ...);
    an unknown flag raises TypeError naming the valid ones. Progress and warnings go to
    standard error; nothing is printed on standard output. Ctrl-C ends the run between
    cases, keeps its folder and re-raises KeyboardInterrupt.
    """
    import contextlib

    from bench.storage.store import load_run
    from models.references import without_model_code

    options = with_flags(RunOptions, flags, suite=suite)
    destinations = Destinations(results, history, run_id, machine)
    with without_model_code() if options.no_model_code else contextlib.nullcontext():
        result = run(options, destinations, console=Console("run", tables=False))
    if result.exit_status >= EXIT_INTERRUPTED:
        raise KeyboardInterrupt(f"the run {result.path.name} was interrupted; its folder is kept, marked incomplete")
    return load_run(result.path).frame()


def compare_results(
    baseline: str | pd.DataFrame,
    candidate: str | pd.DataFrame,
    *,
    history: str | Path = defaults.HISTORY,
    threshold: float = defaults.THRESHOLD * 100,
    memory_threshold: float = defaults.MEMORY_THRESHOLD * 100,
    baseline_runs: int = 1,
) -> pd.DataFrame:
    """Verdicts per case, ``candidate`` against ``baseline``, as ``convbench compare`` gives
    them: columns ``case``, ``time`` and ``memory`` (regression, improvement, unchanged, new,
    missing), the changes and p-values, a ``note``. ``threshold`` and ``memory_threshold`` are
    percentages, as on the command line; runs are as in ``resolve_runs``. Raises
    bench.analyse.compare.IncomparableError for cases measured differently,
    bench.storage.history.HistoryError for a run it cannot find."""
    return compare(
        baseline,
        candidate,
        history=history,
        threshold=threshold / 100,
        memory_threshold=memory_threshold / 100,
        baseline_runs=baseline_runs,
    ).verdicts
