"""One --format/--output convention, JSON that round-trips, exports other tools read, and
no traceback when the reader of standard output goes away."""

import csv
import io
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from bench.cli import main
from bench.storage.store import load_run
from tests.bench.runs import record, smoke_run, write_run

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def two_runs(tmp_path, capsys):
    database = tmp_path / "h.sqlite"
    first = smoke_run(tmp_path, "mon", started="2026-11-23T01:00:00+00:00")
    second = smoke_run(tmp_path, "tue", medians={("cnn", "adam"): 60.0}, seed=1, started="2026-11-24T01:00:00+00:00")
    main(["ingest", str(first), str(second), "--history", str(database)])
    capsys.readouterr()
    return database, first, second


def test_compare_json_round_trips_with_its_verdicts(two_runs, capsys):
    database, first, second = two_runs
    code, out, _ = cli(capsys, "compare", "mon", "tue", "--history", database, "--format", "json")
    assert code == 1
    document = json.loads(out)
    assert (document["baseline"], document["candidate"], document["regression"]) == ("mon", "tue", True)
    verdicts = {row["case"].split("/b")[0]: row["time"] for row in document["rows"]}
    assert verdicts["cnn/adam"] == "regression"
    assert document["summary"].startswith("time: 1 regression")


@pytest.mark.slow
def test_gpus_json_round_trips(tmp_path, capsys):
    runs = [
        write_run(tmp_path, run_id, [record(run_id, "cnn", device="cuda:0", device_name=name, throughput=value)])
        for run_id, name, value in (("a", "NVIDIA A100", 1000.0), ("h", "NVIDIA H100", 2500.0))
    ]
    figure = tmp_path / "gpus"
    code, out, _ = cli(capsys, "gpus", *runs, "--format", "json", "--figure", figure, "--history", tmp_path / "h")
    assert code == 0
    document = json.loads(out)
    speedups = {row["device"]: row["speedup"] for row in document["rows"]}
    assert speedups == {"NVIDIA A100": 1.0, "NVIDIA H100": 2.5}
    assert document["figure"] == [str(figure.with_suffix(".png")), str(figure.with_suffix(".pdf"))]


def test_every_listing_command_speaks_the_same_formats(two_runs, capsys, tmp_path):
    database = two_runs[0]
    code, out, _ = cli(capsys, "history", "--history", database, "--format", "csv")
    assert code == 0 and [row["run_id"] for row in csv.DictReader(io.StringIO(out))] == ["mon", "tue"]
    assert cli(capsys, "optimizers", "--format", "markdown")[1].startswith("| optimizer |")
    target = tmp_path / "models.json"
    code, out, _ = cli(capsys, "models", "cnn", "mlp", "--format", "json", "--output", target)
    assert code == 0 and out == ""
    assert [row["model"] for row in json.loads(target.read_text())] == ["cnn", "mlp"]


