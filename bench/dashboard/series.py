"""What the dashboard shows, read from the history: its runs grouped into series (one suite on
one machine, oldest first), each run's cases, and ``compare``'s verdicts on every run.

Everything is read with SQL from the ``cases`` table's columns (``history.CASE_QUERY_COLUMNS``),
never from the stored records: a record holds every step-time sample, and decoding 1,000
nights of them takes minutes. The verdicts come from ``bench.analyse.compare.flag_series``,
the judging behind ``convbench trend``, on the same fields (the per-repeat medians column in
place of the samples), so a point is flagged here exactly when ``compare`` flags it.

Judging every run of years of nights is the bulk of the dashboard's work, and each run's
verdicts depend only on the runs before it, so a long series can be cut into parts judged in
parallel, one process per CPU (``judge_in_parallel``; the dashboard does so where it has
fewer series than CPUs, and otherwise writes whole series in parallel). The processes are
forked once the series is read, and inherit it rather than read it again (as torch's data
loader forks its workers); a fresh interpreter (``spawn``) would also run again the main
module of a script that calls the dashboard without an ``if __name__ == "__main__"`` guard.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import sqlite3
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from bench.analyse.compare import RunVerdicts, SeriesRun, flag_series, records_kind
from bench.record import REPEAT_MEDIANS
from bench.storage import history
from bench.storage.store import effective_status

#: Columns holding JSON text that recurs from night to night (a case's input shape, its
#: hyperparameters), decoded once each; the per-repeat medians are JSON too, each night's own.
SHARED_JSON_COLUMNS = ("input_shape", "hyperparameters", "model_kwargs")


@dataclass(frozen=True)
class Night:
    """One run of a series: the run's row in the history, its status as it is now (a run
    stored ``running`` whose process is gone reads ``killed``) and its start-of-run load."""

    run_id: str
    started: str | None
    status: str
    commit: str | None
    device: str | None
    cases_total: int | None
    stopped_by: str | None
    load_average: float | None


@dataclass
class Series:
    """The runs of one suite on one machine, oldest first, with each run's records (dicts of
    the history's columns, in the order the run wrote them) and verdicts (``flag_series``;
    none for training-to-accuracy runs, which ``trend`` leaves out too)."""

    suite: str | None
    machine: str | None
    nights: list[Night]
    env: dict  # the latest run's env.json
    records: list[list[dict]] = field(default_factory=list)
    verdicts: list[RunVerdicts] = field(default_factory=list)

    @property
    def kind(self) -> str:
        """The latest run's kind: training-step, optimizer-step or training."""
        latest = next((records for records in reversed(self.records) if records), [])
        return records_kind(latest)


def series_keys(history_path: Path | str) -> list[tuple[str | None, str | None, list[Night]]]:
    """(suite, machine, nights oldest first) of every series in the history, in the order of
    each series' first run. Raises HistoryError where there is no history or it is empty."""
    with history.connect(history_path) as connection:
        rows = connection.execute(
            "SELECT run_id, suite, machine, status, started, git_commit, device, cases_total, manifest "
            "FROM runs ORDER BY started, run_id"
        ).fetchall()
    if not rows:
        raise history.HistoryError(f"the history {history_path} holds no runs yet: there is nothing to show")
    grouped: dict[tuple, list[Night]] = {}
    for run_id, suite, machine, status, started, commit, device, total, manifest_text in rows:
        manifest = json.loads(manifest_text)
        night = Night(
            run_id,
            started,
            effective_status(manifest) if status == "running" else status,
            commit,
            device,
            total,
            manifest.get("stopped_by"),
            manifest.get("load_average_start"),
        )
        grouped.setdefault((suite, machine), []).append(night)
    return [(suite, machine, nights) for (suite, machine), nights in grouped.items()]


def cpus() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def can_fork() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


def read_series(
    history_path: Path | str,
    suite: str | None,
    machine: str | None,
    nights: list[Night],
    baseline_runs: int,
    in_parts: bool = True,
    **options: float,
) -> Series:
    """One series with its records and verdicts (``options``: compare's thresholds), judged
    in parallel parts where it is long (``in_parts``, ``judge_in_parallel``)."""
    with history.connect(history_path) as connection:
        env_text = connection.execute("SELECT env FROM runs WHERE run_id = ?", (nights[-1].run_id,)).fetchone()[0]
        by_run = _records_by_run(connection, suite, machine)
    series = Series(suite, machine, nights, json.loads(env_text), [by_run.get(night.run_id, []) for night in nights])
    judged = [SeriesRun(n.run_id, n.status, r) for n, r in zip(nights, series.records, strict=True)]
    if series.kind == "training":
        series.verdicts = [RunVerdicts({}, {}, None, ()) for _ in nights]
    else:
        judge = judge_in_parallel if in_parts else flag_series
        series.verdicts = judge(judged, baseline_runs, **options)
    return series


#: Fewest runs worth a process of their own (forking and sending verdicts back cost some).
RUNS_PER_PROCESS = 100
_inherited: list[SeriesRun] = []  # the series a forked judging process was started with


def judge_in_parallel(runs: list[SeriesRun], baseline_runs: int, **options: float) -> list[RunVerdicts]:
    """``flag_series(runs, ...)``, the runs cut into consecutive parts judged in forked
    processes where the series is long enough and there are CPUs to spare."""
    processes = min(cpus(), len(runs) // RUNS_PER_PROCESS)
    if processes < 2 or not can_fork():
        return flag_series(runs, baseline_runs, **options)
    bounds = [len(runs) * part // processes for part in range(processes + 1)]
    parts = [range(start, stop) for start, stop in zip(bounds, bounds[1:], strict=False)]
    judge = functools.partial(_judge_part, baseline_runs=baseline_runs, options=options)
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(processes, mp_context=context, initializer=_inherit, initargs=(runs,)) as pool:
        return [verdicts for part in pool.map(judge, parts) for verdicts in part]


def _inherit(runs: list[SeriesRun]) -> None:
    global _inherited
    _inherited = runs


def _judge_part(part: range, baseline_runs: int, options: dict) -> list[RunVerdicts]:
    return flag_series(_inherited, baseline_runs, judge=part, **options)


def _records_by_run(connection: sqlite3.Connection, suite: str | None, machine: str | None) -> dict[str, list[dict]]:
    columns = history.CASE_QUERY_COLUMNS
    query = (
        f"SELECT cases.run_id, {', '.join('cases.' + c for c in columns)} "
        f"FROM runs JOIN cases INDEXED BY {history.FIGURES_INDEX} USING (run_id) "
        "WHERE runs.suite IS ? AND runs.machine IS ? ORDER BY cases.rowid"
    )
    by_run: dict[str, list[dict]] = {}
    decoded: dict[str, object] = {}  # the same JSON text (a case's shape, its hyperparameters) recurs every night
    shared_at = [columns.index(name) for name in SHARED_JSON_COLUMNS]
    medians_at = columns.index(REPEAT_MEDIANS)
    for run_id, *values in _rows(connection, query, (suite, machine)):
        for index in shared_at:
            text = values[index]
            if text is not None:
                values[index] = decoded[text] if text in decoded else decoded.setdefault(text, json.loads(text))
        if values[medians_at] is not None:
            values[medians_at] = json.loads(values[medians_at])
        by_run.setdefault(run_id, []).append(dict(zip(columns, values, strict=True)))
    return by_run


def _rows(connection: sqlite3.Connection, query: str, parameters: tuple) -> Iterator[list]:
    cursor = connection.execute(query, parameters)
    while batch := cursor.fetchmany(10_000):
        yield from (list(row) for row in batch)
