"""A run's edges: stop signals in every phase, hard kills, clashing run ids, machines, baselines.

Signals here are real (``os.kill`` of this process, or of a real ``python -m bench`` child);
what stands in for a slow phase is a wrapper that sends the signal as the phase begins.
"""

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import pytest

from bench.cli import main
from bench.reporting.report import run_status
from bench.storage import history
from bench.storage.history import HistoryError, ingest, resolve
from bench.storage.store import RunWriter, effective_status, load_run
from tests.bench.runs import claim_run_ids, record, smoke_run, write_run
from tests.bench.test_run_command import ROOT, TINY, tiny_suite


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """``main(args)``; a KeyboardInterrupt escaping it is the fault under test, not the end of pytest."""
    try:
        code = main([str(a) for a in args])
    except KeyboardInterrupt:
        pytest.fail("KeyboardInterrupt escaped convbench")
    out, err = capsys.readouterr()
    return code, out, err


def signalling(function, *signums):
    """``function`` that first sends this process each of ``signums``, as if they arrived the
    moment the phase began."""

    def wrapper(*args, **kwargs):
        for signum in signums:
            os.kill(os.getpid(), signum)
        return function(*args, **kwargs)

    return wrapper


# --- stop signals after the last case -------------------------------------------------------


def test_ctrl_c_twice_while_the_history_is_written_still_writes_it(tmp_path, capsys, fault_models, monkeypatch):
    monkeypatch.setattr(history, "record_run", signalling(history.record_run, signal.SIGINT, signal.SIGINT))
    args = ["--suite", tiny_suite(tmp_path), "--optimizers", "sgdm", "--results", tmp_path, "--run-id", "h"]
    code, _, err = run_cli(capsys, "run", *args)
    assert code == 130, err
    assert load_run(tmp_path / "h").manifest["status"] == "complete"  # every case was measured
    assert history.runs(tmp_path / "history.sqlite")["run_id"].tolist() == ["h"]
    assert "stopped before the report; `convbench report" in err and "Traceback" not in err
    assert not (tmp_path / "h" / "report.html").exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_sigterm_while_the_report_is_written_stops_it_and_keeps_the_history(
    tmp_path, capsys, fault_models, monkeypatch
):
    from bench.reporting import report

    monkeypatch.setattr(report, "write_report", signalling(report.write_report, signal.SIGTERM))
    args = ["--suite", tiny_suite(tmp_path), "--optimizers", "sgdm", "--results", tmp_path, "--run-id", "r"]
    code, _, err = run_cli(capsys, "run", *args)
    assert code == 143, err
    assert "the report was interrupted; `convbench report" in err
    assert history.runs(tmp_path / "history.sqlite")["status"].tolist() == ["complete"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_sigterm_during_the_rf_section_leaves_the_run_incomplete_and_says_so(
    tmp_path, capsys, fault_models, monkeypatch
):
    from bench.receptive import section

    monkeypatch.setattr(section, "run_rf_section", signalling(section.run_rf_section, signal.SIGTERM))
    suite = tmp_path / "rf.toml"
    suite.write_text(TINY.format(models='["ok-net"]') + '\n[rf]\nmodels = ["cnn"]\nerf_samples = 0\n')
    code, _, err = run_cli(
        capsys, "run", "--suite", suite, "--optimizers", "sgdm", "--results", tmp_path, "--run-id", "f"
    )
    assert code == 143, err
    run = load_run(tmp_path / "f")
    assert (run.manifest["status"], run.manifest["sections"], run.manifest["stopped_by"]) == (
        "incomplete",
        {"rf": "not run"},
        "SIGTERM",
    )
    assert not (tmp_path / "f" / "rf.csv").exists()
    assert "receptive fields ([rf]) were not measured" in run_status(run)
    assert "receptive fields ([rf]) were not measured" in (tmp_path / "f" / "report.html").read_text()
    assert history.runs(tmp_path / "history.sqlite")["status"].tolist() == ["incomplete"]


# --- hard kills -------------------------------------------------------------------------------


def test_a_run_whose_process_is_gone_reads_as_killed(tmp_path):
    run_dir = write_run(tmp_path, "k", [record("k")], cases_total=2)
    manifest_path = run_dir / "run.json"
    manifest = json.loads(manifest_path.read_text())
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    from bench.storage.store import _process_start

    started = _process_start(child.pid)
    manifest.update(status="running", pid=child.pid, process_started=started)
    manifest_path.write_text(json.dumps(manifest))
    assert load_run(run_dir).manifest["status"] == "running"
    child.kill()
    child.wait()
    assert load_run(run_dir).manifest["status"] == "killed"
    # A live process that merely reuses the pid is not the run's.
    assert effective_status({**manifest, "pid": os.getpid()}) == "killed"


@pytest.mark.slow
def test_sigkill_mid_run_is_read_as_killed_everywhere(tmp_path, capsys):
    suite = tmp_path / "long.toml"
    suite.write_text(TINY.format(models='["mlp"]').replace("steps = 2", "steps = 100000"))
    command = [sys.executable, "-m", "bench", "run", "--suite", suite, "--results", tmp_path, "--run-id", "k"]
    process = subprocess.Popen([str(c) for c in command], cwd=ROOT, stderr=subprocess.DEVNULL)
    manifest = tmp_path / "k" / "run.json"
    deadline = time.monotonic() + 120
    while not manifest.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)  # into the first case
    process.kill()
    assert process.wait(timeout=30) == -signal.SIGKILL
    assert json.loads(manifest.read_text())["status"] == "running"  # what the dead process left
    run = load_run(tmp_path / "k")
    assert run.manifest["status"] == "killed" and run.records == []
    assert "the run was killed" in run_status(run)
    database = tmp_path / "elsewhere.sqlite"
    assert ingest([tmp_path / "k"], database) == [("k", True)]
    assert history.runs(database)["status"].tolist() == ["killed"]


