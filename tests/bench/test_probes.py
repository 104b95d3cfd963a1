"""A hostile user's probes, kept as a table: each damaged input, the command given it, the exit
status and the one-line message it must end in. None may end in a traceback, a hang (a probe
that blocks is failed by an alarm) or a replaced file that was not a regular one.

Commands run in this process (``bench.cli.main``), on hand-built run folders and histories
(tests/bench/runs.py), so the whole table takes seconds.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main
from bench.record import read_flat
from bench.storage.history import ingest
from models.registry import _REGISTRY, ModelSpec
from tests.bench.ondisk import write_mnist
from tests.bench.runs import record, smoke_run, write_run

#: Seconds a probe may take before it counts as a hang.
HANG_S = 60


@dataclass(frozen=True)
class Probe:
    """``setup(tmp_path)`` builds the damaged input and returns the command line; the command
    must exit ``code`` with ``message`` in its standard error, in ``lines`` lines (None: any
    number, for probes that go on to work), and ``check(tmp_path, out)`` must pass after."""

    kind: str
    name: str
    setup: Callable[[Path], list[str]]
    code: int
    message: str = ""
    lines: int | None = 1
    check: Callable[[Path, str], None] | None = None
    needs: tuple[str, ...] = field(default=())
    report: bool = True  # False: a run's report (seconds of figures the probe is not about) is skipped


class Hung(BaseException):
    """A probe ran past HANG_S; a BaseException, so that no ``except Exception`` in convbench
    (a case's failure is recorded and the run goes on) can take it for a result."""


def run_probe(probe: Probe, tmp_path: Path, capsys) -> tuple[int, str, str]:
    argv = [str(a) for a in probe.setup(tmp_path)]

    def hang(signum, frame):
        raise Hung(f"probe {probe.name} hung: {argv}")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(HANG_S)
    try:
        code = main(argv)
    except SystemExit as exit:  # a flag argparse refuses: its one line, exit status 2
        code = exit.code
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    out, err = capsys.readouterr()
    return code, out, err


# --- inputs ---------------------------------------------------------------------------------


_TEMPLATE: list[Path] = []  # the history of three runs, made by the first probe that needs it


def history_of_three(tmp_path: Path) -> Path:
    """A history holding runs r1, r2, r3 of the smoke suite on one machine, oldest first (a
    copy of one made once)."""
    if not _TEMPLATE or not _TEMPLATE[0].exists():
        template = tmp_path / "template" / "h.sqlite"
        for index in (1, 2, 3):
            run_dir = smoke_run(tmp_path / "template", f"r{index}", started=f"2026-11-2{index}T00:00:00+00:00")
            ingest([run_dir], template)
        _TEMPLATE[:] = [template]
    database = tmp_path / "h.sqlite"
    shutil.copyfile(_TEMPLATE[0], database)
    return database


def damaged_history(statement: str, *parameters: object) -> Callable[[Path], Path]:
    """A history of three runs with ``statement`` (and its ``parameters``) applied to its rows."""

    def make(tmp_path: Path) -> Path:
        database = history_of_three(tmp_path)
        with sqlite3.connect(database) as connection:
            connection.execute(statement, parameters)
        return database

    return make


def sqlite_file(version: int, *statements: str) -> Callable[[Path], Path]:
    """An SQLite file (not a convbench history) made by ``statements``, its ``user_version`` set."""

    def make(tmp_path: Path) -> Path:
        database = tmp_path / "h.sqlite"
        with sqlite3.connect(database) as connection:
            for statement in (*statements, f"PRAGMA user_version = {version}"):
                connection.execute(statement)
        return database

    return make


def foreign_database(version: int) -> Callable[[Path], Path]:
    """Another program's SQLite file with a ``runs`` table of its own and ``user_version``."""
    return sqlite_file(
        version, "CREATE TABLE runs (id INTEGER PRIMARY KEY, payload BLOB)", "INSERT INTO runs (payload) VALUES (x'00')"
    )


def run_folder(damage: Callable[[Path], None]) -> Callable[[Path], Path]:
    def make(tmp_path: Path) -> Path:
        run_dir = smoke_run(tmp_path / "runs", "r1")
        damage(run_dir)
        return run_dir

    return make


def edit_first_record(change: Callable[[dict], object]) -> Callable[[Path], None]:
    def damage(run_dir: Path) -> None:
        path = run_dir / "records.jsonl"
        lines = path.read_text().splitlines()
        first = read_flat(json.loads(lines[0]))  # damaged as a flat (schema 1) line
        replaced = change(first)
        path.write_text("\n".join([replaced if isinstance(replaced, str) else json.dumps(first), *lines[1:]]) + "\n")

    return damage


def edit_json(name: str, change: Callable[[dict], None]) -> Callable[[Path], None]:
    def damage(run_dir: Path) -> None:
        data = json.loads((run_dir / name).read_text())
        change(data)
        (run_dir / name).write_text(json.dumps(data))

    return damage


def replaced_by(name: str, kind: str) -> Callable[[Path], None]:
    """``name`` in the run folder replaced by a FIFO or a symbolic link to a copy outside."""

    def damage(run_dir: Path) -> None:
        path = run_dir / name
        if kind == "fifo":
            path.unlink(missing_ok=True)
            os.mkfifo(path)
            return
        outside = run_dir.parent / f"outside-{name}"
        if path.is_dir():
            path.rename(outside)
        elif path.exists():
            path.rename(outside)
        else:
            outside.mkdir()
        path.symlink_to(outside)

    return damage


def tiny_suite(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "suite.toml"
    path.write_text('[suite]\nname = "tiny"\ndevice = "cpu"\nsteps = 1\nwarmup = 1\nrepeats = 2\n' + body)
    return path


GRID = '[[grid]]\nmodels = {models}\noptimizers = ["sgdm"]\nbatch_sizes = [2]\n'


def damaged_mnist(train_images: np.ndarray, train_labels: np.ndarray) -> Callable[[Path], Path]:
    def make(tmp_path: Path) -> Path:
        rng = np.random.default_rng(0)
        test = (rng.integers(0, 256, (4, 28, 28), dtype=np.uint8), rng.integers(0, 10, 4, dtype=np.uint8))
        write_mnist(tmp_path / "data", "MNIST", (train_images, train_labels), test)
        return tmp_path / "data"

    return make


IMAGES = np.random.default_rng(1).integers(0, 256, (8, 28, 28), dtype=np.uint8)
LABELS = np.random.default_rng(2).integers(0, 10, 8, dtype=np.uint8)


def make_fifo(tmp_path: Path) -> Path:
    os.mkfifo(tmp_path / "out")
    return tmp_path / "out"


def make_socket(tmp_path: Path) -> Path:
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "out"))
    return tmp_path / "out"


