"""convbench from Python: run a suite and get its records as a DataFrame; compare two runs.

``run_suite`` is ``convbench run``: the same checks before any work, the same run folder,
report and history entry; its keyword arguments are the command's flags (``batch_sizes``
for ``--batch-sizes``), with Python values instead of text. ``compare_results`` is
``convbench compare`` without the printing.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from bench.storage.history import ResolvedRun


def run_suite(
    suite: str | Path | dict | None = None,
    *,
    results: str | Path = "results",
    run_id: str | None = None,
    history: str | Path | None = None,
    **flags: object,
) -> pd.DataFrame:
    """Run ``suite`` (a shipped suite's name, a TOML file, or a dict shaped like one; default
    as ``convbench run``) and return its records, one row per case, the Record fields as columns (units in their names).

    ``flags`` are ``convbench run``'s, by their Python names and with Python values, e.g.
    ``models=["cnn", "torchvision:squeezenet1_1"]``, ``batch_sizes=[32]``, ``steps=10``,
    ``lr=[0.1]``, ``model_kwargs={"width": 32}``, ``input_size=[3, 64, 64]``, ``amp=True``.
    Bad input raises before any work (models.UnknownNameError, bench.kinds.step.suite.SuiteError,
    bench.measure.setup.SetupError, ...); an unknown flag raises TypeError naming the valid ones.
    Progress goes to standard error and the summary table to standard output, as from the
    command. Ctrl-C ends the run between cases, keeps its folder and re-raises
    KeyboardInterrupt.
    """
    from bench.cli import EXIT_INTERRUPTED, build_parser, cmd_run
    from bench.storage.store import load_run, new_run_id
    from models.references import without_model_code

    args = build_parser().parse_args(["run"])
    settable = sorted(set(vars(args)) - {"command", "handler", "suite", "results", "run_id", "history"})
    for name, value in flags.items():
        if name not in settable:
            raise TypeError(f"run_suite() got an unknown flag {name!r}; valid: {', '.join(settable)}")
        setattr(args, name, value)
    args.suite = suite if suite is None or isinstance(suite, dict) else str(suite)
    args.results, args.run_id = str(results), run_id or new_run_id()
    args.history = None if history is None else Path(history)
    with without_model_code() if args.no_model_code else contextlib.nullcontext():
        code = cmd_run(args)
    if code >= EXIT_INTERRUPTED:
        raise KeyboardInterrupt(f"the run {args.run_id} was interrupted; its folder is kept, marked incomplete")
    return load_run(Path(results) / args.run_id).frame()


def resolve_runs(
    baseline: str | pd.DataFrame,
    candidate: str | pd.DataFrame,
    history: str | Path,
    baseline_runs: int = 1,
    include_incomplete: bool = False,
    baseline_tag: str | None = None,
) -> tuple[ResolvedRun, ResolvedRun, list[ResolvedRun]]:
    """(baseline, candidate, earlier runs) for a comparison: each of ``baseline`` and
    ``candidate`` a run folder, a run id in ``history``, ``latest``, ``previous``, or a
    DataFrame of records; ``earlier`` the ``baseline_runs - 1`` runs before the baseline in
    the history (same suite and machine) nearest the baseline that share a case with it and
    measured it the same way (others are skipped and take no place). Baselines are
    complete runs unless ``include_incomplete``, of the same suite content
    (``bench.storage.baselines``) and, with ``baseline_tag``, tagged so; every run passed
    over is in the baseline's ``skipped``."""
    from bench.analyse import compare
    from bench.storage.history import ResolvedRun, earlier_runs, resolve

    def named(run: str | pd.DataFrame, after: ResolvedRun | None = None) -> ResolvedRun:
        if isinstance(run, str | Path):
            return resolve(str(run), history, after, include_incomplete, baseline_tag)
        first = run.iloc[0] if not run.empty else {}
        return ResolvedRun(
            str(first.get("run_id", "records")), first.get("suite"), first.get("hostname"), first.get("timestamp"), run
        )

    candidate_run = named(candidate)
    baseline_run = named(baseline, after=candidate_run)
    earlier, skipped = [], list(baseline_run.skipped)
    if baseline_runs > 1:
        earlier = earlier_runs(
            baseline_run,
            baseline_runs - 1,
            history,
            include_incomplete,
            accept=lambda run: compare.joins_baseline(run.frame, baseline_run.frame),
            baseline_tag=baseline_tag,
            skipped=skipped,
        )
    return dataclasses.replace(baseline_run, skipped=tuple(skipped)), candidate_run, earlier


def compare_results(
    baseline: str | pd.DataFrame,
    candidate: str | pd.DataFrame,
    *,
    history: str | Path = Path("results") / "history.sqlite",
    threshold: float = 5.0,
    memory_threshold: float = 10.0,
    baseline_runs: int = 1,
) -> pd.DataFrame:
    """Verdicts per case, ``candidate`` against ``baseline``, as ``convbench compare`` gives
    them: columns ``case``, ``time`` and ``memory`` (regression, improvement, unchanged, new,
    missing), the changes and p-values, a ``note``. ``threshold`` and ``memory_threshold`` are
    percentages; runs are as in ``resolve_runs``. Raises bench.analyse.compare.IncomparableError for
    cases measured differently, bench.storage.history.HistoryError for a run it cannot find."""
    base, cand, earlier = resolve_runs(baseline, candidate, history, baseline_runs)
    return judge(base, cand, earlier, threshold, memory_threshold)


def judge(
    baseline: ResolvedRun, candidate: ResolvedRun, earlier: list[ResolvedRun], threshold: float, memory_threshold: float
) -> pd.DataFrame:
    """bench.analyse.compare.compare_runs on resolved runs, thresholds in percent."""
    from bench.analyse import compare

    return compare.compare_runs(
        baseline.frame,
        candidate.frame,
        threshold=threshold / 100,
        memory_threshold=memory_threshold / 100,
        earlier=[run.frame for run in earlier],
    )
