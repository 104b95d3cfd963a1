"""Faults outside the cases: unusable paths found before any work, damaged files and a full
disk as one-line errors, and files that get the permissions the umask allows."""

import json
import os
import resource
import signal
import stat
import subprocess
import sys

import pytest

from bench.kinds import write_tables
from bench.record import read_flat
from bench.storage import history
from bench.storage.store import RunWriter, write_atomic
from tests.bench.runs import record, smoke_run
from tests.bench.test_run_command import ROOT, TINY, tiny_suite
from tests.bench.test_run_lifecycle import run_cli

# --- resources checked before the first case --------------------------------------------------


@pytest.mark.parametrize("problem", ["garbage", "under a file"])
def test_a_history_that_cannot_take_the_run_exits_2_before_any_work(tmp_path, capsys, fault_models, problem):
    results = tmp_path / "results"
    if problem == "garbage":
        database = tmp_path / "history.sqlite"
        database.write_bytes(b"\x00garbage" * 512)
        message = f"cannot use the history {database}: file is not a database"
    else:
        (tmp_path / "file").write_text("")
        database = tmp_path / "file" / "history.sqlite"
        message = f"cannot open the history {database}"
    args = ["--suite", tiny_suite(tmp_path), "--results", results, "--history", database, "--run-id", "x"]
    code, _, err = run_cli(capsys, "run", *args)
    assert code == 2 and message in err, err
    assert len(err.splitlines()) == 1 and not results.exists()


@pytest.mark.parametrize("command", [["history"], ["trend"], ["compare", "previous", "latest"]])
def test_reading_commands_never_create_a_history(tmp_path, capsys, command):
    database = tmp_path / "histroy.sqlite"
    code, _, err = run_cli(capsys, *command, "--history", database)
    assert code == 2 and f"there is no history at {database}" in err, err
    assert list(tmp_path.iterdir()) == []


# --- damaged files: one line, never a traceback -------------------------------------------------


@pytest.mark.parametrize(
    "damage,message",
    [
        ("run.json", "run.json: damaged"),
        ("records.jsonl", "records.jsonl:1: damaged record"),
    ],
)
def test_a_damaged_run_folder_is_one_line_for_every_command(tmp_path, capsys, damage, message):
    run_dir = smoke_run(tmp_path, "r1")
    path = run_dir / damage
    path.write_text("{oops\n" + path.read_text())
    for command in (["report", run_dir], ["ingest", run_dir], ["compare", run_dir, run_dir]):
        history_flag = [] if command[0] == "report" else ["--history", tmp_path / "h.sqlite"]
        code, _, err = run_cli(capsys, *command, *history_flag)
        assert code == 2 and message in err and len(err.splitlines()) == 1, (command, err)