def make_link(tmp_path: Path) -> Path:
    (tmp_path / "out").symlink_to(tmp_path / "target.json")
    return tmp_path / "out"


def still(kind: Callable[[int], bool]) -> Callable[[Path, str], None]:
    def check(tmp_path: Path, out: str) -> None:
        assert kind(os.lstat(tmp_path / "out").st_mode)

    return check


def link_kept_and_target_written(tmp_path: Path, out: str) -> None:
    assert (tmp_path / "out").is_symlink() and json.loads((tmp_path / "target.json").read_text())


def nothing_outside(tmp_path: Path, out: str) -> None:
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.json") if p.parts[-3] == "export")
    assert len(written) == 2  # r2 and r3; r1's host name is not a folder name
    assert not (tmp_path.parent / "escape").exists() and not (tmp_path / "abs").exists()


def hostname(name: str) -> Callable[[Path], Path]:
    return damaged_history("UPDATE runs SET env = json_set(env, '$.hostname', ?) WHERE run_id = 'r1'", name)


def absolute_hostname(tmp_path: Path) -> Path:
    return hostname(str(tmp_path / "abs"))(tmp_path)


def html_in_run(run_dir: Path) -> None:
    """A suite name and a failed case's error holding HTML, as an ingested run could."""
    edit_json("run.json", lambda m: m.update(suite="<script>alert(1)</script>"))(run_dir)
    edit_first_record(lambda r: r.update(status="error", error='<img src=x onerror="alert(2)">'))(run_dir)


def no_raw_html(tmp_path: Path, out: str) -> None:
    page = (tmp_path / "runs" / "r1" / "report.md").read_text()
    assert "<script" not in page and "<img" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;img src=x onerror" in page
    summary = (tmp_path / "runs" / "r1" / "summary.md").read_text()
    assert "<script" not in summary and "<img" not in summary


def escaped(raw: str) -> Callable[[Path, str], None]:
    def check(tmp_path: Path, out: str) -> None:
        assert raw not in out and raw.encode("unicode_escape").decode() in out

    return check