def test_pytest_benchmark_export_holds_every_step_and_its_own_compare_reads_it(two_runs, capsys, tmp_path):
    database, first, _ = two_runs
    target = tmp_path / "session.json"
    assert cli(capsys, "export", first, "--format", "pytest-benchmark", "--output", target)[0] == 0
    session = json.loads(target.read_text())
    run = load_run(first).frame().set_index("case_id")
    for bench in session["benchmarks"]:
        steps_s = np.array(run.loc[bench["name"], "step_time_samples_ms"]) / 1e3
        assert bench["stats"]["median"] == pytest.approx(np.median(steps_s))
        assert bench["stats"]["min"] == pytest.approx(steps_s.min())
        assert bench["stats"]["rounds"] == len(steps_s)
    assert sorted(bench["name"] for bench in session["benchmarks"]) == sorted(run.index)
    done = subprocess.run(
        [sys.executable, "-m", "pytest_benchmark", "compare", str(target)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "Failed to load" not in done.stdout + done.stderr
    for name in run.index:
        assert name in done.stdout

    storage = tmp_path / "storage"
    code, out, _ = cli(
        capsys, "export", "--all", "--format", "pytest-benchmark", "--output", storage, "--history", database
    )
    assert code == 0 and len(out.splitlines()) == 2
    listed = subprocess.run(
        [sys.executable, "-m", "pytest_benchmark", "--storage", f"file://{storage}", "list"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert [os.path.basename(line)[:5] for line in listed.stdout.split()] == ["0001_", "0002_"]


def test_github_action_benchmark_export_gives_each_case_its_throughput(two_runs, capsys):
    database, _, second = two_runs
    code, out, _ = cli(capsys, "export", "--history", database, "--format", "github-action-benchmark")
    assert code == 0
    entries = json.loads(out)
    run = load_run(second).frame()
    assert [entry["value"] for entry in entries] == pytest.approx(list(run["throughput"]))
    assert {entry["unit"] for entry in entries} == {"samples/s"}
    assert len({entry["name"] for entry in entries}) == len(entries)
    code, out, _ = cli(capsys, "export", second, "--format", "github-action-benchmark", "--metric", "step_time")
    assert [entry["value"] for entry in json.loads(out)] == pytest.approx(list(run["step_time_ms"]))


def test_a_reader_that_goes_away_gets_no_traceback():
    process = subprocess.Popen(
        [sys.executable, "-m", "bench", "optimizers", "--format", "json"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    process.stdout.close()  # like `| head` that has already exited
    _, err = process.communicate(timeout=120)
    assert b"Traceback" not in err and b"BrokenPipeError" not in err
    assert process.returncode == 141


def test_a_training_to_accuracy_run_exports_nothing_and_says_so(tmp_path, capsys):
    # A training run's records carry accuracy and time to target, no step times.
    trained = record("tr", status="ok", throughput=None, step_time_ms=None, step_time_samples_ms=[])
    run_dir = write_run(tmp_path, "tr", [trained], suite="mnist")
    history = tmp_path / "h.sqlite"
    for form in ("github-action-benchmark", "pytest-benchmark"):
        code, out, err = cli(capsys, "export", run_dir, "--format", form, "--history", history)
        assert code == 0 and "Traceback" not in err
        document = json.loads(out)
        assert (document if form == "github-action-benchmark" else document["benchmarks"]) == []
        assert "run tr has no ok case with" in err


def test_an_output_that_is_a_folder_is_named_in_one_line(two_runs, capsys, tmp_path):
    database, *_ = two_runs
    folder = tmp_path / "out"
    folder.mkdir()
    code, out, err = cli(capsys, "history", "--history", database, "--output", folder)
    # the rename's error named the temporary file beside it (".out.x1y2.tmp") instead
    assert code == 1 and err == f"convbench history: error: [Errno 21] Is a directory: '{folder}'\n"
    assert list(folder.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize("count", [8, 9, 30])
def test_pytest_benchmark_quartiles_follow_the_records_rule(count):
    """The export's IQR is the record's (numpy's linear interpolation, type 7), not
    pytest-benchmark's own quartile rule, for even and odd sample counts."""
    from bench.storage.export import pytest_benchmark

    steps_ms = np.random.default_rng(count).lognormal(np.log(40.0), 0.2, count).tolist()
    frame = pd.DataFrame([record("r", step_samples=steps_ms).to_dict()])
    (bench,) = pytest_benchmark(frame, {"started": "2026-11-27T01:00:00+00:00"}, {})["benchmarks"]
    q1, q3 = np.percentile(np.array(steps_ms) / 1e3, [25, 75])
    assert (bench["stats"]["q1"], bench["stats"]["q3"]) == pytest.approx((q1, q3), rel=1e-12)
    assert bench["stats"]["iqr"] == pytest.approx(q3 - q1, rel=1e-9)
    outside = [s for s in np.array(steps_ms) / 1e3 if s < q1 - 1.5 * (q3 - q1) or s > q3 + 1.5 * (q3 - q1)]
    assert bench["stats"]["iqr_outliers"] == len(outside)
