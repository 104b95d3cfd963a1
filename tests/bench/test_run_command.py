"""``convbench run`` end to end: the files it writes, its exit statuses, faults and interruptions."""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
import tomllib

import pandas as pd
import pytest
import torch

from bench.cli import main
from bench.record import read_flat
from bench.storage import history
from bench.storage.store import load_run
from tests.bench.test_data import mnist_like

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TINY = """
[suite]
name = "tiny"
device = "cpu"
steps = 2
warmup = 1
repeats = 2

[[grid]]
models = {models}
optimizers = ["adam", "sgdm"]
batch_sizes = [4]
"""


def tiny_suite(tmp_path, models='["ok-net"]') -> str:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY.format(models=models))
    return str(path)


def run(capsys, *args) -> tuple[int, str, str]:
    code = main(["run", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_run_writes_every_file(tmp_path, capsys, fault_models):
    results = tmp_path / "results"
    code, out, err = run(capsys, "--suite", tiny_suite(tmp_path), "--results", str(results), "--run-id", "t1")
    assert code == 0, err
    folder = results / "t1"
    assert sorted(p.name for p in folder.iterdir()) == [
        "env.json",
        "figures",
        "records.jsonl",
        "report.html",
        "report.md",
        "run.json",
        "suite.toml",
        "summary.csv",
        "summary.md",
        "summary.tex",
    ]
    # No batch sweep and no [rf] section: the figures that apply to such a run, each twice.
    assert sorted(p.name for p in (folder / "figures").iterdir()) == sorted(
        f"{name}.{ext}"
        for name in ("throughput", "memory", "state_bytes", "constant_gradient")
        for ext in ("png", "pdf")
    )
    manifest = json.loads((folder / "run.json").read_text())
    assert (manifest["status"], manifest["cases_done"], manifest["cases_total"]) == ("complete", 2, 2)
    records = [read_flat(json.loads(line)) for line in (folder / "records.jsonl").read_text().splitlines()]
    assert [(r["optimizer"], r["status"], r["run_id"], r["suite"]) for r in records] == [
        ("adam", "ok", "t1", "tiny"),
        ("sgdm", "ok", "t1", "tiny"),
    ]
    assert [r["state_buffers_per_param"] for r in records] == [2, 1]
    # Where the wall time went: each case's steps (warm-up and timed) inside the case, and
    # the run's seconds in steps, the cases' sum, inside its wall time; said at the end.
    for r in records:
        assert sum(r["step_time_samples_ms"]) / 1e3 < r["steps_s"] < r["case_wall_s"]
    assert manifest["steps_s"] == pytest.approx(sum(r["steps_s"] for r in records))
    assert manifest["steps_s"] < manifest["wall_s"]
    assert f"time in steps: {manifest['steps_s']:.1f} s of {manifest['wall_s']:.1f} s" in err
    assert json.loads((folder / "env.json").read_text())["torch"] == torch.__version__
    resolved = tomllib.loads((folder / "suite.toml").read_text())
    assert resolved["suite"]["device"] == "cpu" and resolved["grid"][0]["precision"] == ["fp32"]
    with open(folder / "summary.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["optimizer"], float(row["state (B/param)"])) for row in rows] == [("adam", 8.0), ("sgdm", 4.0)]
    summary = (folder / "summary.md").read_text()
    assert "# convbench run t1" in summary and "| ok-net | adam |" in summary
    # The terminal: the table on stdout, progress and the folder on stderr.
    assert out.splitlines()[0].split()[:3] == ["model", "optimizer", "batch"]
    assert "[2/2]" in err and f"run complete: {folder}" in err
    # ... and the run is in the history next to the run folders, for tomorrow's compare.
    assert history.runs(results / "history.sqlite")["run_id"].tolist() == ["t1"]


def test_flags_override_the_suite(tmp_path, capsys, fault_models):
    args = ["--suite", tiny_suite(tmp_path), "--results", str(tmp_path), "--run-id", "t2"]
    code, _, err = run(
        capsys, *args, "--optimizers", "torch-adam", "--batch-sizes", "2,3", "--steps", "1", "--detailed"
    )
    assert code == 0, err
    records = load_run(tmp_path / "t2").records
    assert [(r["optimizer"], r["batch_size"], r["steps"], r["detailed"]) for r in records] == [
        ("torch-adam", 2, 1, True),
        ("torch-adam", 3, 1, True),
    ]
    assert all(len(r["step_time_samples_ms"]) == 2 and r["forward_ms"] > 0 for r in records)


def test_no_memory_pass_skips_it_and_says_so_in_every_record(tmp_path, capsys, fault_models, monkeypatch):
    from bench.kinds.step import memory_pass

    def must_not_run(*args, **kwargs):
        raise AssertionError("the memory pass ran")

    monkeypatch.setattr(memory_pass, "record_fields", must_not_run)
    args = ["--suite", tiny_suite(tmp_path), "--results", str(tmp_path), "--run-id", "n1", "--no-memory-pass"]
    code, _, err = run(capsys, *args)
    assert code == 0, err
    records = load_run(tmp_path / "n1").records
    assert [r["status"] for r in records] == ["ok", "ok"]
    assert all(r["memory_pass_error"] == "not run (--no-memory-pass)" for r in records)
    assert not any(key.startswith(("tracked_", "predicted_")) and r[key] is not None for r in records for key in r)
    assert (tmp_path / "n1" / "report.html").is_file()


def test_faults_are_recorded_and_the_sweep_goes_on(tmp_path, capsys, fault_models):
    suite = tiny_suite(tmp_path, '["oom-net", "error-net", "nan-net", "ok-net"]')
    code, out, err = run(capsys, "--suite", suite, "--optimizers", "sgdm", "--results", str(tmp_path), "--run-id", "f")
    assert code == 1  # complete, but a case raised an error
    run_ = load_run(tmp_path / "f")
    assert [(r["model"], r["status"]) for r in run_.records] == [
        ("oom-net", "oom"),
        ("error-net", "error"),
        ("nan-net", "diverged"),
        ("ok-net", "ok"),
    ]
    assert (run_.manifest["status"], run_.manifest["failures"]) == ("complete", 3)
    assert "error-net/sgdm/b4/fp32/cl0/eager/synthetic/1x8x8: error: ValueError: boom" in err
    assert "Cases that did not finish" in (tmp_path / "f" / "summary.md").read_text()


def test_oom_and_divergence_alone_are_results_not_failures(tmp_path, capsys, fault_models):
    suite = tiny_suite(tmp_path, '["oom-net", "nan-net"]')
    code, _, _ = run(capsys, "--suite", suite, "--results", str(tmp_path), "--run-id", "o")
    assert code == 0
    assert load_run(tmp_path / "o").manifest["status"] == "complete"


@pytest.mark.parametrize("fault,code", [("interrupt", 130), ("sigterm", 143)])
def test_an_interruption_keeps_what_was_measured(tmp_path, capsys, fault_models, fault, code):
    suite = tiny_suite(tmp_path, f'["ok-net", "{fault}-net", "cnn"]')
    assert run(capsys, "--suite", suite, "--results", str(tmp_path), "--run-id", "i")[0] == code
    run_ = load_run(tmp_path / "i")
    assert [(r["model"], r["optimizer"]) for r in run_.records] == [("ok-net", "adam"), ("ok-net", "sgdm")]
    assert (run_.manifest["status"], run_.manifest["cases_done"], run_.manifest["cases_total"]) == ("incomplete", 2, 6)
    assert (tmp_path / "i" / "summary.md").exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is put back
    # The report names each case that did not run, not only how many.
    page = (tmp_path / "i" / "report.html").read_text()
    for model, optimizer in [(f"{fault}-net", "adam"), (f"{fault}-net", "sgdm"), ("cnn", "adam"), ("cnn", "sgdm")]:
        shape = "1x8x8" if model != "cnn" else "1x28x28"
        assert f"<td>{model}/{optimizer}/b4/fp32/cl0/eager/synthetic/{shape}</td><td>not run</td>" in page


def test_real_datasets_from_the_data_root(tmp_path, capsys, fault_models):
    mnist_like(tmp_path / "data", "MNIST")
    args = ["--suite", tiny_suite(tmp_path, '["cnn"]'), "--optimizers", "sgdm", "--results", str(tmp_path)]
    code, _, err = run(capsys, *args, "--dataset", "mnist", "--data-root", str(tmp_path / "data"), "--run-id", "m")
    assert code == 0, err
    (record,) = load_run(tmp_path / "m").records
    assert (record["dataset"], record["input_shape"], record["status"]) == ("mnist", [1, 28, 28], "ok")


@pytest.mark.parametrize(
    "args,message",
    [
        (["--models", "resnet19"], "unknown model 'resnet19'; valid models: resnet20"),
        (["--optimizers", "adamw"], "unknown optimizer 'adamw'; valid optimizers: adam"),
        (["--batch-sizes", "0"], "--batch-sizes[0]: expected a positive integer"),
        (["--precision", "tf32", "--device", "cpu"], "needs a CUDA device"),
        (["--dataset", "cifar10", "--data-root", "/nonexistent"], "/nonexistent/cifar-10-batches-py"),
    ],
)
def test_bad_input_exits_2_before_any_work(tmp_path, capsys, args, message):
    code, _, err = run(capsys, "--suite", "smoke", "--results", str(tmp_path / "results"), *args)
    assert code == 2 and message in err, err
    assert not (tmp_path / "results").exists()


def test_a_bad_suite_file_exits_2_naming_file_and_key(tmp_path, capsys):
    path = tmp_path / "typo.toml"
    path.write_text(TINY.format(models='["cnn"]').replace("steps", "stpes"))
    code, _, err = run(capsys, "--suite", str(path), "--results", str(tmp_path / "results"))
    assert code == 2 and f"{path}: [suite].stpes: unknown key" in err
    path.write_bytes(b"\x00\xff\xfe")
    code, _, err = run(capsys, "--suite", str(path), "--results", str(tmp_path / "results"))
    assert code == 2 and f"{path}: cannot be read as TOML text" in err and len(err.splitlines()) == 1


def test_an_existing_run_is_not_overwritten(tmp_path, capsys, fault_models):
    args = ["--suite", tiny_suite(tmp_path), "--results", str(tmp_path), "--run-id", "same", "--steps", "1"]
    assert run(capsys, *args)[0] == 0
    code, _, err = run(capsys, *args)
    assert code == 2 and "already exists" in err


FIGURES = ["throughput", "memory", "predicted_peak", "state_bytes", "batch_scaling", "constant_gradient"]
RF_FIGURES = ["receptive_field", "receptive_field_maps"]


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="without arguments, a CUDA machine runs nightly")
def test_without_a_suite_the_cpu_runs_smoke_end_to_end(tmp_path, capsys):
    """The main job as a user runs it (shortened): smoke with its [rf] section, every file
    of the run folder, the theory's buffers, the history, and compare on two real runs."""
    short = ["--steps", "2", "--warmup", "1", "--repeats", "2", "--results", str(tmp_path)]
    code, _, err = run(capsys, *short, "--run-id", "first")
    assert code == 0, err
    folder = tmp_path / "first"
    run_ = load_run(folder)
    assert run_.manifest["suite"] == "smoke" and run_.manifest["status"] == "complete"
    buffers = {(r["model"], r["optimizer"], r["batch_size"]): r["state_buffers_per_param"] for r in run_.records}
    assert buffers == {
        (m, o, b): {"adam": 2, "sgdm": 1}[o] for m in ("cnn", "resnet20") for o in ("adam", "sgdm") for b in (16, 32)
    }
    files = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    expected = {"run.json", "env.json", "suite.toml", "records.jsonl", "rf.csv", "rf_maps.npz"}
    expected |= {"summary.csv", "summary.md", "summary.tex", "report.html", "report.md"}
    expected |= {f"figures/{name}.{ext}" for name in FIGURES + RF_FIGURES for ext in ("png", "pdf")}
    assert files == expected
    rf = pd.read_csv(folder / "rf.csv")
    assert set(rf["model"]) == {"cnn", "resnet20"} and rf["match"].all()
    assert "<h2 id=receptive-fields>" in (folder / "report.html").read_text()

    code, _, err = run(capsys, *short, "--models", "cnn", "--run-id", "second")
    assert code == 0, err
    assert history.runs(tmp_path / "history.sqlite")["run_id"].tolist() == ["first", "second"]
    # The second run measured something else (other cases): it has no previous run ...
    assert main(["compare", "previous", "latest", "--history", str(tmp_path / "history.sqlite")]) == 2
    assert "skipped: first (measured something else: the grid (cases))" in capsys.readouterr().err
    # ... but named, two real runs compare through the history: resnet20's cases are missing from the second.
    assert main(["compare", "first", "latest", "--history", str(tmp_path / "history.sqlite")]) in (0, 1)
    out = capsys.readouterr().out
    assert "baseline first, candidate second" in out
    assert len(re.findall(r"^resnet20/\S+ +missing", out, re.MULTILINE)) == 4


@pytest.mark.slow
def test_ctrl_c_on_a_real_process_marks_the_run_incomplete(tmp_path):
    suite = tmp_path / "long.toml"
    # Six cases of about a second each at least (an MLP step takes a millisecond or more).
    suite.write_text(TINY.format(models='["mlp"]').replace("steps = 2", "steps = 300").replace("[4]", "[4, 5, 6]"))
    command = [sys.executable, "-m", "bench", "run", "--suite", str(suite), "--results", str(tmp_path), "--run-id", "c"]
    # Python turns SIGINT into KeyboardInterrupt only if it is not ignored at start-up, and a job
    # started in the background (nohup, `&` in a script) inherits it ignored: undo that, as a
    # terminal would.
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    records = tmp_path / "c" / "records.jsonl"
    deadline = time.monotonic() + 240
    while not (records.exists() and records.read_text().count("\n") >= 1) and time.monotonic() < deadline:
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    run_ = load_run(tmp_path / "c")
    assert run_.manifest["status"] == "incomplete" and 1 <= len(run_.records) < 6
    assert "run incomplete" in err


@pytest.fixture
def torch_threads(monkeypatch):
    """Give back torch's thread count and OMP_NUM_THREADS after a test that sets them."""
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", str(torch.get_num_threads())))
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_threads_and_tags_are_set_recorded_and_kept(tmp_path, capsys, fault_models, torch_threads):
    args = ["--suite", tiny_suite(tmp_path), "--results", str(tmp_path), "--run-id", "q1", "--no-memory-pass"]
    code, _, err = run(capsys, *args, "--threads", "1", "--tag", "nightly", "--tag", "cpu-box")
    assert code == 0, err
    folder = load_run(tmp_path / "q1")
    assert [r["threads"] for r in folder.records] == [1, 1]  # torch.get_num_threads() while each case ran
    assert os.environ["OMP_NUM_THREADS"] == "1"  # what --isolate's and torchrun's processes start with
    assert folder.manifest["tags"] == ["nightly", "cpu-box"]
    written = tomllib.loads(folder.suite_toml)["suite"]
    assert (written["threads"], written["tags"]) == (1, ["nightly", "cpu-box"])
    assert history.runs(tmp_path / "history.sqlite")["run_id"].tolist() == ["q1"]


def test_bad_threads_or_tag_exit_2_before_any_work(tmp_path, capsys, fault_models):
    with pytest.raises(SystemExit) as stopped:
        main(["run", "--suite", tiny_suite(tmp_path), "--results", str(tmp_path / "results"), "--threads", "0"])
    assert stopped.value.code == 2 and "--threads: must be a positive integer, got 0" in capsys.readouterr().err
    code, _, err = run(capsys, "--suite", tiny_suite(tmp_path), "--results", str(tmp_path / "results"), "--tag", "a b")
    assert code == 2 and "--tags[0]: 'a b' is not a tag: 1 to 100 letters, digits" in err
    assert not (tmp_path / "results").exists()