def one_case_in_history(tmp_path: Path, out: str) -> None:
    with sqlite3.connect(tmp_path / "results" / "history.sqlite") as connection:
        assert connection.execute("SELECT COUNT(*), MIN(cases_done) FROM runs").fetchone() == (1, 1)


def not_created(name: str) -> Callable[[Path, str], None]:
    def check(tmp_path: Path, out: str) -> None:
        assert not (tmp_path / name).exists()

    return check


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


# --- the table ------------------------------------------------------------------------------

H = "--history"
#: A file that says it is a convbench history of version 2 but has other tables.
OTHER_TABLES = sqlite_file(2, "CREATE TABLE runs (run_id TEXT PRIMARY KEY)", "CREATE TABLE cases (run_id TEXT)")
MACHINE = "UPDATE runs SET machine = ? WHERE run_id = 'r1'"
DEVICE = "UPDATE cases SET record = json_set(record, '$.provenance.device_name', ?) WHERE run_id = 'r2'"
EXPORT = ["--format", "pytest-benchmark"]

#: Damaged history rows (run r1 of three), each tried with every reading command below.
HISTORY_DAMAGE = {
    "env stored as a list": ("UPDATE runs SET env = '[1, 2]' WHERE run_id = 'r1'", "env: damaged (expected a JSON"),
    "env.gpus a string": (
        "UPDATE runs SET env = json_set(env, '$.gpus', 'x') WHERE run_id = 'r1'",
        "env: damaged (gpus is 'x')",
    ),
    "manifest not JSON": ("UPDATE runs SET manifest = '{oops' WHERE run_id = 'r1'", "manifest: damaged (Expecting"),
    "manifest naming another run": (
        "UPDATE runs SET manifest = json_set(manifest, '$.run_id', 'r9') WHERE run_id = 'r1'",
        "damaged (its manifest names run 'r9')",
    ),
    "record not JSON": ("UPDATE cases SET record = '{oops' WHERE run_id = 'r1'", "record 1: damaged record (Expecting"),
    "records stored as lists": (
        "UPDATE cases SET record = '[1, 2]' WHERE run_id = 'r1'",
        "record 1: damaged record (expected a JSON object, got a list)",
    ),
    "number stored as text": (
        "UPDATE cases SET record = json_set(record, '$.timing.step_time_ms', '12') WHERE run_id = 'r1'",
        "record 1: damaged record (step_time_ms is '12', expected float or int or null)",
    ),
    "count column as text": ("UPDATE runs SET cases_total = 'many' WHERE run_id = 'r1'", "damaged (cases_total is"),
    "start time not a time": (
        "UPDATE runs SET started = '0 days ago' WHERE run_id = 'r1'",
        "damaged (started is '0 days ago', not an ISO 8601 time)",
    ),
    "record nested deeply": (
        f"UPDATE cases SET record = '{'[' * 100_000}{']' * 100_000}' WHERE run_id = 'r1'",
        "record 1: damaged record (JSON nested too deeply)",
    ),
    "NaN step time": (
        'UPDATE cases SET record = replace(record, \'"step_time_ms": \', \'"step_time_ms": NaN, "x": \')'
        " WHERE run_id = 'r1'",
        "record 1: damaged record (step_time_ms is not finite",
    ),
    "record missing readers' fields": (
        "UPDATE cases SET record = json_object('case_id', case_id, 'status', 'ok') WHERE run_id = 'r1'",
        "record 1: damaged record (run_id is missing)",
    ),
}
#: The reading commands: (argv after the history flag, reads many runs). Those that read many
#: runs leave the damaged one out with a note and exit 0; the others exit 2 naming it. trend
#: (which draws a figure, a second each) is tried on the damages named in TREND_DAMAGE.
READERS = {
    "history": (["history"], True),
    "trend": (["trend", "--figure", "{tmp}/trend"], True),
    "export --all": (["export", "--all", *EXPORT, "--output", "{tmp}/export"], True),
    "compare": (["compare", "r1", "r3"], False),
    "compare previous": (["compare", "previous", "r2"], False),
    "gpus": (["gpus", "r1", "r2", "--figure", "{tmp}/gpus"], False),
    "export": (["export", "r1", *EXPORT], False),
}


TREND_DAMAGE = ("env stored as a list", "manifest not JSON", "record not JSON", "NaN step time")


