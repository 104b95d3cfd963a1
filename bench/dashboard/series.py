"""What the dashboard shows, read from the history: its runs grouped into series (one suite on
one machine, oldest first), each run's cases, and ``compare``'s verdicts on every run.

Everything is read with SQL from the ``cases`` table's columns (``history.CASE_QUERY_COLUMNS``),
never from the stored records: a record holds every step-time sample, and decoding 1,000
nights of them takes minutes. The verdicts come from ``bench.analyse.compare.flag_series``,
the judging behind ``convbench trend``, on the same fields (the per-repeat medians column in
place of the samples), so a point is flagged here exactly when ``compare`` flags it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
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


def read_series(
    history_path: Path | str, suite: str | None, machine: str | None, nights: list[Night], baseline_runs: int, **options
) -> Series:
    """One series with its records and verdicts (``options``: compare's thresholds)."""
    with history.connect(history_path) as connection:
        env_text = connection.execute("SELECT env FROM runs WHERE run_id = ?", (nights[-1].run_id,)).fetchone()[0]
        by_run = _records_by_run(connection, suite, machine)
    series = Series(suite, machine, nights, json.loads(env_text), [by_run.get(night.run_id, []) for night in nights])
    judged = [SeriesRun(n.run_id, n.status, r) for n, r in zip(nights, series.records, strict=True)]
    if series.kind == "training":
        series.verdicts = [RunVerdicts({}, {}, None, ()) for _ in nights]
    else:
        series.verdicts = flag_series(judged, baseline_runs, **options)
    return series


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
