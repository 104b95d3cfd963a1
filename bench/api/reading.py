"""The reading commands as functions: the history, comparison, trend, GPUs side by side,
export, report and dashboard. Each returns data (DataFrames, paths, notes); printing is the
command line's. Errors: HistoryError (a history or run it cannot use), RunFolderError,
IncomparableError (runs measured differently), SuiteError (options that do not go
together).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bench import defaults

if TYPE_CHECKING:
    import pandas as pd

    from bench.storage.history import ResolvedRun


def history_runs(history: Path | str = defaults.HISTORY) -> tuple[pd.DataFrame, list[str]]:
    """The runs in the history, oldest first, one row each, and notes on rows it skipped."""
    from bench.storage import history as store

    notes: list[str] = []
    runs = store.runs(history, notes)
    runs["commit"] = runs["commit"].str[:10]
    return runs, notes


def ingest(run_dirs: Sequence[Path | str], history: Path | str = defaults.HISTORY) -> Iterator[tuple[str, bool]]:
    """Add run folders (e.g. copied from other machines) to the history: yields (run id,
    added), False where the history already had it."""
    from bench.storage import history as store

    yield from store.ingest([Path(path) for path in run_dirs], history)


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


def judge(
    baseline: ResolvedRun,
    candidate: ResolvedRun,
    earlier: list[ResolvedRun],
    threshold: float = defaults.THRESHOLD,
    memory_threshold: float = defaults.MEMORY_THRESHOLD,
) -> pd.DataFrame:
    """bench.kinds.compare_runs on resolved runs; thresholds are fractions."""
    from bench import kinds

    return kinds.compare_runs(
        baseline.frame,
        candidate.frame,
        threshold=threshold,
        memory_threshold=memory_threshold,
        earlier=[run.frame for run in earlier],
    )


@dataclasses.dataclass(frozen=True)
class Comparison:
    """``convbench compare``'s answer: the runs, the verdicts per case (columns ``case``,
    ``time``, ``memory``, the changes, p-values, ``note``), notes on how far the runs are
    comparable, and whether any case regressed."""

    baseline: ResolvedRun
    candidate: ResolvedRun
    earlier: list[ResolvedRun]
    verdicts: pd.DataFrame
    notes: list[str]
    regression: bool


def compare(
    baseline: str | pd.DataFrame,
    candidate: str | pd.DataFrame,
    *,
    history: Path | str = defaults.HISTORY,
    threshold: float = defaults.THRESHOLD,
    memory_threshold: float = defaults.MEMORY_THRESHOLD,
    baseline_runs: int = 1,
    include_incomplete: bool = False,
    baseline_tag: str | None = None,
) -> Comparison:
    """Verdicts per case, ``candidate`` against ``baseline`` (runs as in ``resolve_runs``;
    thresholds are fractions); the notes say which runs were passed over as baselines and
    how many baseline runs were used. Raises IncomparableError for cases measured
    differently, HistoryError for a run it cannot find."""
    from bench.analyse import baselines, fairness
    from bench.analyse import compare as analyse

    base, cand, earlier = resolve_runs(baseline, candidate, history, baseline_runs, include_incomplete, baseline_tag)
    notes = fairness.check_runs(base, cand)
    notes += baselines.baseline_notes(base.skipped, 1 + len(earlier), baseline_runs, baseline_tag)
    verdicts = judge(base, cand, earlier, threshold, memory_threshold)
    notes = ([base.note] if base.note else []) + notes
    return Comparison(base, cand, earlier, verdicts, notes, analyse.has_regression(verdicts))


@dataclasses.dataclass(frozen=True)
class Trend:
    """``convbench trend``'s answer: the flagged points (run, series, time and memory
    verdicts), the number of runs drawn, the figure's files and notes."""

    flagged: pd.DataFrame
    runs: int
    case_regressions: int
    run_regressions: int
    figure: list[Path]
    notes: list[str]