def history_probes() -> list[Probe]:
    probes = []
    for damage, (statement, message) in HISTORY_DAMAGE.items():
        for reader, (argv, many) in READERS.items():
            if reader == "trend" and damage not in TREND_DAMAGE:
                continue

            def setup(tmp_path: Path, statement=statement, argv=argv) -> list[str]:
                database = damaged_history(statement)(tmp_path)
                return [*(a.format(tmp=tmp_path) for a in argv), H, database]

            if many:
                # history lists the runs table alone: a damaged record is not its to find
                shown = "" if reader == "history" and "record" in message else message
                probes.append(Probe("history rows", f"{damage}: {reader}", setup, 0, shown, lines=None))
            else:
                probes.append(Probe("history rows", f"{damage}: {reader}", setup, 2, f"run r1: {message}"))
    for version in (0, 1, 2):
        for reader, (argv, _) in READERS.items():

            def setup(tmp_path: Path, version=version, argv=argv) -> list[str]:
                database = foreign_database(version)(tmp_path)
                return [*(a.format(tmp=tmp_path) for a in argv), H, database]

            expected = "not a convbench history" if version == 0 else "but its runs table has the columns id, payload"
            probes.append(Probe("foreign database", f"user_version {version}: {reader}", setup, 2, expected))
    return probes


def cli_argv(*argv: object) -> Callable[[Path], list[str]]:
    return lambda tmp_path: [str(a).format(tmp=tmp_path) for a in argv]


def with_history(make: Callable[[Path], Path], *argv: str) -> Callable[[Path], list[str]]:
    return lambda tmp_path: [*(a.format(tmp=tmp_path) for a in argv), H, make(tmp_path)]


def with_run(damage: Callable[[Path], None], *argv: str) -> Callable[[Path], list[str]]:
    def setup(tmp_path: Path) -> list[str]:
        run_dir = run_folder(damage)(tmp_path)
        return [*(a.format(tmp=tmp_path, run=run_dir) for a in argv)]

    return setup


def ingesting(damage: Callable[[Path], None]) -> Callable[[Path], list[str]]:
    return with_run(damage, "ingest", "{run}", H, "{tmp}/h.sqlite")


def run_with_suite(body: str, *flags: str) -> Callable[[Path], list[str]]:
    return lambda tmp_path: ["run", "--suite", tiny_suite(tmp_path, body), "--results", tmp_path / "results", *flags]


def training(make_data: Callable[[Path], Path]) -> Callable[[Path], list[str]]:
    def setup(tmp_path: Path) -> list[str]:
        data = make_data(tmp_path)
        return ["train", "--device", "cpu", "--data-root", data, "--results", tmp_path / "results", "--steps", "1"]

    return setup


def benchmarking_mnist(make_data: Callable[[Path], Path]) -> Callable[[Path], list[str]]:
    def setup(tmp_path: Path) -> list[str]:
        data = make_data(tmp_path)
        suite = tiny_suite(tmp_path, 'dataset = "mnist"\n' + GRID.format(models='["cnn"]'))
        return ["run", "--suite", suite, "--data-root", data, "--results", tmp_path / "results"]

    return setup


def killed_run_then(tmp_path: Path) -> list[str]:
    """A run of the tiny suite whose process died after the first of its two cases, then the next."""
    suite = tiny_suite(tmp_path, GRID.format(models='["ok-net"]').replace('["sgdm"]', '["sgdm", "adam"]'))
    config = dict(batch_size=2, input_shape=[1, 8, 8], precision="fp32", channels_last=False, compile=False)
    done = record("first", "cnn", "sgdm", suite="tiny", **config)
    done.case.model, done.case_id = "ok-net", done.case_id.replace("cnn/", "ok-net/")
    first = write_run(tmp_path / "results", "first", [done], suite="tiny", cases_total=2)
    edit_json("run.json", lambda m: m.update(status="running", pid=dead_pid(), hostname=socket.gethostname()))(first)
    return ["run", "--suite", suite, "--results", tmp_path / "results", "--run-id", "second", "--no-memory-pass"]


def chatty_model(tmp_path: Path) -> list[str]:
    def builder(in_channels: int = 1, num_classes: int = 3):
        import torch

        print("building the chatty model")
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(in_channels * 64, num_classes))

    _REGISTRY["chatty"] = ModelSpec("chatty", builder, (1, 8, 8), 3, "test")
    return ["models", "chatty", "--format", "json"]


