"""The run history: every run's manifest and records in one embedded SQLite database.

    results/history.sqlite
        runs    one row per run: id, suite, status, times, host, machine, device, commit,
                counts, kind, and the run's manifest, env.json and suite.toml as written
        cases   one row per (run, case): the configuration, the protocol and the figures the
                verdicts and the dashboard read as columns for queries (with the median of
                each repeat, ``step_time_repeat_medians_ms``), and the whole Record as JSON
                (step-time samples included), so ``compare`` and ``trend`` can work from the
                history alone

The schema's version is SQLite's ``user_version``; opening a database applies the
``MIGRATIONS`` it has not seen, in order, inside one transaction. A database written by a
newer convbench (a higher version than this one knows) is refused rather than guessed at.
Migrations 3 and 4 fill their derived columns with SQL functions that every connection
registers (``convbench_repeat_medians``, ``convbench_record_kind``), so each must stay
registered for as long as its migration exists. Migration 4 stores each case's and each run's
kind (``bench.record.KINDS``), decided for older records as reading them decides it.

Concurrency: two runs finishing at the same moment (two processes, one file) must both
land whole. Each run is added in a single ``BEGIN IMMEDIATE`` transaction, which takes the
write lock before reading, so two writers queue instead of deadlocking; the database is in
WAL mode (readers never block the writer), waits up to ``BUSY_TIMEOUT_S`` for a lock, and
a write that still finds the database locked is retried with back-off.

Only ``convbench run`` and ``ingest`` create a history; the reading commands (``history``,
``compare``, ``trend``, ``gpus``) given a path where there is none say so instead of
creating an empty one. A file that is not a convbench history is refused with its name.

Baselines: ``previous`` and the runs of a several-run baseline are runs of the same suite on
the same *machine* (``bench.measure.machine``: a given name or the device's identity, not the host
name) that are ``complete`` and measured the same thing (the same suite content,
``bench.storage.baselines``; with a baseline tag, tagged so); the runs passed over are named.
An interrupted, killed or empty run compares against nothing useful, so it is only taken when
asked (``include_incomplete``), or, for ``previous``, as a fall-back when no complete run
exists, with a note saying so.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import os
import random
import sqlite3
import stat
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pandas as pd

from bench.record import REPEAT_MEDIANS, read_flat, repeat_medians, utc_now
from bench.storage.baselines import content_difference, run_tags, suite_content
from bench.storage.store import (
    MANIFEST,
    RECORDS,
    RecordCounts,
    Run,
    RunFolderError,
    check_env,
    check_manifest,
    check_record,
    check_results_root,
    decode_json,
    decode_json_object,
    effective_status,
    is_time,
    load_run,
    quoted,
    record_lines,
    settle,
    writer_alive,
)

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

#: Record fields that schema version 3 added as columns (name, SQL type), so that the
#: dashboard and the verdicts over years of nights read them without decoding every
#: record (a record holds every step-time sample). Lists and dicts are stored as JSON.
RECORD_COLUMNS_V3 = (
    ("kind", "TEXT"),
    ("recipe", "TEXT"),
    ("error", "TEXT"),
    ("input_shape", "TEXT"),
    ("hyperparameters", "TEXT"),
    ("model_kwargs", "TEXT"),
    ("compile_mode", "TEXT"),
    ("strategy", "TEXT"),
    ("world_size", "INTEGER"),
    ("sync_batchnorm", "INTEGER"),
    ("steps", "INTEGER"),
    ("warmup", "INTEGER"),
    ("repeats", "INTEGER"),
    ("detailed", "INTEGER"),
    ("step_time_iqr_ms", "REAL"),
    ("param_bytes", "INTEGER"),
    ("grad_bytes", "INTEGER"),
    ("tracked_peak_bytes", "INTEGER"),
    ("peak_memory_source", "TEXT"),
    ("other_cpu_fraction", "REAL"),
    ("achieved_bandwidth_gbs", "REAL"),
    ("bandwidth_fraction", "REAL"),
    ("seed", "INTEGER"),
    ("target_accuracy", "REAL"),
    ("time_to_target_s", "REAL"),
    ("final_test_accuracy", "REAL"),
    ("train_throughput", "REAL"),
)
# One column of version 3 is no Record field: REPEAT_MEDIANS, the median step time of each
# repeat (``bench.record.repeat_medians``, JSON), what ``compare``'s test on repeats reads.
#: Every column of ``cases`` but the record itself: what a reader can query without
#: decoding records (lists and dicts as JSON text, booleans as 0 / 1).
CASE_QUERY_COLUMNS = (*_CASE_COLUMNS, *(name for name, _ in RECORD_COLUMNS_V3), REPEAT_MEDIANS)
#: An index of ``cases`` holding every CASE_QUERY_COLUMNS column: querying those by run reads
#: the index, never the records (``INDEXED BY`` it where that matters).
FIGURES_INDEX = "cases_figures"
#: The SQL function, registered on every connection, that fills it in migration 3.
_REPEAT_MEDIANS_FUNCTION = "convbench_repeat_medians"
#: The SQL function, registered on every connection, that gives a stored record's kind
#: (``bench.record.KINDS``) in migration 4.
_KIND_FUNCTION = "convbench_record_kind"

#: A run's kind: the one kind of its cases (NULL where it has none, or more than one).
_RUN_KIND_SQL = (
    "(SELECT CASE WHEN COUNT(DISTINCT kind) = 1 THEN MIN(kind) END FROM cases WHERE cases.run_id = runs.run_id)"
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
    (
        # The machine a run is filed under (bench.measure.machine); runs recorded before it have
        # only their host name, which was their machine then.
        "ALTER TABLE runs ADD COLUMN machine TEXT",
        "UPDATE runs SET machine = COALESCE(json_extract(manifest, '$.machine'), hostname)",
    ),
    (
        *(f"ALTER TABLE cases ADD COLUMN {name} {kind}" for name, kind in RECORD_COLUMNS_V3),
        f"ALTER TABLE cases ADD COLUMN {REPEAT_MEDIANS} TEXT",
        "UPDATE cases SET "
        + ", ".join(f"{name} = json_extract(record, '$.{name}')" for name, _ in RECORD_COLUMNS_V3)
        + f", {REPEAT_MEDIANS} = {_REPEAT_MEDIANS_FUNCTION}(record)",
        "CREATE INDEX runs_by_series ON runs (suite, machine, started)",
        # Covering: a query of these columns by run reads this index alone. The table's rows hold
        # each record (kilobytes of samples), which a column added after it is stored behind.
        f"CREATE INDEX {FIGURES_INDEX} ON cases (run_id, {', '.join(c for c in CASE_QUERY_COLUMNS)})",
    ),
    (
        # The kind every record now declares, decided for older ones as reading them decides it
        # (bench.record.record_kind): their kind column said training-step for training-to-accuracy
        # and data-parallel cases. A run's kind is its cases' one kind (NULL for none, or several).
        "ALTER TABLE runs ADD COLUMN kind TEXT",
        f"UPDATE cases SET kind = {_KIND_FUNCTION}(record)",
        f"UPDATE runs SET kind = {_RUN_KIND_SQL}",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

T = TypeVar("T")


class HistoryError(ValueError):
    """A history that cannot be used as asked: none at the path, not a history, too new a
    schema, an unknown run id, a run still running."""


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
        # Checked again under the write lock: another process may have created the schema
        # since the first look.
        _check_tables(connection, path)
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


def _check_tables(connection: sqlite3.Connection, path: Path) -> None:
    """Refuse an SQLite database that is not a convbench history: tables but no convbench
    schema version, or a version whose ``runs`` and ``cases`` tables are not the ones that
    version has (another program's database that sets ``user_version`` too).

    One statement reads the version and the table count, so they come from one snapshot: read
    apart, a schema another process commits in between shows as tables without a version."""
    version, tables = connection.execute(
        "SELECT (SELECT user_version FROM pragma_user_version),"
        " (SELECT COUNT(*) FROM sqlite_master WHERE type = 'table')"
    ).fetchone()
    if version == 0 and tables:
        raise HistoryError(f"{path} is an SQLite database but not a convbench history; pass another --history")
    if 0 < version <= SCHEMA_VERSION:
        for table, expected in _schema(version).items():
            found = [row[1] for row in connection.execute("SELECT * FROM pragma_table_info(?)", (table,))]
            if found != expected:
                raise HistoryError(
                    f"{path} says it is a convbench history (schema version {version}), but its {table} table "
                    f"{'has the columns ' + ', '.join(found) if found else 'is missing'}; pass another --history"
                )


@functools.cache
def _schema(version: int) -> dict[str, list[str]]:
    """The columns of ``runs`` and ``cases``, in order, at schema ``version``: what
    MIGRATIONS[:version] make of an empty database."""
    scratch = sqlite3.connect(":memory:")
    _register_functions(scratch)
    try:
        for statements in MIGRATIONS[:version]:
            for statement in statements:
                scratch.execute(statement)
        return {
            table: [row[1] for row in scratch.execute("SELECT * FROM pragma_table_info(?)", (table,))]
            for table in ("runs", "cases")
        }
    finally:
        scratch.close()


def _register_functions(connection: sqlite3.Connection) -> None:
    """The SQL functions the migrations call (``_REPEAT_MEDIANS_FUNCTION``, ``_KIND_FUNCTION``)."""
    connection.create_function(_REPEAT_MEDIANS_FUNCTION, 1, _repeat_medians_json, deterministic=True)
    connection.create_function(_KIND_FUNCTION, 1, _kind_json, deterministic=True)


def _repeat_medians_json(record: str) -> str | None:
    """The ``REPEAT_MEDIANS`` value of a record stored as JSON."""
    medians = repeat_medians(_flat(record))
    return None if medians is None else json.dumps(medians)


def _kind_json(record: str) -> str | None:
    """The kind of a record stored as JSON; None for text that is not a record (the reading
    commands name such a row when they meet it)."""
    try:
        return _flat(record)["kind"]
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def _flat(record: str) -> dict:
    """A record stored as JSON, flat as readers see it, unchecked."""
    return read_flat(json.loads(record))


def _case_row(run_id: str, record: dict, text: str) -> tuple:
    """The ``cases`` row of one record and its stored text: its columns (lists and dicts as
    JSON), the median of each repeat, the run, the record as it was written."""
    values = [record.get(c) for c in _CASE_COLUMNS]
    values += [_sql_value(record.get(name)) for name, _ in RECORD_COLUMNS_V3]
    medians = repeat_medians(record)
    return (*values, None if medians is None else json.dumps(medians), run_id, text)


def _sql_value(value: object) -> object:
    return json.dumps(value) if isinstance(value, list | dict) else value


@contextmanager
def connect(path: Path | str = DEFAULT_PATH, create: bool = False) -> Iterator[sqlite3.Connection]:
    """Open the history at ``path``, migrated to ``SCHEMA_VERSION``; ``create``: make it (and
    its folder) if it does not exist. Raises HistoryError naming ``path`` if there is none
    (and ``create`` is False), or it is not a convbench history, or it cannot be opened."""
    path = Path(path)
    if not create and not path.exists():
        raise HistoryError(f"there is no history at {path} (`convbench run` creates one; --history names another)")
    if path.exists() and not stat.S_ISREG(os.stat(path).st_mode):  # SQLite would block on a FIFO, write into /dev
        raise HistoryError(f"{path} is not a file; --history names an SQLite file (made if missing)")
    try:
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: no implicit transactions; _transaction says where each begins.
        connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    except (OSError, sqlite3.Error) as error:
        raise HistoryError(f"cannot open the history {path}: {getattr(error, 'strerror', None) or error}") from None
    try:
        try:
            connection.execute("PRAGMA foreign_keys = ON")
            _register_functions(connection)
            _check_tables(connection, path)
            _retry_locked(lambda: connection.execute("PRAGMA journal_mode = WAL"))
            _retry_locked(lambda: _migrate(connection, path))
        except sqlite3.DatabaseError as error:
            raise HistoryError(f"cannot use the history {path}: {error}") from None
        yield connection
    finally:
        connection.close()


def check_writable(path: Path | str) -> None:
    """Make sure a run can be added to the history at ``path`` before the run starts: it is
    created (with its folder) if missing, else opened and migrated. Raises HistoryError."""
    with connect(path, create=True) as connection:
        try:
            with _transaction(connection):
                pass
        except sqlite3.Error as error:
            raise HistoryError(f"cannot write the history {path}: {error}") from None


def check_destinations(results: Path | str, history_path: Path | str | None = None) -> Path:
    """Check where a run will go before it starts: the results root is a folder or can be
    made, and the history (default inside it) is not the results root itself and can take
    the run (made if missing). Returns the history's path. Raises RunFolderError or
    HistoryError before anything is created for a results root the history would take."""
    check_results_root(results)
    history_path = Path(history_path) if history_path is not None else Path(results) / DEFAULT_NAME
    if history_path.resolve() == Path(results).resolve():
        raise HistoryError(
            f"--history {history_path} is the results root: the history is a file, the results root the folder "
            f"runs go in; give --history another path (default {Path(results) / DEFAULT_NAME})"
        )
    check_writable(history_path)
    return history_path


def _device(run: Run) -> str:
    """What the run measured on: its records' device names, else the machine's GPUs or CPU."""
    names = sorted(run.counts.device_names)
    if not names:
        names = [gpu.get("name") for gpu in run.env.get("gpus") or []] or [(run.env.get("cpu") or {}).get("model")]
    return ", ".join(str(n) for n in names if n)


def _hostname(run: Run) -> str | None:
    return run.env.get("hostname") or run.counts.hostname


def machine_of(run: Run) -> str | None:
    """The machine ``run`` is filed under: the one its manifest names (``bench.measure.machine``),
    else, for runs made before runs named one, its host name."""
    return run.manifest.get("machine") or _hostname(run)


def _commit(run: Run) -> str | None:
    return run.env.get("git_commit") or run.counts.git_commit


def _insert(connection: sqlite3.Connection, run: Run, lines: Iterable[tuple[dict, str]]) -> bool:
    """Add ``run`` and its records, ``lines`` of (record, its JSON text) that add themselves up
    in ``run.counts`` as they pass (``record_lines`` streams them from a run folder read
    without its records, ``load_run(..., records=False)``, each checked as it goes and stored
    as the line it was, never all in memory at once); the run's row is then settled with
    their counts.
    False (and nothing written) if the run is already there. A row that says ``running``
    (added while its run went on) is replaced by the run as it is. The caller holds the
    transaction, so a damaged record (RunFolderError) or a case id given twice (HistoryError)
    leaves nothing behind."""
    row = connection.execute("SELECT status FROM runs WHERE run_id = ?", (run.run_id,)).fetchone()
    if row is not None and row[0] != "running":
        return False
    connection.execute("DELETE FROM runs WHERE run_id = ?", (run.run_id,))
    connection.execute(
        "INSERT INTO runs (run_id, manifest, env, suite_toml, recorded) VALUES (?, '{}', '{}', '', ?)",
        (run.run_id, utc_now()),
    )
    current: list[str] = []  # the case being inserted, for the message if its id is taken

    def rows() -> Iterator[tuple]:
        for record, text in lines:
            current[:] = [record["case_id"]]
            yield _case_row(run.run_id, record, text)

    columns = [*CASE_QUERY_COLUMNS, "run_id", "record"]
    try:
        connection.executemany(
            f"INSERT INTO cases ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
            rows(),
        )
    except sqlite3.IntegrityError:
        raise HistoryError(
            f"{run.path / RECORDS}: damaged (case {current[0]!r} appears twice); nothing was added"
        ) from None
    settle(run)
    manifest = run.manifest
    connection.execute(
        "UPDATE runs SET suite = ?, status = ?, started = ?, finished = ?, hostname = ?, device = ?, git_commit = ?, "
        "cases_total = ?, cases_done = ?, failures = ?, manifest = ?, env = ?, suite_toml = ?, machine = ?, "
        f"kind = {_RUN_KIND_SQL} WHERE run_id = ?",
        (
            manifest.get("suite"),
            manifest.get("status"),
            manifest.get("started"),
            manifest.get("finished"),
            _hostname(run),
            _device(run),
            _commit(run),
            manifest.get("cases_total"),
            run.counts.records,
            run.counts.failures,
            json.dumps(manifest),
            json.dumps(run.env),
            run.suite_toml,
            machine_of(run),
            run.run_id,
        ),
    )
    return True


def ingest(run_dirs: Iterable[Path | str], history_path: Path | str = DEFAULT_PATH) -> list[tuple[str, bool]]:
    """Add run folders to the history; returns (run id, added) per folder, ``added`` False
    for a run the history already holds (or given twice, e.g. once through a symbolic link).
    All of them go in one transaction, so a damaged folder, or one still running here,
    stops the command with nothing added (HistoryError, RunFolderError); a run whose process
    died is added as ``killed``. Records stream from each folder into the history in one
    pass, so memory stays flat however many there are."""
    runs = [load_run(path, records=False) for path in run_dirs]
    for run in runs:
        if run.manifest["status"] == "running" and writer_alive(run.manifest):
            raise HistoryError(
                f"run {run.run_id} is still running (process {run.manifest.get('pid')} on "
                f"{run.manifest.get('hostname')}); it adds itself to the history when it ends"
            )

    def insert_all() -> list[tuple[str, bool]]:
        for run in runs:
            run.counts = RecordCounts()  # a retry after a locked database counts afresh
        with _transaction(connection):
            return [
                (run.run_id, _insert(connection, run, record_lines(run.path, run.counts, unique=False))) for run in runs
            ]

    with connect(history_path, create=True) as connection:
        return _retry_locked(insert_all)


def add_runs(runs: Iterable[Run], history_path: Path | str = DEFAULT_PATH) -> list[tuple[str, bool]]:
    """Add runs already read with their records (``load_run``, or built in memory, as the
    dashboard's scale benchmark builds years of nights) to the history, each in its own
    transaction; returns (run id, added) per run, ``added`` False for a run the history
    already holds. Each record is stored as ``json.dumps`` writes it."""

    def lines(run: Run) -> Iterator[tuple[dict, str]]:
        for record in run.records:
            run.counts.add(record)
            yield record, json.dumps(record)

    def insert(run: Run) -> bool:
        run.counts = RecordCounts()  # a retry after a locked database counts afresh
        with _transaction(connection):
            return _insert(connection, run, lines(run))

    with connect(history_path, create=True) as connection:
        return [(run.run_id, _retry_locked(lambda run=run: insert(run))) for run in runs]


def record_run(run_dir: Path | str, history_path: Path | str = DEFAULT_PATH) -> None:
    """Add one finished run folder to the history; a run already there is left as it is.
    The runner calls this at the end of every run."""
    ingest([run_dir], history_path)


# Reading the history back. Rows are decoded in one place each (``_decode_run``,
# ``_decode_record``): a row this version cannot understand (damaged, or written by hand) is
# named with its run and field, as a damaged run folder is, never passed on to trip a reader.

#: The runs table's columns, in the order ``_decode_run`` reads them, and the types each may
#: hold (None: SQL NULL); manifest, env and suite_toml hold JSON and TOML text.
_RUN_COLUMNS: dict[str, tuple[type, ...]] = {
    "run_id": (str,),
    "suite": (str, type(None)),
    "status": (str, type(None)),
    "started": (str, type(None)),
    "machine": (str, type(None)),
    "device": (str, type(None)),
    "git_commit": (str, type(None)),
    "cases_total": (int, type(None)),
    "cases_done": (int, type(None)),
    "failures": (int, type(None)),
    "manifest": (str,),
    "env": (str,),
    "suite_toml": (str,),
}
_SELECT_RUN = f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs"


@dataclass(frozen=True)
class StoredRun:
    """A runs row, decoded and checked; ``status`` as it is now (``killed`` for a run stored
    ``running`` whose process is gone)."""

    run_id: str
    suite: str | None
    status: str | None
    started: str | None
    machine: str | None
    device: str | None
    git_commit: str | None
    cases_total: int | None
    cases_done: int | None
    failures: int | None
    manifest: dict
    env: dict
    suite_toml: str


def _where(history_path: Path | str, run_id: object) -> str:
    """``HISTORY: run RUN-ID``, the run id shown safely whatever the row holds."""
    name = run_id if isinstance(run_id, str) and run_id.isprintable() else quoted(run_id)
    return f"{history_path}: run {name}"


def _decode_run(row: Sequence[object], history_path: Path | str) -> StoredRun:
    """A runs row (``_SELECT_RUN``'s columns) as a StoredRun, or HistoryError naming the
    history, the run and the field that does not hold what convbench writes there."""
    values = dict(zip(_RUN_COLUMNS, row, strict=True))
    where = _where(history_path, values["run_id"])
    for column, allowed in _RUN_COLUMNS.items():
        if not isinstance(values[column], allowed) or isinstance(values[column], bool):
            raise HistoryError(f"{where}: damaged ({column} is {quoted(values[column])})")
    if not is_time(values["started"]):
        raise HistoryError(f"{where}: damaged (started is {quoted(values['started'])}, not an ISO 8601 time)")
    try:
        manifest = check_manifest(decode_json_object(values["manifest"], f"{where}: manifest"), f"{where}: manifest")
        env = check_env(decode_json_object(values["env"], f"{where}: env"), f"{where}: env")
    except RunFolderError as error:
        raise HistoryError(str(error)) from None
    if manifest["run_id"] != values["run_id"]:
        raise HistoryError(f"{where}: damaged (its manifest names run {quoted(manifest['run_id'])})")
    status = effective_status(manifest) if values["status"] == "running" else values["status"]
    return StoredRun(**{**values, "status": status, "manifest": manifest, "env": env})


def _decode_record(text: object, history_path: Path | str, run_id: str, number: int) -> dict:
    """Record ``number`` (1-based) of a run's cases rows as a dict, checked like a run
    folder's (``check_record``), or HistoryError naming the run, the record and the field."""
    where = f"{_where(history_path, run_id)}: record {number}"
    if not isinstance(text, str):
        raise HistoryError(f"{where}: damaged record ({quoted(text)}, not JSON text)")
    try:
        return check_record(decode_json(text, where, "damaged record"), where)
    except RunFolderError as error:
        raise HistoryError(str(error)) from None


def _stored_runs(
    connection: sqlite3.Connection, history_path: Path | str, notes: list[str] | None, where: str = "", *args: object
) -> list[StoredRun]:
    """The runs rows matching ``where`` (SQL after the table, parameters ``args``), decoded;
    a damaged one raises HistoryError, or with ``notes`` is left out and named there."""
    found = []
    for row in connection.execute(f"{_SELECT_RUN} {where}", args).fetchall():
        try:
            found.append(_decode_run(row, history_path))
        except HistoryError as error:
            if notes is None:
                raise
            notes.append(f"{error}; left out")
    return found


def runs(history_path: Path | str = DEFAULT_PATH, notes: list[str] | None = None) -> pd.DataFrame:
    """One row per run, oldest first: id, start time, machine (``bench.measure.machine``), device,
    suite, its cases' timed steps per repeat and repeats (``10``; ``5,10`` where its cases
    differ; empty for runs without them, such as training runs), commit, status (``killed``
    for a run stored ``running`` whose process is gone), case count and failures. A damaged
    row raises HistoryError, or with ``notes`` is left out and named there."""
    with connect(history_path) as connection:
        stored = _stored_runs(connection, history_path, notes, "ORDER BY started, run_id")
        protocol = _protocols(connection)
    columns = ["run_id", "started", "machine", "device", "suite", "steps", "repeats"]
    columns += ["commit", "status", "cases", "failures"]
    return pd.DataFrame(
        [
            [r.run_id, r.started, r.machine, r.device, r.suite, *protocol.get(r.run_id, ("", ""))]
            + [r.git_commit, r.status, r.cases_done, r.failures]
            for r in stored
        ],
        columns=columns,
    )


def _protocols(connection: sqlite3.Connection) -> dict[str, tuple[str, str]]:
    """Each run's distinct steps and repeats over its cases, as text (``10``, ``5,10``), from
    the cases' columns (the figures index holds them: no record is read)."""
    rows = connection.execute(
        f"SELECT run_id, steps, repeats FROM cases INDEXED BY {FIGURES_INDEX} GROUP BY run_id, steps, repeats"
    ).fetchall()
    found: dict[str, tuple[list[int], list[int]]] = {}
    for run_id, steps, repeats in rows:
        both = found.setdefault(run_id, ([], []))
        for values, value in zip(both, (steps, repeats), strict=True):
            if isinstance(value, int) and not isinstance(value, bool) and value not in values:
                values.append(value)
    return {run_id: tuple(",".join(map(str, sorted(v))) for v in both) for run_id, both in found.items()}


def records(
    history_path: Path | str, run_ids: Iterable[str] | None = None, notes: list[str] | None = None
) -> pd.DataFrame:
    """The Records of the given runs (all runs if None) as a DataFrame, as ``Run.frame()``
    would give them, plus the run's ``started`` time, ``machine`` (``bench.measure.machine``),
    ``run_status``, ``suite_content`` (``bench.storage.baselines.suite_content``) and
    ``run_tags`` (a tuple). A run whose row or records are damaged raises HistoryError naming it, or
    with ``notes`` is left out and named there."""
    with connect(history_path) as connection:
        if run_ids is None:
            stored = _stored_runs(connection, history_path, notes, "ORDER BY started, run_id")
        else:
            ids = list(run_ids)
            where = f"WHERE run_id IN ({', '.join('?' * len(ids))}) ORDER BY started, run_id"
            stored = _stored_runs(connection, history_path, notes, where, *ids)
        rows = []
        for run in stored:
            try:
                rows += _run_records(connection, history_path, run)
            except HistoryError as error:
                if notes is None:
                    raise
                notes.append(f"{error}; left out")
    return pd.DataFrame(rows)


def _run_records(connection: sqlite3.Connection, history_path: Path | str, run: StoredRun) -> list[dict]:
    texts = connection.execute("SELECT record FROM cases WHERE run_id = ? ORDER BY rowid", (run.run_id,)).fetchall()
    extra = {
        "started": run.started,
        "machine": run.machine,
        "run_status": run.status,
        "suite_content": suite_content(run.suite_toml),
        "run_tags": run_tags(run.manifest),
    }
    return [
        {**_decode_record(text, history_path, run.run_id, number), **extra}
        for number, (text,) in enumerate(texts, start=1)
    ]


@dataclass(frozen=True)
class ResolvedRun:
    """A run named on the command line, with its Records as a DataFrame, its manifest and its
    env.json. ``note``: how it was chosen where that needs saying (a fall-back to a run that
    is not complete)."""

    run_id: str
    suite: str | None
    machine: str | None
    started: str | None
    frame: pd.DataFrame
    status: str | None = None
    cases_total: int | None = None
    note: str | None = None
    manifest: dict = field(default_factory=dict)
    env: dict = field(default_factory=dict)
    #: the run's suite.toml as written; None where unknown (records given as a DataFrame)
    suite_toml: str | None = None
    #: earlier runs passed over as baselines on the way to this one: (run id, why)
    skipped: tuple[tuple[str, str], ...] = ()

    @property
    def complete(self) -> bool:
        return self.status == "complete"

    def describe(self) -> str:
        """``run-id`` plus, for a run that is not complete, its status and case count."""
        if self.complete or self.status is None:
            return self.run_id
        return f"{self.run_id} ({self.status}, {len(self.frame)} of {self.cases_total} cases)"


def _from_history(
    connection: sqlite3.Connection, history_path: Path | str, run_id: str, note: str | None = None
) -> ResolvedRun:
    found = _stored_runs(connection, history_path, None, "WHERE run_id = ?", run_id)
    if not found:
        raise HistoryError(f"{run_id!r} is neither a run folder nor a run in the history {history_path}")
    run = found[0]
    frame = pd.DataFrame(_run_records(connection, history_path, run))
    return ResolvedRun(
        run.run_id,
        run.suite,
        run.machine,
        run.started,
        frame,
        run.status,
        run.cases_total,
        note,
        run.manifest,
        run.env,
        run.suite_toml,
    )


def _before(connection: sqlite3.Connection, history_path: Path | str, run: ResolvedRun) -> list[StoredRun]:
    """Every run of ``run``'s suite and machine that started before it, latest first."""
    return _stored_runs(
        connection,
        history_path,
        None,
        "WHERE suite IS ? AND machine IS ? AND (started, run_id) < (?, ?) ORDER BY started DESC, run_id DESC",
        run.suite,
        run.machine,
        run.started,
        run.run_id,
    )


def _usable(run: StoredRun, include_incomplete: bool) -> bool:
    """A run that can be a baseline: complete, or with ``include_incomplete`` any run with records."""
    return bool(run.cases_done) and (run.status == "complete" or (include_incomplete and run.status != "running"))


def skip_reason(run: StoredRun, suite_toml: str | None, baseline_tag: str | None = None) -> str | None:
    """Why ``run`` cannot be the baseline of a run whose suite.toml is ``suite_toml`` (None:
    unknown, nothing to hold against it): it is not tagged ``baseline_tag``, or it measured
    something else (``bench.storage.baselines``); None if it can."""
    if baseline_tag is not None and baseline_tag not in run_tags(run.manifest):
        return f"not tagged {baseline_tag}"
    if suite_toml is None:
        return None
    difference = content_difference(run.suite_toml, suite_toml)
    return f"measured something else: {difference}" if difference else None


def _baselines(
    before: Iterable[StoredRun], this: ResolvedRun, baseline_tag: str | None, skipped: list[tuple[str, str]]
) -> Iterator[StoredRun]:
    """The runs of ``before`` that can be ``this``'s baseline, in order; the others (with
    records) are added to ``skipped`` with the reason."""
    for run in before:
        reason = skip_reason(run, this.suite_toml, baseline_tag)
        if reason is None:
            yield run
        elif run.cases_done:
            skipped.append((run.run_id, reason))


def resolve(
    reference: str,
    history_path: Path | str = DEFAULT_PATH,
    after: ResolvedRun | None = None,
    include_incomplete: bool = False,
    baseline_tag: str | None = None,
) -> ResolvedRun:
    """The run a user named: a run folder, a run id in the history, ``latest`` (the most
    recently started run in the history) or ``previous``: the latest complete run of the same
    suite on the same machine before ``after`` (or before the latest run) that measured the
    same thing (``bench.storage.baselines``) and, with ``baseline_tag``, carries that tag;
    the runs passed over are in its ``skipped``. With ``include_incomplete`` an interrupted
    or killed run with records will do too; without it, if no complete run exists, the latest
    run with records is taken and ``note`` says so. Raises HistoryError if there is no such
    run (naming the runs skipped), or a row it reads is damaged."""
    folder = Path(reference)
    if (folder / MANIFEST).is_file():
        run = load_run(folder)
        manifest = run.manifest
        return ResolvedRun(
            run.run_id,
            manifest.get("suite"),
            machine_of(run),
            manifest.get("started"),
            run.frame(),
            manifest.get("status"),
            manifest.get("cases_total"),
            manifest=manifest,
            env=run.env,
            suite_toml=run.suite_toml,
        )
    if reference not in ("latest", "previous") and not Path(history_path).exists():
        raise HistoryError(
            f"{reference!r} is neither a run folder nor a run in the history: there is no {history_path}"
        )
    with connect(history_path) as connection:
        if reference not in ("latest", "previous"):
            return _from_history(connection, history_path, reference)
        latest = connection.execute("SELECT run_id FROM runs ORDER BY started DESC, run_id DESC LIMIT 1").fetchone()
        if latest is None:
            raise HistoryError(f"the history {history_path} holds no runs yet, so there is no {reference!r} run")
        if reference == "latest":
            return _from_history(connection, history_path, latest[0])
        this = after or _from_history(connection, history_path, latest[0])
        before = _before(connection, history_path, this)
        skipped: list[tuple[str, str]] = []
        candidates = list(_baselines(before, this, baseline_tag, skipped))
        chosen = next((r for r in candidates if _usable(r, include_incomplete)), None)
        note = None
        if chosen is None:
            chosen = next((r for r in candidates if _usable(r, include_incomplete=True)), None)
            if chosen is not None:
                note = (
                    f"no complete run of suite {this.suite!r} on {this.machine!r} before {this.run_id}: "
                    f"falling back to {chosen.run_id}, which is {chosen.status}"
                )
        if chosen is None:
            raise HistoryError(
                f"the history {history_path} holds no run of suite {this.suite!r} on {this.machine!r} "
                f"before {this.run_id}"
                + (" with records" if before and not skipped else "")
                + (
                    f" that measured the same thing; skipped: {describe_skipped(skipped)} (name one of them instead "
                    "of previous to compare with it all the same)"
                    if skipped
                    else ""
                )
            )
        # Only the runs passed over on the way to the one chosen: those before it are no news.
        passed = {r.run_id for r in itertools.takewhile(lambda r: r is not chosen, before)}
        resolved = _from_history(connection, history_path, chosen.run_id, note)
        return dataclasses.replace(resolved, skipped=tuple(s for s in skipped if s[0] in passed))


def describe_skipped(skipped: Sequence[tuple[str, str]]) -> str:
    """``run-a (why), run-b (why)``: runs passed over as baselines, for a note."""
    return ", ".join(f"{run_id} ({reason})" for run_id, reason in skipped)


def earlier_runs(
    run: ResolvedRun,
    count: int,
    history_path: Path | str = DEFAULT_PATH,
    include_incomplete: bool = False,
    accept: Callable[[ResolvedRun], bool] | None = None,
    baseline_tag: str | None = None,
    skipped: list[tuple[str, str]] | None = None,
) -> list[ResolvedRun]:
    """Up to ``count`` complete runs (with ``include_incomplete``: any runs with records)
    recorded before ``run`` (by start time) of the same suite on the same machine that
    measured what ``run`` measured (``bench.storage.baselines``; with ``baseline_tag``, tagged
    so), the nearest that ``accept`` takes (default: all), oldest first: the rest of a
    several-run baseline. A run refused does not take a place; with ``skipped``, each refused
    run with records is appended there as (run id, why)."""
    if count < 1 or run.started is None:
        return []
    skipped = [] if skipped is None else skipped
    chosen: list[ResolvedRun] = []
    with connect(history_path) as connection:
        before = _before(connection, history_path, run)
        for stored in _baselines(before, run, baseline_tag, skipped):
            if _usable(stored, include_incomplete):
                candidate = _from_history(connection, history_path, stored.run_id)
                if accept is None or accept(candidate):
                    chosen.append(candidate)
                else:
                    skipped.append((stored.run_id, "measured its cases differently"))
            if len(chosen) == count:
                break
    return chosen[::-1]
