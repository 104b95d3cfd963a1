"""The run history: every run's manifest and records in one embedded SQLite database.

    results/history.sqlite
        runs    one row per run: id, suite, status, times, machine, device, commit, counts,
                and the run's manifest, env.json and suite.toml as written
        cases   one row per (run, case): the configuration and headline figures as columns
                for queries, and the whole Record as JSON (step-time samples included), so
                ``compare`` and ``trend`` can work from the history alone

The schema's version is SQLite's ``user_version``; opening a database applies the
``MIGRATIONS`` it has not seen, in order, inside one transaction. A database written by a
newer convbench (a higher version than this one knows) is refused rather than guessed at.

Concurrency: two runs finishing at the same moment (two processes, one file) must both
land whole. Each run is added in a single ``BEGIN IMMEDIATE`` transaction, which takes the
write lock before reading, so two writers queue instead of deadlocking; the database is in
WAL mode (readers never block the writer), waits up to ``BUSY_TIMEOUT_S`` for a lock, and
a write that still finds the database locked is retried with back-off.
"""

from __future__ import annotations

import json
import random
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pandas as pd

from bench.store import MANIFEST, Run, load_run, utc_now

DEFAULT_NAME = "history.sqlite"
DEFAULT_PATH = Path("results") / DEFAULT_NAME
BUSY_TIMEOUT_S = 30.0
WRITE_ATTEMPTS = 5

_CASE_COLUMNS = (
    "case_id",
    "model",
    "optimizer",
    "batch_size",
    "precision",
    "channels_last",
    "compile",
    "dataset",
    "device",
    "device_name",
    "status",
    "step_time_ms",
    "throughput",
    "optimizer_state_bytes",
    "peak_memory_bytes",
)

#: Migration i takes the schema from version i to version i + 1; never edit a released one.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE runs (
            run_id TEXT PRIMARY KEY,
            suite TEXT,
            status TEXT,
            started TEXT,
            finished TEXT,
            hostname TEXT,
            device TEXT,
            git_commit TEXT,
            cases_total INTEGER,
            cases_done INTEGER,
            failures INTEGER,
            manifest TEXT NOT NULL,
            env TEXT NOT NULL,
            suite_toml TEXT NOT NULL,
            recorded TEXT NOT NULL
        )""",
        """CREATE TABLE cases (
            run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
            case_id TEXT NOT NULL,
            model TEXT,
            optimizer TEXT,
            batch_size INTEGER,
            precision TEXT,
            channels_last INTEGER,
            compile INTEGER,
            dataset TEXT,
            device TEXT,
            device_name TEXT,
            status TEXT,
            step_time_ms REAL,
            throughput REAL,
            optimizer_state_bytes INTEGER,
            peak_memory_bytes INTEGER,
            record TEXT NOT NULL,
            PRIMARY KEY (run_id, case_id)
        )""",
        "CREATE INDEX cases_by_model ON cases (model, optimizer)",
        "CREATE INDEX runs_by_start ON runs (started)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

T = TypeVar("T")


class HistoryError(ValueError):
    """A history that cannot be used as asked: too new a schema, an unknown run id."""


def _retry_locked(write: Callable[[], T]) -> T:
    """Run ``write``; if SQLite still reports the database locked after its busy timeout
    (a long writer elsewhere), wait a random, growing while and try again."""
    for attempt in range(WRITE_ATTEMPTS):
        try:
            return write()
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) and "busy" not in str(error):
                raise
            if attempt == WRITE_ATTEMPTS - 1:
                raise
            time.sleep(random.uniform(0.05, 0.2) * 2**attempt)
    raise AssertionError("unreachable")


@contextmanager
def _transaction(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """An IMMEDIATE transaction: the write lock is taken first, so concurrent writers
    wait their turn (up to the busy timeout) rather than fail halfway."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield connection
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def _migrate(connection: sqlite3.Connection, path: Path) -> None:
    with _transaction(connection):
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise HistoryError(
                f"{path} has history schema version {version}, but this convbench knows versions up to "
                f"{SCHEMA_VERSION}; upgrade convbench to read it"
            )
        for statements in MIGRATIONS[version:]:
            for statement in statements:
                connection.execute(statement)
        # PRAGMA takes no parameters; the value is our own integer.
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