def stdout_is_json(tmp_path: Path, out: str) -> None:
    _REGISTRY.pop("chatty", None)
    assert json.loads(out)[0]["model"] == "chatty"


def sysexit_run(tmp_path: Path) -> list[str]:
    suite = tiny_suite(tmp_path, GRID.format(models='["ok-net", "sysexit-net", "print-net"]'))
    return ["run", "--suite", suite, "--results", tmp_path / "results", "--run-id", "r", "--no-memory-pass"]


def every_case_recorded(tmp_path: Path, out: str) -> None:
    records = [json.loads(line) for line in (tmp_path / "results" / "r" / "records.jsonl").read_text().splitlines()]
    assert [r["status"] for r in records] == ["ok", "error", "ok"]
    assert records[1]["error"] == "SystemExit: 7"
    assert json.loads((tmp_path / "results" / "r" / "run.json").read_text())["status"] == "complete"


def reference_without_shape(tmp_path: Path) -> list[str]:
    module = tmp_path / "shapeless_nets.py"
    module.write_text(
        "import torch\n\ndef net(num_classes=10):\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), "
        "torch.nn.Flatten(), torch.nn.Linear(4, num_classes))\n"
    )
    sys.path.insert(0, str(tmp_path))
    return ["memory", "shapeless_nets:net", "--optimizer", "sgdm", "--batch-size", "2", "--device", "cpu"]


def leave_path(tmp_path: Path, out: str) -> None:
    sys.path.remove(str(tmp_path))


def suite_with_rf_reference(tmp_path: Path) -> list[str]:
    suite = tiny_suite(tmp_path, '[rf]\nmodels = ["os:getcwd"]\n')
    return ["run", "--suite", suite, "--results", tmp_path / "results", "--no-model-code"]


DEEP = "[" * 5000 + "]" * 5000
MILLION = "[[grid]]\nmodels = ['cnn']\noptimizers = ['sgdm']\nbatch_sizes = [{sizes}]\nlr = [{lrs}]\n".format(
    sizes=", ".join(str(n) for n in range(1, 1001)), lrs=", ".join(f"0.{n:04d}" for n in range(1, 1001))
)
CNN = GRID.format(models='["cnn"]')