def _edit_json(path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _edit_first_record(path, change) -> None:
    lines = path.read_text().splitlines()
    first = read_flat(json.loads(lines[0]))  # damaged as a flat (schema 1) line
    change(first)
    path.write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")


@pytest.mark.parametrize(
    "damage,message",
    [
        # valid JSON with the wrong contents: each made a traceback somewhere
        (
            lambda d: _edit_json(d / "run.json", lambda m: m.update(pid="abc", status="running")),
            "damaged (pid is 'abc')",
        ),
        (lambda d: _edit_json(d / "run.json", lambda m: m.pop("run_id")), "run.json: damaged (no run_id)"),
        (
            lambda d: _edit_json(d / "run.json", lambda m: m.update(run_id="../../etc")),
            "run id '../../etc' is not one folder name",
        ),
        (lambda d: _edit_json(d / "run.json", lambda m: m.update(machine=["x"])), "damaged (machine is ['x'])"),
        (lambda d: _edit_json(d / "run.json", lambda m: m.update(sections=[1])), "damaged (sections is [1])"),
        (lambda d: (d / "records.jsonl").write_text('[1, 2]\n"s"\n'), "records.jsonl:1: damaged record (expected a"),
        (
            lambda d: _edit_first_record(d / "records.jsonl", lambda r: r.update(batch_size="two")),
            "records.jsonl:1: damaged record (batch_size is 'two', expected int or float or null)",
        ),
        (
            lambda d: _edit_first_record(d / "records.jsonl", lambda r: r.update(step_time_ms="fast")),
            "damaged record (step_time_ms is 'fast', expected float or int or null)",
        ),
        (lambda d: (d / "suite.toml").write_bytes(b"\xff\xfe bad"), "suite.toml: damaged (not UTF-8"),
    ],
)
def test_a_run_folder_with_wrong_contents_is_one_line_for_every_command(tmp_path, capsys, damage, message):
    run_dir = smoke_run(tmp_path, "r1")
    damage(run_dir)
    commands = (
        ["report", run_dir],
        ["ingest", run_dir],
        ["compare", run_dir, run_dir],
        ["export", run_dir, "--format", "pytest-benchmark"],
    )
    for command in commands:
        history_flag = [] if command[0] == "report" else ["--history", tmp_path / "h.sqlite"]
        code, _, err = run_cli(capsys, *command, *history_flag)
        assert code == 2 and message in err and len(err.splitlines()) == 1, (command, err)


@pytest.mark.slow
def test_a_full_disk_mid_run_stops_it_consistently_in_one_line(tmp_path):
    """RLIMIT_FSIZE stands in for a full disk (a write past it fails with EFBIG, as one past a
    full disk fails with ENOSPC); SIGXFSZ is ignored so that the write fails, not the process."""
    database = tmp_path / "history.sqlite"
    history.check_writable(database)  # made before the limit: a full disk with an old history
    suite = tmp_path / "disk.toml"
    suite.write_text(TINY.format(models='["mlp"]').replace("steps = 2", "steps = 300").replace("[4]", "[4, 5]"))
    # Two records of ~13 kB (600 step times each) fit, the third does not; SQLite's 32 kB
    # shared-memory file for the history fits too.
    limit = 36_000

    def small_disk() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    command = [sys.executable, "-m", "bench", "run", "--suite", suite, "--results", tmp_path, "--run-id", "d"]
    done = subprocess.run(
        [str(c) for c in command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        preexec_fn=small_disk,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "stopped: cannot write the run folder" in done.stderr and "File too large" in done.stderr
    lines = (tmp_path / "d" / "records.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line whole
    manifest = json.loads((tmp_path / "d" / "run.json").read_text())
    assert 1 <= len(records) < 4 and manifest["cases_done"] == len(records)
    assert manifest["status"] == "incomplete" and "File too large" in manifest["stopped_by"]


# --- permissions ------------------------------------------------------------------------------


@pytest.fixture
def group_umask():
    previous = os.umask(0o002)
    yield 0o664
    os.umask(previous)


def test_every_file_of_a_run_folder_gets_the_umask_permissions(tmp_path, group_umask):
    writer = RunWriter(tmp_path, "p", "smoke", "[suite]\nname = 'smoke'\n", {"hostname": "h"}, 1)
    writer.append(record("p"))
    writer.finish()
    write_tables(writer.path)
    write_atomic(tmp_path / "p" / "rf.csv", b"layer\n")
    files = sorted(p for p in writer.path.iterdir() if p.is_file())
    assert [p.name for p in files] == sorted(
        ["env.json", "records.jsonl", "rf.csv", "run.json", "suite.toml", "summary.csv", "summary.md", "summary.tex"]
    )
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in files} == {p.name: group_umask for p in files}


def test_an_output_path_that_cannot_be_written_is_one_line(tmp_path, capsys):
    run_dir = smoke_run(tmp_path, "r1")
    code, _, err = run_cli(capsys, "compare", run_dir, run_dir, "--format", "markdown", "--output", tmp_path / "r1")
    assert code == 1 and "Is a directory" in err and len(err.splitlines()) == 1, err


# --- the CPU memory guard ---------------------------------------------------------------------


@pytest.mark.slow
def test_a_cpu_case_past_the_memory_limit_is_oom_and_the_sweep_goes_on(tmp_path, capsys, fault_models):
    """mlp at batch 100,000 needs 5 batches of 100,000 x 784 float32 (1.5 GiB) before its first
    step: past a 0.5 GiB limit. ok-net at batch 4 needs kilobytes."""
    suite = tmp_path / "big.toml"
    suite.write_text(
        TINY.format(models='["mlp", "ok-net"]').replace(
            "[4]", '[4]\n\n[[grid]]\nmodels = ["mlp"]\noptimizers = ["sgdm"]\nbatch_sizes = [100000]'
        )
    )
    limits = resource.getrlimit(resource.RLIMIT_AS)
    args = ["--suite", suite, "--optimizers", "sgdm", "--results", tmp_path, "--run-id", "m", "--memory-limit", "0.5"]
    code, _, err = run_cli(capsys, "run", *args)
    assert code == 0, err
    records = [read_flat(json.loads(line)) for line in (tmp_path / "m" / "records.jsonl").read_text().splitlines()]
    assert [(r["model"], r["batch_size"], r["status"]) for r in records] == [
        ("mlp", 4, "ok"),
        ("ok-net", 4, "ok"),
        ("mlp", 100000, "oom"),
    ]
    assert "can't allocate memory" in records[2]["error"]
    assert resource.getrlimit(resource.RLIMIT_AS) == limits  # put back after the run


def test_a_finished_run_that_lost_its_last_record_reads_incomplete(tmp_path, capsys):
    run_dir = smoke_run(tmp_path, "r1")
    records = run_dir / "records.jsonl"
    lines = records.read_text().splitlines()
    records.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:100])  # cut mid-line, after the run finished
    code, _, err = run_cli(capsys, "ingest", run_dir, "--history", tmp_path / "h.sqlite")
    assert code == 0, err
    listed = history.runs(tmp_path / "h.sqlite")
    assert listed["status"].tolist() == ["incomplete"] and listed["cases"].tolist() == [len(lines) - 1]


def test_what_convbench_wrote_or_might_write_stays_readable(tmp_path, capsys):
    # A run id older versions allowed, a GPU figure written as a float or left null, 0/1 for a
    # flag: none of these can mislead a reader, so none makes the run unreadable.
    run_dir = smoke_run(tmp_path, "r1")
    _edit_json(run_dir / "run.json", lambda m: m.update(run_id="pr#12 2026-11-30T01:00:00+00:00"))
    _edit_first_record(
        run_dir / "records.jsonl",
        lambda r: r.update(run_id="pr#12 2026-11-30T01:00:00+00:00", kernel_launches_per_step=12.0,
                           gpu_power_w_samples=None, channels_last=0, batch_size=32.0),
    )  # fmt: skip
    code, _, err = run_cli(capsys, "report", run_dir)
    assert code == 0, err
    code, _, err = run_cli(capsys, "ingest", run_dir, "--history", tmp_path / "h.sqlite")
    assert code == 0 and history.runs(tmp_path / "h.sqlite")["run_id"].tolist() == ["pr#12 2026-11-30T01:00:00+00:00"]


def test_a_memory_limit_past_any_address_space_caps_nothing():
    """--memory-limit 1e300 GiB made the run stop at its first case with an OverflowError:
    headroom beyond 2**64 bytes is no cap at all."""
    import resource

    from bench.measure.memguard import address_space_limit, headroom_for

    assert headroom_for(1e300) == 2**64 and headroom_for(2.0) == 2 * 2**30
    before = resource.getrlimit(resource.RLIMIT_AS)
    with address_space_limit(headroom_for(1e300)) as cap:
        assert cap == resource.RLIM_INFINITY
    assert resource.getrlimit(resource.RLIMIT_AS) == before