@contextmanager
def connect(path: Path | str = DEFAULT_PATH) -> Iterator[sqlite3.Connection]:
    """Open (creating if need be) the history at ``path``, migrated to ``SCHEMA_VERSION``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: no implicit transactions; _transaction says where each begins.
    connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    try:
        connection.execute("PRAGMA foreign_keys = ON")
        _retry_locked(lambda: connection.execute("PRAGMA journal_mode = WAL"))
        _retry_locked(lambda: _migrate(connection, path))
        yield connection
    finally:
        connection.close()


def _device(run: Run) -> str:
    """What the run measured on: its records' device names, else the machine's GPUs or CPU."""
    names = sorted({r.get("device_name") for r in run.records if r.get("device_name")})
    if not names:
        names = [gpu["name"] for gpu in run.env.get("gpus", [])] or [run.env.get("cpu", {}).get("model", "")]
    return ", ".join(n for n in names if n)


def _commit(run: Run) -> str | None:
    return run.env.get("git_commit") or next((r["git_commit"] for r in run.records if r.get("git_commit")), None)


def _insert(connection: sqlite3.Connection, run: Run) -> bool:
    """Add ``run`` in one transaction; False (and nothing written) if it is already there."""
    manifest = run.manifest
    with _transaction(connection):
        if connection.execute("SELECT 1 FROM runs WHERE run_id = ?", (run.run_id,)).fetchone():
            return False
        connection.execute(
            "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run.run_id,
                manifest.get("suite"),
                manifest.get("status"),
                manifest.get("started"),
                manifest.get("finished"),
                run.env.get("hostname") or next((r["hostname"] for r in run.records if r.get("hostname")), None),
                _device(run),
                _commit(run),
                manifest.get("cases_total"),
                len(run.records),
                sum(r.get("status") != "ok" for r in run.records),
                json.dumps(manifest),
                json.dumps(run.env),
                run.suite_toml,
                utc_now(),
            ),
        )
        connection.executemany(
            f"INSERT INTO cases ({', '.join(_CASE_COLUMNS)}, run_id, record) "
            f"VALUES ({', '.join('?' * (len(_CASE_COLUMNS) + 2))})",
            [tuple(r.get(c) for c in _CASE_COLUMNS) + (run.run_id, json.dumps(r)) for r in run.records],
        )
    return True


def ingest(run_dirs: Iterable[Path | str], history_path: Path | str = DEFAULT_PATH) -> list[tuple[str, bool]]:
    """Add run folders to the history; returns (run id, added) per folder, ``added`` False
    for a run the history already holds. Every folder is read before anything is written,
    so a damaged one stops the command before it adds the others halfway."""
    runs = [load_run(path) for path in run_dirs]
    with connect(history_path) as connection:
        return [(run.run_id, _retry_locked(lambda run=run: _insert(connection, run))) for run in runs]


def record_run(run_dir: Path | str, history_path: Path | str = DEFAULT_PATH) -> None:
    """Add one finished run folder to the history; a run already there is left as it is.
    The runner calls this at the end of every run."""
    ingest([run_dir], history_path)


def runs(history_path: Path | str = DEFAULT_PATH) -> pd.DataFrame:
    """One row per run, oldest first: id, start time, machine, device, suite, commit, status,
    case count and failures."""
    with connect(history_path) as connection:
        frame = pd.read_sql_query(
            "SELECT run_id, started, hostname AS machine, device, suite, git_commit AS 'commit', status, "
            "cases_done AS cases, failures FROM runs ORDER BY started, run_id",
            connection,
        )
    return frame


def records(history_path: Path | str, run_ids: Iterable[str] | None = None) -> pd.DataFrame:
    """The Records of the given runs (all runs if None) as a DataFrame, as ``Run.frame()``
    would give them, plus the run's ``started`` time and ``machine`` (host name)."""
    query = (
        "SELECT cases.record, runs.started, runs.hostname FROM cases JOIN runs USING (run_id) "
        "{where} ORDER BY runs.started, runs.run_id, cases.rowid"
    )
    with connect(history_path) as connection:
        if run_ids is None:
            rows = connection.execute(query.format(where="")).fetchall()
        else:
            ids = list(run_ids)
            where = f"WHERE run_id IN ({', '.join('?' * len(ids))})"
            rows = connection.execute(query.format(where=where), ids).fetchall()
    return pd.DataFrame([{**json.loads(record), "started": started, "machine": host} for record, started, host in rows])