def trend(
    *,
    history: Path | str = defaults.HISTORY,
    figure: Path | str = defaults.RESULTS / "trend",
    models: Sequence[str] | None = None,
    optimizers: Sequence[str] | None = None,
    baseline_runs: int = 1,
    baseline_tag: str | None = None,
    threshold: float = defaults.THRESHOLD,
) -> Trend:
    """Throughput and memory over the recorded runs, flagged where compare would flag them,
    drawn to ``figure`` (.png and .pdf). Raises HistoryError for an empty history or no
    matching case."""
    import pandas as pd

    from bench.analyse import compare as analyse
    from bench.analyse import trend as lines
    from bench.reporting import figures
    from bench.storage import history as store

    notes: list[str] = []
    records = store.records(history, notes=notes)
    if records.empty:
        raise store.HistoryError(notes[0] if notes else f"the history {history} holds no runs yet")
    flagged = analyse.flag_history(records, baseline_runs, baseline_tag, threshold=threshold)
    chosen = flagged[
        flagged["model"].isin(models or flagged["model"])
        & flagged["optimizer"].isin(optimizers or flagged["optimizer"])
    ]
    if chosen.empty:
        raise store.HistoryError("no recorded case matches the --models and --optimizers given")
    chosen = chosen.assign(series=lines.series_names(chosen))
    notes += lines.content_notes(chosen) + lines.baseline_count_notes(chosen, baseline_runs)
    figures.use_theme()
    paths = figures.save(figures.trend_figure(chosen), Path(figure))
    hits = chosen[(chosen["time"] == "regression") | (chosen["memory"] == "regression")]
    slower_runs = chosen[chosen["all_cases"] == "regression"]["run_id"].unique().tolist()
    rows = pd.concat(
        [
            hits[["run_id", "series", "time", "memory"]],
            pd.DataFrame(
                {"run_id": slower_runs, "series": "all cases (geometric mean)", "time": "regression", "memory": None}
            ),
        ],
        ignore_index=True,
    )
    return Trend(rows, chosen["run_id"].nunique(), len(hits), len(slower_runs), paths, notes)


def gpus(
    runs: Sequence[str],
    *,
    history: Path | str = defaults.HISTORY,
    reference: str | None = None,
    figure: Path | str = defaults.RESULTS / "gpus",
) -> tuple[pd.DataFrame, list[str], list[Path]]:
    """Runs of one suite on different devices side by side (long table: one row per case and
    device, speed-up against ``reference``), notes, and the speed-up figure's files."""
    from bench import kinds
    from bench.reporting import figures
    from bench.storage import history as store

    frames = [store.resolve(run, history).frame for run in runs]
    table, notes = kinds.side_by_side(frames, reference=reference)
    figures.use_theme()
    paths = figures.save(figures.speedup_figure(table), Path(figure))
    return table, notes, paths


def export_run(
    run: str, output_format: str, *, metric: str = "throughput", history: Path | str = defaults.HISTORY
) -> tuple[object, int, dict]:
    """A run's ok cases as ``output_format`` (github-action-benchmark or pytest-benchmark)
    JSON: (document, benchmarks exported, the run's manifest)."""
    from bench.storage import export

    frame, manifest, env = export.run_documents(run, history)
    if output_format == "github-action-benchmark":
        document: object = export.github_action_benchmark(frame, metric)
        return document, len(document), manifest
    document = export.pytest_benchmark(frame, manifest, env)
    return document, len(document["benchmarks"]), manifest


def export_history(history: Path | str, output: Path, notes: list[str]) -> list[Path]:
    """Every run of the history as a pytest-benchmark storage folder under ``output``;
    returns the files written, notes on runs skipped."""
    from bench.storage import export

    return list(export.history_storage(history, output, notes))


def report(run_dir: Path | str) -> list[Path]:
    """Write a run folder's figures, tables, report.html and report.md; returns the files."""
    from bench import kinds

    return kinds.write_report(run_dir)


def dashboard(
    *,
    history: Path | str = defaults.HISTORY,
    output: Path | str = defaults.RESULTS / "dashboard",
    baseline_runs: int = 1,
    threshold: float = defaults.THRESHOLD,
) -> object:
    """The static dashboard of the history (bench.dashboard.build_site). Raises
    DashboardError."""
    from bench.dashboard import build_site

    return build_site(history, Path(output), baseline_runs, threshold)