PROBES = [
    # 1. outputs that are not regular files
    Probe("writes", "export --output FIFO nobody reads", with_history(history_of_three, "export", "r1", *EXPORT,
          "--output", "{tmp}/out"), 1, "a FIFO that no process reads", needs=("fifo",)),
    Probe("writes", "history --output socket", with_history(history_of_three, "history", "--output", "{tmp}/out"),
          1, "a socket: convbench writes regular files", needs=("socket",), check=still(stat.S_ISSOCK)),
    Probe("writes", "export --output symlink", with_history(history_of_three, "export", "r1", *EXPORT, "--output",
          "{tmp}/out"), 0, "", lines=0, needs=("link",), check=link_kept_and_target_written),
    Probe("writes", "history --output the history it reads", lambda tmp: [
        "history", H, history_of_three(tmp), "--output", tmp / "h.sqlite"], 2,
        "is the history this command reads", check=lambda tmp, out: sqlite3.connect(tmp / "h.sqlite").execute(
            "SELECT COUNT(*) FROM runs").fetchone() == (3,) or _fail("history lost")),
    Probe("writes", "report through a figures/ link", with_run(replaced_by("figures", "link"), "report", "{run}"),
          2, "figures: a symbolic link in a run folder"),
    Probe("writes", "report over a summary.md link", with_run(replaced_by("summary.md", "link"), "report", "{run}"),
          2, "summary.md: a symbolic link in a run folder"),
    # 3. ingest
    Probe("ingest", "records.jsonl a FIFO", ingesting(replaced_by("records.jsonl", "fifo")), 2,
          "records.jsonl: a FIFO in a run folder"),
    Probe("ingest", "records.jsonl a symlink", ingesting(replaced_by("records.jsonl", "link")), 2,
          "records.jsonl: a symbolic link in a run folder"),
    Probe("ingest", "env.json a symlink", ingesting(replaced_by("env.json", "link")), 2,
          "env.json: a symbolic link in a run folder"),
    Probe("ingest", "run.json a FIFO", ingesting(replaced_by("run.json", "fifo")), 2, "run.json: a FIFO"),
    Probe("ingest", "case id twice", ingesting(lambda d: (d / "records.jsonl").write_text(
        (d / "records.jsonl").read_text().splitlines()[0] + "\n" + (d / "records.jsonl").read_text())),
        2, "appears twice); nothing was added"),
    Probe("ingest", "the same run through a symlinked folder", lambda tmp: [
        "ingest", smoke_run(tmp / "runs", "r1"), _link(tmp / "runs" / "r1", tmp / "alias"), H, tmp / "h.sqlite"],
        0, "", lines=0, check=lambda tmp, out: (out == "added r1\nskipped r1: already in the history\n") or _fail(out)),
    Probe("ingest", "NaN step time", ingesting(edit_first_record(lambda r: r.update(step_time_ms=float("nan")))),
          2, "records.jsonl:1: damaged record (step_time_ms is not finite: nan)"),
    Probe("ingest", "NaN outside the measurements (a figure not worked out) is read", ingesting(edit_first_record(
        lambda r: r.update(mfu=float("nan"), host_time_ms=float("inf"), final_loss=-1.0))), 0, "", lines=0),
    Probe("ingest", "negative step time", ingesting(edit_first_record(lambda r: r.update(step_time_ms=-3.0))),
          2, "damaged record (step_time_ms is negative: -3.0)"),
    Probe("ingest", "a negative step-time sample", ingesting(edit_first_record(
        lambda r: r["step_time_samples_ms"].__setitem__(0, -1.0))), 2, "step_time_samples_ms is negative"),
    Probe("ingest", "an integer of 400 digits", ingesting(edit_first_record(lambda r: r.update(params=10**400))),
          2, "params is out of range: an integer of 401 digits"),
    Probe("ingest", "only case_id and status", ingesting(edit_first_record(
        lambda r: json.dumps({"case_id": r["case_id"], "status": "ok"}))), 2, "damaged record (run_id is missing)"),
    Probe("ingest", "record nested deeply", ingesting(edit_first_record(lambda r: DEEP)), 2,
          "records.jsonl:1: damaged record (JSON nested too deeply)"),
    Probe("ingest", "case id with ESC", ingesting(edit_first_record(lambda r: r.update(case_id="a\x1b[2Jb"))), 2,
          "holds control characters"),
    Probe("ingest", "run.json started 'yesterday'", ingesting(edit_json("run.json", lambda m: m.update(
        started="yesterday"))), 2, "run.json: damaged (started is 'yesterday', not an ISO 8601 time)"),
    Probe("ingest", "pid out of range", ingesting(edit_json("run.json", lambda m: m.update(pid=10**30))), 2,
          "damaged (pid is"),
    Probe("ingest", "env.json gpus a number", ingesting(edit_json("env.json", lambda e: e.update(gpus=3))), 2,
          "env.json: damaged (gpus is 3)"),
    Probe("ingest", "rf.csv not CSV", with_run(lambda d: (d / "rf.csv").write_bytes(b"\xff\x00\x01"), "report",
          "{run}"), 2, "rf.csv: damaged"),
    # 4. suites
    Probe("suites", "deeply nested TOML", run_with_suite(f"x = {DEEP}\n" + CNN), 2,
          "not valid TOML: values nested too deeply to read"),
    Probe("suites", "steps = 99999999999999", run_with_suite(CNN.replace("[[grid]]", "[[grid]]") + "",
          "--steps", "99999999999999"), 2, "steps x repeats (99,999,999,999,999 x 2), the timed steps of a case, is"),
    Probe("suites", "a million-case grid", run_with_suite(MILLION), 2,
          "the number of cases the grid multiplies out to is 1,000,000, more than the limit of 10,000; lower it, "
          "or lift the limits with --no-limits"),
    Probe("suites", "warmup 10**9", run_with_suite(CNN, "--warmup", "1000000000"), 2, "warmup is 1,000,000,000"),
    Probe("suites", "--model-kwargs nested deeply", run_with_suite(CNN, "--model-kwargs", f"width={DEEP}"), 2,
          "the value is nested too deeply to read"),
    Probe("suites", "training seeds = 10**12", lambda tmp: [
        "train", "--device", "cpu", "--seeds", str(10**12), "--results", tmp / "results"], 2,
        "the number of training runs (models x recipes x seeds) is 2,000,000,000,000"),
    # 5. code named by a suite, refused on request
    Probe("model code", "--models os:getcwd --no-model-code", run_with_suite(CNN, "--models", "os:getcwd",
          "--no-model-code"), 2, "runs the code it names, and --no-model-code"),
    Probe("model code", "suite naming os:getcwd, --no-model-code", run_with_suite(GRID.format(
        models='["os:getcwd"]'), "--no-model-code"), 2, "[[grid]] #1.models[0]: model 'os:getcwd'"),
    Probe("model code", "[rf] naming os:getcwd, --no-model-code", suite_with_rf_reference, 2,
          "model 'os:getcwd': a package.module:function reference runs the code"),
    Probe("model code", "rf os:getcwd --no-model-code", cli_argv("rf", "os:getcwd", "--no-model-code"), 2,
          "model 'os:getcwd': a package.module:function reference runs the code it names"),
    # 6. text and names from ingested data
    Probe("text", "export --all, host name '../../escape'", with_history(hostname("../../escape"), "export", "--all",
          *EXPORT, "--output", "{tmp}/export"), 0, "host name '../../escape' is not one folder name", lines=1,
          check=nothing_outside),
    Probe("text", "export --all, an absolute host name", with_history(absolute_hostname, "export", "--all",
          *EXPORT, "--output", "{tmp}/export"), 0, "is not one folder name", lines=1, check=nothing_outside),
    Probe("text", "history, machine name with ESC and BEL", with_history(damaged_history(MACHINE, "box\x1b[31m\x07"),
          "history"), 0, "", lines=0, check=escaped("\x1b[31m\x07")),
    Probe("text", "history as Markdown, machine name with NUL", with_history(damaged_history(MACHINE, "box\x00"),
          "history", "--format", "markdown"), 0, "", lines=0, check=escaped("\x00")),
    Probe("text", "gpus, a device name with ESC", with_history(damaged_history(DEVICE, "GPU\x1b[2J"), "gpus", "r1",
          "r2", "--figure", "{tmp}/gpus"), 0, "", lines=0, check=escaped("\x1b[2J")),
    Probe("text", "report.md, HTML in a suite name and an error", with_run(html_in_run, "report", "{run}"), 0, "",
          lines=None, check=no_raw_html),
    # 7. measurements that would be wrong
    Probe("measurements", "MNIST: 8 images, 6 labels", benchmarking_mnist(damaged_mnist(IMAGES, LABELS[:6])), 2,
          "the training split's files disagree (it holds 8 images but 6 labels)"),
    Probe("measurements", "MNIST: 14 x 14 training images", benchmarking_mnist(damaged_mnist(
        IMAGES[:, :14, :14], LABELS)), 2, "its images are 14 x 14, not 28 x 28"),
    Probe("measurements", "MNIST: a label of 12", benchmarking_mnist(damaged_mnist(IMAGES, LABELS + 12)), 2,
          "a label is outside 0 … 9"),
    Probe("measurements", "train on MNIST of 8 images, 6 labels", training(damaged_mnist(IMAGES, LABELS[:6])), 2,
          "it holds 8 images but 6 labels"),
    Probe("measurements", "compare a NaN step time (folder)", with_run(edit_first_record(
        lambda r: r["step_time_samples_ms"].__setitem__(3, float("nan"))), "compare", "{run}", "{run}"), 2,
        "step_time_samples_ms is not finite"),
    # 8. optim, data parallel, memory, history edges
    Probe("edges", "optim --precision fp32,fp32", lambda tmp: [
        "optim", "--models", "mlp", "--optimizers", "sgdm", "--precision", "fp32,fp32", "--device", "cpu",
        "--steps", "1", "--warmup", "1", "--repeats", "1", "--bandwidth-mib", "1", "--results", tmp / "results"],
        0, "", lines=None, check=one_case_in_history, report=False),
    Probe("edges", "optim --precision ''", cli_argv("optim", "--precision", "", "--results", "{tmp}/r"), 2,
          "--precision: expected at least one name, got none", check=not_created("r")),
    Probe("edges", "optim --models ''", cli_argv("optim", "--models", "", "--results", "{tmp}/r"), 2,
          "--models: expected at least one name", check=not_created("r")),
    Probe("edges", "optim --bandwidth-mib 99999999999999", cli_argv("optim", "--device", "cpu", "--bandwidth-mib",
          "99999999999999", "--results", "{tmp}/r"), 2, "--bandwidth-mib 99999999999999: 3 arrays of",
          check=not_created("r")),
    *(Probe("edges", f"--collective-timeout {value}", run_with_suite(CNN, "--nproc-per-node", "2",
            "--collective-timeout", value), 2, "--collective-timeout") for value in ("nan", "inf", "1e300", "-1")),
    Probe("edges", "--rdzv-endpoint notahost:29500", run_with_suite(CNN, "--nproc-per-node", "2", "--nnodes", "2",
          "--rdzv-endpoint", "notahost:29500"), 2, "--rdzv-endpoint 'notahost:29500': cannot resolve 'notahost'"),
    Probe("edges", "--rdzv-endpoint without a port", run_with_suite(CNN, "--nproc-per-node", "2", "--nnodes", "2",
          "--rdzv-endpoint", "localhost"), 2, "expected HOST:PORT"),
    Probe("edges", "memory of a reference without input_shape", reference_without_shape, 2,
          "does not say its input shape: give --input-size C,H,W", check=leave_path),
    Probe("edges", "memory --input-size of a reference without input_shape", lambda tmp: [
        *reference_without_shape(tmp), "--input-size", "3,16,16"], 0, "", lines=0, check=leave_path),
    Probe("edges", "--peak-tflops inf", run_with_suite(CNN, "--peak-tflops", "inf"), 2,
          "argument --peak-tflops: must be a finite positive number, got inf", check=not_created("results")),
    Probe("edges", "--memory-limit inf", run_with_suite(CNN, "--memory-limit", "inf"), 2,
          "argument --memory-limit: must be a finite number of GiB, got inf", check=not_created("results")),
    Probe("edges", "--results X --history X", lambda tmp: [
        "run", "--suite", tiny_suite(tmp, CNN), "--results", tmp / "X", "--history", tmp / "X"], 2,
        "is the results root", check=not_created("X")),
    Probe("edges", "a history of the right version with other tables", lambda tmp: [
        "run", "--suite", tiny_suite(tmp, CNN), "--results", tmp / "results", H,
        OTHER_TABLES(tmp)], 2, "says it is a convbench history (schema version 2), but its runs",
        check=not_created("results")),
    Probe("edges", "--history a FIFO", lambda tmp: ["history", H, make_fifo(tmp)], 2, "is not a file",
          needs=("fifo",)),
    Probe("edges", "model code printing with --format json", chatty_model, 0, "", lines=None, check=stdout_is_json),
    # 9. a case that calls sys.exit, and a run after one that died
    Probe("faults", "a case raising SystemExit(7)", sysexit_run, 1, "SystemExit: 7", lines=None,
          check=every_case_recorded, report=False),
    Probe("faults", "the run after one whose process died", killed_run_then, 0,
          "the last run of suite 'tiny' here, first, died while measuring ok-net/adam", lines=None, report=False),
]  # fmt: skip


