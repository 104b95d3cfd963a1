"""The SQLite history: whole runs, idempotent adds, schema versions, two writers at once."""

import json
import multiprocessing
import sqlite3

import pandas as pd
import pytest

from bench.storage import history
from bench.storage.history import SCHEMA_VERSION, HistoryError, ingest, record_run, resolve
from bench.storage.store import load_run
from tests.bench.runs import record, samples, smoke_run, write_run

#: What history.records adds to each record: the run's start, machine, status, suite content and tags.
RUN_COLUMNS = ["started", "machine", "run_status", "suite_content", "run_tags"]


def count(path, table: str) -> int:
    with sqlite3.connect(path) as connection:
        return connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def test_a_run_lands_whole_with_its_samples(tmp_path):
    run_dir = write_run(
        tmp_path,
        "r1",
        [record("r1", "cnn", "adam", samples(40.0, seed=1)), record("r1", "resnet20", "sgdm", status="oom")],
    )
    database = tmp_path / "history.sqlite"
    record_run(run_dir, database)
    from_history = history.records(database, ["r1"]).drop(columns=RUN_COLUMNS)
    pd.testing.assert_frame_equal(from_history, load_run(run_dir).frame())
    listed = history.runs(database)
    assert listed.to_dict("records") == [
        {
            "run_id": "r1",
            "started": load_run(run_dir).manifest["started"],
            "machine": "nightly-box",
            "device": "AMD EPYC",
            "suite": "smoke",
            "steps": "10",  # tests.bench.runs.record's protocol
            "repeats": "3",
            "commit": "0123456789abcdef",
            "status": "complete",
            "cases": 2,
            "failures": 1,
        }
    ]


def test_adding_a_run_twice_keeps_one_copy(tmp_path):
    run_dir = smoke_run(tmp_path, "r1")
    database = tmp_path / "history.sqlite"
    record_run(run_dir, database)
    record_run(run_dir, database)
    assert ingest([run_dir, smoke_run(tmp_path, "r2")], database) == [("r1", False), ("r2", True)]
    assert (count(database, "runs"), count(database, "cases")) == (2, 8)


def test_a_failure_halfway_through_a_run_writes_none_of_it(tmp_path, monkeypatch):
    run_dir = smoke_run(tmp_path, "r1")
    database = tmp_path / "history.sqlite"
    real_lines = history.record_lines

    def failing_lines(*args, **kwargs):
        for index, line in enumerate(real_lines(*args, **kwargs)):
            if index == 2:  # the third case
                raise OSError("disk full")
            yield line

    monkeypatch.setattr(history, "record_lines", failing_lines)
    with pytest.raises(OSError, match="disk full"):
        record_run(run_dir, database)
    monkeypatch.setattr(history, "record_lines", real_lines)
    assert (count(database, "runs"), count(database, "cases")) == (0, 0)
    record_run(run_dir, database)
    assert (count(database, "runs"), count(database, "cases")) == (1, 4)


def test_schema_version_is_recorded_and_a_newer_one_refused(tmp_path):
    database = tmp_path / "history.sqlite"
    history.check_writable(database)
    with sqlite3.connect(database) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(HistoryError, match=f"schema version {SCHEMA_VERSION + 1}"):
        history.runs(database)