@dataclass(frozen=True)
class ResolvedRun:
    """A run named on the command line, with its Records as a DataFrame."""

    run_id: str
    suite: str | None
    machine: str | None
    started: str | None
    frame: pd.DataFrame


def _from_history(connection: sqlite3.Connection, history_path: Path | str, run_id: str) -> ResolvedRun:
    row = connection.execute("SELECT suite, hostname, started FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    if row is None:
        raise HistoryError(f"{run_id!r} is neither a run folder nor a run in the history {history_path}")
    return ResolvedRun(run_id, *row, frame=records(history_path, [run_id]))


def resolve(reference: str, history_path: Path | str = DEFAULT_PATH, after: ResolvedRun | None = None) -> ResolvedRun:
    """The run a user named: a run folder, a run id in the history, ``latest`` (the most
    recently started run in the history) or ``previous`` (the run before ``after``, or
    before the latest, of the same suite on the same machine)."""
    folder = Path(reference)
    if (folder / MANIFEST).is_file():
        run = load_run(folder)
        host = run.env.get("hostname") or next((r["hostname"] for r in run.records if r.get("hostname")), None)
        return ResolvedRun(run.run_id, run.manifest.get("suite"), host, run.manifest.get("started"), run.frame())
    with connect(history_path) as connection:
        if reference not in ("latest", "previous"):
            return _from_history(connection, history_path, reference)
        latest = connection.execute("SELECT run_id FROM runs ORDER BY started DESC, run_id DESC LIMIT 1").fetchone()
        if latest is None:
            raise HistoryError(f"the history {history_path} holds no runs yet, so there is no {reference!r} run")
        if reference == "latest":
            return _from_history(connection, history_path, latest[0])
        this = after or _from_history(connection, history_path, latest[0])
        row = connection.execute(
            "SELECT run_id FROM runs WHERE suite IS ? AND hostname IS ? AND (started, run_id) < (?, ?) "
            "ORDER BY started DESC, run_id DESC LIMIT 1",
            (this.suite, this.machine, this.started, this.run_id),
        ).fetchone()
        if row is None:
            raise HistoryError(
                f"the history {history_path} holds no run of suite {this.suite!r} on {this.machine!r} "
                f"before {this.run_id}"
            )
        return _from_history(connection, history_path, row[0])


def earlier_runs(run: ResolvedRun, count: int, history_path: Path | str = DEFAULT_PATH) -> list[ResolvedRun]:
    """Up to ``count`` runs recorded before ``run`` (by start time) of the same suite on the
    same machine, oldest first: the rest of a several-run baseline."""
    if count < 1 or run.started is None:
        return []
    with connect(history_path) as connection:
        rows = connection.execute(
            "SELECT run_id FROM runs WHERE suite IS ? AND hostname IS ? AND (started, run_id) < (?, ?) "
            "ORDER BY started DESC, run_id DESC LIMIT ?",
            (run.suite, run.machine, run.started, run.run_id, count),
        ).fetchall()
        return [_from_history(connection, history_path, run_id) for (run_id,) in reversed(rows)]