def _link(target: Path, link: Path) -> Path:
    link.symlink_to(target)
    return link


def _fail(out: str) -> None:
    raise AssertionError(out)


def output_probe(probe: Probe) -> Probe:
    """Probes of ``--output`` need the special file there before the command runs."""
    makers = {"fifo": make_fifo, "socket": make_socket, "link": make_link}
    if not probe.needs or probe.kind != "writes":
        return probe
    (make,) = (makers[need] for need in probe.needs)
    original = probe.setup

    def setup(tmp_path: Path) -> list[str]:
        argv = original(tmp_path)
        make(tmp_path)
        return argv

    return dataclasses.replace(probe, setup=setup)


ALL = [output_probe(p) for p in PROBES] + history_probes()


@pytest.mark.parametrize("probe", ALL, ids=[f"{p.kind}: {p.name}" for p in ALL])
def test_probe(probe: Probe, tmp_path, capsys, fault_models, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if not probe.report:
        from bench.reporting import report

        monkeypatch.setattr(report, "write_report", lambda run_dir, parts=None: [])
    code, out, err = run_probe(probe, tmp_path, capsys)
    assert "Traceback" not in err, err
    assert code == probe.code, (code, err)
    # Commands that read many runs print their notes around the table (standard output in
    # text) or on standard error; every other message is the one line on standard error.
    assert probe.message in (err if probe.lines is not None else out + err), (out, err)
    if probe.lines is not None:
        assert len(err.splitlines()) == probe.lines, err
    if probe.check is not None:
        probe.check(tmp_path, out)