def test_a_version_2_history_gets_the_record_columns_and_repeat_medians_of_its_cases(tmp_path):
    """Migration 3 fills the columns it adds from each stored record: the fields as they are,
    and the median of each repeat (3 repeats of 2 steps here, medians known by hand)."""
    database = tmp_path / "history.sqlite"
    steps = [10.0, 12.0, 20.0, 30.0, 7.0, 9.0]  # repeat medians 11, 25 and 8 ms
    one = record("r1", "cnn", "adam", steps, repeats=3, steps=2, other_cpu_fraction=0.4)
    run = load_run(write_run(tmp_path, "r1", [one, record("r1", "resnet20", "sgdm", status="oom")]))
    with sqlite3.connect(database) as connection:  # a history as version 2 wrote it
        for statements in history.MIGRATIONS[:2]:
            for statement in statements:
                connection.execute(statement)
        connection.execute("PRAGMA user_version = 2")
        connection.execute(
            "INSERT INTO runs (run_id, suite, status, machine, manifest, env, suite_toml, recorded) "
            "VALUES ('r1', 'smoke', 'complete', 'box', '{}', '{}', '', '')"
        )
        for stored in run.records:
            connection.execute(
                "INSERT INTO cases (run_id, case_id, status, record) VALUES ('r1', ?, ?, ?)",
                (stored["case_id"], stored["status"], json.dumps(stored)),
            )
    with history.connect(database) as connection:
        rows = connection.execute(
            "SELECT kind, steps, repeats, input_shape, hyperparameters, other_cpu_fraction, error, "
            "step_time_repeat_medians_ms FROM cases ORDER BY rowid"
        ).fetchall()
    kind, steps_, repeats, shape, hyperparameters, load, error, medians = rows[0]
    assert (kind, steps_, repeats, json.loads(shape), load, error) == ("training-step", 2, 3, [1, 28, 28], 0.4, None)
    assert json.loads(hyperparameters) == {"lr": 0.001}
    assert json.loads(medians) == [11.0, 25.0, 8.0]
    assert rows[1][6] == "CUDA out of memory" and rows[1][7] is None  # no samples, no medians
    # A run added now gets the same columns from the runner's records.
    record_run(write_run(tmp_path, "r2", [record("r2", "cnn", "adam", steps, repeats=3, steps=2)]), database)
    with history.connect(database) as connection:
        added = connection.execute(
            "SELECT steps, repeats, input_shape, step_time_repeat_medians_ms FROM cases WHERE run_id = 'r2'"
        ).fetchone()
    assert (added[0], added[1], json.loads(added[2]), json.loads(added[3])) == (2, 3, [1, 28, 28], [11.0, 25.0, 8.0])


def _record_many(database, run_dirs, barrier) -> None:
    barrier.wait()
    for run_dir in run_dirs:
        record_run(run_dir, database)


def test_two_processes_recording_at_the_same_moment_both_land_whole(tmp_path):
    database = tmp_path / "history.sqlite"
    # Twenty runs per process, recorded in lock-step from a fresh database (so both processes
    # also race to create the schema).
    groups = [
        [
            write_run(
                tmp_path / name,
                f"{name}-{i:02d}",
                [record(f"{name}-{i:02d}", "cnn", "adam", samples(40.0, seed=k), batch_size=k + 1) for k in range(5)],
            )
            for i in range(20)
        ]
        for name in ("a", "b")
    ]
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    workers = [context.Process(target=_record_many, args=(database, group, barrier)) for group in groups]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [worker.exitcode for worker in workers] == [0, 0]
    with sqlite3.connect(database) as connection:
        per_run = dict(connection.execute("SELECT run_id, COUNT(*) FROM cases GROUP BY run_id").fetchall())
    assert per_run == {f"{name}-{i:02d}": 5 for name in ("a", "b") for i in range(20)}


def _open_at_once(path, barrier, errors) -> None:
    barrier.wait()
    try:
        with history.connect(path, create=True):
            pass
    except HistoryError as error:
        errors.put(str(error))


def test_processes_creating_one_history_at_the_same_moment_all_see_a_convbench_history(tmp_path):
    # Four processes open each of forty fresh databases at once. Reading the schema version
    # and the table count in two statements let a schema committed in between look like a
    # foreign database (about one round in twelve failed that way).
    context = multiprocessing.get_context("fork")
    errors = context.Queue()
    for round_ in range(40):
        barrier = context.Barrier(4)
        path = tmp_path / f"history-{round_}.sqlite"
        workers = [context.Process(target=_open_at_once, args=(path, barrier, errors)) for _ in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)
        assert [worker.exitcode for worker in workers] == [0] * 4
        with sqlite3.connect(path) as connection:
            assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert errors.empty(), errors.get()