def test_ingest_refuses_a_run_that_is_still_running(tmp_path):
    writer = RunWriter(tmp_path, "live", "smoke", "", {"hostname": "h"}, 2)
    writer.append(record("live"))
    with pytest.raises(HistoryError, match="run live is still running"):
        ingest([writer.path], tmp_path / "history.sqlite")
    assert not (tmp_path / "history.sqlite").exists()


# --- run ids and run folders ------------------------------------------------------------------


@pytest.mark.parametrize("run_id", ["../x", "/abs/path", ".", "-x", "x" * 300, ""])
def test_a_run_id_that_is_not_one_folder_name_exits_2_before_any_work(tmp_path, capsys, run_id):
    results = tmp_path / "results"
    code, _, err = run_cli(capsys, "run", "--suite", "smoke", "--results", results, f"--run-id={run_id}")
    assert code == 2 and "is not valid: use 1 to 100 letters, digits" in err, err
    assert len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_two_processes_starting_one_run_id_at_once_get_one_folder(tmp_path):
    context = multiprocessing.get_context("spawn")
    barrier, won = context.Barrier(2), context.Queue()
    run_ids = [f"race-{i}" for i in range(30)]
    workers = [context.Process(target=claim_run_ids, args=(tmp_path, run_ids, barrier, won)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [worker.exitcode for worker in workers] == [0, 0]
    time.sleep(0.2)  # the queue's feeder threads flush before their process ends; let the pipe drain
    winners = []
    while not won.empty():
        winners.append(won.get(timeout=5))
    assert sorted(winners) == sorted(run_ids)  # each id won exactly once
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(run_ids)


def test_a_results_root_that_is_a_file_exits_2_before_any_work(tmp_path, capsys):
    results = tmp_path / "results"
    results.write_text("not a folder")
    code, _, err = run_cli(capsys, "run", "--suite", "smoke", "--results", results, "--history", tmp_path / "h.sqlite")
    assert code == 2 and f"results root {results} is not a folder" in err, err
    assert len(err.splitlines()) == 1
    # With the history in its default place inside the results root, the root is still named.
    for command in (["run", "--suite", "smoke"], ["optim"]):
        code, _, err = run_cli(capsys, *command, "--device", "cpu", "--results", results)
        assert code == 2 and err == f"convbench {command[0]}: error: results root {results} is not a folder\n", err


# --- machines and baselines -------------------------------------------------------------------


def test_two_runs_on_different_hosts_with_one_machine_name_compare(tmp_path, capsys, fault_models, monkeypatch):
    import socket

    args = ["--suite", tiny_suite(tmp_path), "--optimizers", "sgdm", "--results", tmp_path, "--machine", "rack3-gpu1"]
    for night in ("pod-a1b2", "pod-c3d4"):
        monkeypatch.setattr(socket, "gethostname", lambda night=night: night)
        code, _, err = run_cli(capsys, "run", *args, "--run-id", night)
        assert code == 0, err
        assert load_run(tmp_path / night).env["hostname"] == night
    code, out, err = run_cli(capsys, "compare", "previous", "latest", "--history", tmp_path / "history.sqlite")
    assert code in (0, 1), err
    assert out.splitlines()[0] == "baseline pod-a1b2, candidate pod-c3d4"
    assert history.runs(tmp_path / "history.sqlite")["machine"].tolist() == ["rack3-gpu1"] * 2


def test_the_machine_defaults_to_the_environment_variable_then_the_device(monkeypatch):
    import torch

    from bench.measure.machine import MachineNameError, machine_identity

    env = {"cpu": {"model": "AMD EPYC 7B13"}}
    monkeypatch.delenv("CONVBENCH_MACHINE", raising=False)
    assert machine_identity(torch.device("cpu"), env) == "CPU AMD EPYC 7B13"

    class Properties:
        uuid = "5f3a9c1e-0000-1111-2222-333344445555"

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: Properties())
    assert machine_identity(torch.device("cuda", 0), env) == "GPU-5f3a9c1e-0000-1111-2222-333344445555"
    monkeypatch.setenv("CONVBENCH_MACHINE", "box-7")
    assert machine_identity(torch.device("cuda", 0), env) == "box-7"
    assert machine_identity(torch.device("cuda", 0), env, "given") == "given"
    with pytest.raises(MachineNameError, match="--machine ' ' is blank"):
        machine_identity(torch.device("cpu"), env, " ")
    with pytest.raises(MachineNameError, match="printable characters"):  # a newline splits the tables
        machine_identity(torch.device("cpu"), env, "rack\nbox")
    assert machine_identity(torch.device("cpu"), env, "gpu-box-7\n") == "gpu-box-7"  # a file's last newline


def _nights(tmp_path, statuses):
    """One smoke run per night; an ``incomplete`` night has two of its four cases."""
    database = tmp_path / "history.sqlite"
    for day, status in enumerate(statuses, start=1):
        run_id = f"night{day}"
        started = f"2026-11-{10 + day}T01:00:00+00:00"
        if status == "complete":
            smoke_run(tmp_path, run_id, started=started)
        else:
            write_run(tmp_path, run_id, [record(run_id), record(run_id, "resnet20")], started=started, cases_total=4)
        ingest([tmp_path / run_id], database)
    return database


def test_previous_and_several_run_baselines_skip_broken_runs(tmp_path):
    database = _nights(tmp_path, ["complete", "complete", "incomplete", "complete"])
    latest = resolve("latest", database)
    previous = resolve("previous", database, after=latest)
    assert (previous.run_id, previous.note) == ("night2", None)
    assert [run.run_id for run in history.earlier_runs(previous, 5, database)] == ["night1"]
    asked = resolve("previous", database, after=latest, include_incomplete=True)
    assert asked.run_id == "night3" and asked.describe() == "night3 (incomplete, 2 of 4 cases)"


def test_compare_says_when_it_falls_back_to_a_broken_run(tmp_path, capsys):
    database = _nights(tmp_path, ["incomplete", "complete"])
    code, out, err = run_cli(capsys, "compare", "previous", "latest", "--history", database)
    lines = out.splitlines()
    assert lines[0] == "baseline night1 (incomplete, 2 of 4 cases), candidate night2"
    assert lines[1] == (
        "note: no complete run of suite 'smoke' on 'nightly-box' before night2: falling back to night1, "
        "which is incomplete"
    )
    with pytest.raises(HistoryError, match="no run of suite 'smoke' on 'nightly-box' before night1"):
        resolve("previous", database, after=resolve("night1", database))


def test_trend_judges_each_run_against_the_complete_run_before_it(tmp_path):
    from bench.analyse.compare import flag_history

    database = _nights(tmp_path, ["complete", "incomplete", "complete"])
    flagged = flag_history(history.records(database))
    night3 = flagged[flagged["run_id"] == "night3"]
    assert len(night3) == 4 and set(night3["time"]) == {"unchanged"}  # against night1, not night2's half