def test_latest_and_previous_follow_suite_and_machine(tmp_path):
    database = tmp_path / "history.sqlite"
    ingest(
        [
            smoke_run(tmp_path, "monday", started="2026-11-23T01:00:00+00:00"),
            smoke_run(tmp_path, "tuesday", started="2026-11-24T01:00:00+00:00"),
            smoke_run(tmp_path, "tuesday-gpu", started="2026-11-24T02:00:00+00:00", hostname="gpu-box"),
            smoke_run(tmp_path, "wednesday", started="2026-11-25T01:00:00+00:00"),
        ],
        database,
    )
    latest = resolve("latest", database)
    assert latest.run_id == "wednesday"
    assert resolve("previous", database).run_id == "tuesday"
    assert resolve("previous", database, after=resolve("tuesday", database)).run_id == "monday"
    with pytest.raises(HistoryError, match="no run of suite 'smoke' on 'gpu-box' before tuesday-gpu"):
        resolve("previous", database, after=resolve("tuesday-gpu", database))
    with pytest.raises(HistoryError, match="no run of suite 'smoke' on 'nightly-box' before monday"):
        resolve("previous", database, after=resolve("monday", database))
    folder = resolve(str(tmp_path / "tuesday"), database)
    assert folder.run_id == "tuesday" and len(folder.frame) == 4
    with pytest.raises(HistoryError, match="'friday' is neither a run folder nor a run in the history"):
        resolve("friday", database)


def test_an_empty_history_has_no_latest_run(tmp_path):
    database = tmp_path / "history.sqlite"
    history.check_writable(database)
    with pytest.raises(HistoryError, match="holds no runs yet"):
        resolve("latest", database)


def test_reading_a_history_that_is_not_there_creates_none(tmp_path):
    database = tmp_path / "typo" / "history.sqlite"
    for read in (history.runs, lambda path: resolve("latest", path), history.records):
        with pytest.raises(HistoryError, match=f"there is no history at {database}"):
            read(database)
    assert not (tmp_path / "typo").exists()


@pytest.mark.parametrize(
    "content,message",
    [(b"not a database at all" * 100, "cannot use the history"), (None, "not a convbench history")],
)
def test_a_file_that_is_not_a_history_is_named_not_used(tmp_path, content, message):
    database = tmp_path / "history.sqlite"
    if content is None:  # a real SQLite database of something else
        with sqlite3.connect(database) as connection:
            connection.execute("CREATE TABLE photos (name TEXT)")
    else:
        database.write_bytes(content)
    before = database.read_bytes()
    for use in (history.runs, history.check_writable):
        with pytest.raises(HistoryError, match=message):
            use(database)
    assert database.read_bytes() == before


def test_ingest_is_all_or_nothing_and_a_case_given_twice_is_one_line(tmp_path):
    good = smoke_run(tmp_path, "good")
    twice = smoke_run(tmp_path, "twice")
    lines = (twice / "records.jsonl").read_text().splitlines()
    (twice / "records.jsonl").write_text("\n".join([*lines, lines[0]]) + "\n")
    database = tmp_path / "history.sqlite"
    with pytest.raises(HistoryError, match=r"records.jsonl: damaged \(case 'cnn/adam/.*' appears twice\)"):
        ingest([good, twice], database)
    assert (count(database, "runs"), count(database, "cases")) == (0, 0)


def test_ingest_streams_the_records_it_adds(tmp_path):
    """ingest reads a folder without its records and streams them into the history, each
    stored as the line it was; the run's row gets their counts."""
    run_dir = smoke_run(tmp_path, "r1")
    header = load_run(run_dir, records=False)
    assert header.records == [] and header.counts.records == 0
    ingest([run_dir], tmp_path / "history.sqlite")
    pd.testing.assert_frame_equal(
        history.records(tmp_path / "history.sqlite", ["r1"]).drop(columns=RUN_COLUMNS),
        load_run(run_dir).frame(),
    )
    with sqlite3.connect(tmp_path / "history.sqlite") as connection:
        stored = [text for (text,) in connection.execute("SELECT record FROM cases ORDER BY rowid")]
        row = connection.execute("SELECT cases_done, failures, device, status FROM runs").fetchone()
    assert stored == (run_dir / "records.jsonl").read_text().splitlines()
    assert row == (4, 0, "AMD EPYC", "complete")
