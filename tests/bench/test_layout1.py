"""Run folders and a history written by the previous layout (flat records, schema 1; history
schema 2) stay readable: read, reported, compared, exported and ingested as before.

The fixtures in tests/fixtures/layout1 were written by convbench before records had blocks:
a training-step run with an [rf] section, an optimizer-step run, a training-to-accuracy run
and a data-parallel run, and a history holding all four. The figures checked here are read
off those files by hand."""

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from bench.cli import main
from bench.record import Record
from bench.storage import history
from bench.storage.store import RECORDS, load_run

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "layout1"
RUNS = ("step", "optim", "parallel", "train")
KINDS = {
    "step": "training-step",
    "optim": "optimizer-step",
    "parallel": "data-parallel",
    "train": "training-to-accuracy",
}


@pytest.fixture
def runs(tmp_path) -> dict[str, Path]:
    """Copies of the four run folders (a report writes into its folder)."""
    found = {}
    for run in RUNS:
        found[run] = tmp_path / f"layout1-{run}"
        shutil.copytree(FIXTURES / f"layout1-{run}", found[run])
    return found


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_each_old_run_folder_reads_with_its_kind_and_its_figures(runs):
    step, optim, parallel, train = (load_run(runs[run]).frame() for run in RUNS)
    assert list(step["kind"]) == ["training-step"] * 2
    assert step.loc[0, "step_time_ms"] == 22.651302999975087 and step.loc[1, "throughput"] == 120.49293176382537
    assert step.loc[0, "tracked_peak_bytes"] == 7150392 and step.loc[0, "load_average_1m"] == 4.140625
    assert list(optim["kind"]) == ["optimizer-step"] * 2
    assert optim.loc[1, "achieved_bandwidth_gbs"] == 29.67320882384321
    # the placeholders older optimizer-step records held for a batch they never had are gone
    assert optim["batch_size"].isna().all() and optim["dataset"].isna().all() and optim["input_shape"].isna().all()
    assert list(parallel["kind"]) == ["data-parallel"] * 2
    assert list(parallel["global_throughput"]) == [27.824430265805265, 98.24611888205546]
    assert list(train["kind"]) == ["training-to-accuracy"]
    assert train.loc[0, "final_test_accuracy"] == 0.10277777777777777 and train.loc[0, "samples_seen"] == 256


@pytest.mark.parametrize("run", RUNS)
def test_each_old_run_folder_is_reported(runs, capsys, run):
    code, _, err = cli(capsys, "report", runs[run])
    assert code == 0, err
    page = (runs[run] / "report.md").read_text()
    first = json.loads((FIXTURES / f"layout1-{run}" / RECORDS).read_text().splitlines()[0])
    assert first["case_id"] in page or first["model"] in page
    if run == "train":  # the training report's own summary, with the recipe
        assert "adam" in (runs[run] / "summary.md").read_text()


@pytest.mark.parametrize("run", RUNS)
def test_an_old_run_compares_with_the_same_run_written_as_schema_2(runs, tmp_path, capsys, run):
    """The old line upgraded and the new line written must read the same: every case
    matched, none new or missing, and the same figures judged the same."""
    again = tmp_path / "again" / runs[run].name
    shutil.copytree(runs[run], again)
    lines = (runs[run] / RECORDS).read_text().splitlines()
    (again / RECORDS).write_text("".join(json.dumps(Record.from_flat(json.loads(x)).to_json()) + "\n" for x in lines))
    assert json.loads((again / RECORDS).read_text().splitlines()[0])["schema"] == 2
    code, out, err = cli(capsys, "compare", runs[run], again, "--format", "json")
    assert code == 0, err
    rows = json.loads(out)["rows"]
    assert len(rows) == len(lines)
    verdicts = {value for row in rows for key, value in row.items() if key in ("time", "memory", "accuracy")}
    assert not verdicts & {"new", "missing", "slower", "faster", "more", "less"}, rows


def test_old_run_folders_export_their_figures(runs, tmp_path, capsys):
    gab = ("--format", "github-action-benchmark")
    code, _, err = cli(capsys, "export", runs["step"], *gab, "--output", tmp_path / "s")
    assert code == 0, err
    values = {entry["name"]: entry["value"] for entry in json.loads((tmp_path / "s").read_text())}
    assert values["cnn/adam/b2/fp32/cl0/eager/synthetic/1x28x28 (Intel(R) Xeon(R) Processor)"] == 88.2951413436216
    code, _, err = cli(capsys, "export", runs["optim"], "--format", "pytest-benchmark", "--output", tmp_path / "o")
    assert code == 0, err
    exported = {entry["name"]: entry for entry in json.loads((tmp_path / "o").read_text())["benchmarks"]}
    assert exported["cnn/adam/optimizer-step/fp32"]["stats"]["median"] == pytest.approx(1.7528675000448857e-3)


def test_old_run_folders_are_ingested_with_their_kinds(runs, tmp_path, capsys):
    code, out, err = cli(capsys, "ingest", *runs.values(), "--history", tmp_path / "h.sqlite")
    assert code == 0, err
    assert out.count("added") == 4
    with sqlite3.connect(tmp_path / "h.sqlite") as connection:
        by_run = dict(connection.execute("SELECT run_id, kind FROM runs"))
        by_case = dict(connection.execute("SELECT case_id, kind FROM cases WHERE run_id = 'layout1-train'"))
    assert by_run == {f"layout1-{run}": kind for run, kind in KINDS.items()}
    assert by_case == {"cnn/adam/b64/fp32/mnist/seed0": "training-to-accuracy"}
    frame = history.records(tmp_path / "h.sqlite", ["layout1-optim"])
    assert list(frame["achieved_bandwidth_gbs"]) == [5.7630049046726715, 29.67320882384321]


def test_the_old_history_is_migrated_with_the_kind_of_every_run_and_case(tmp_path, capsys):
    path = tmp_path / "history.sqlite"
    shutil.copy(FIXTURES / "history.sqlite", path)
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == 2
    frame = history.records(path)  # opening it migrates it
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == history.SCHEMA_VERSION
        by_run = dict(connection.execute("SELECT run_id, kind FROM runs"))
        by_case = dict(connection.execute("SELECT case_id, kind FROM cases WHERE run_id = 'layout1-parallel'"))
    assert by_run == {f"layout1-{run}": kind for run, kind in KINDS.items()}
    assert set(by_case.values()) == {"data-parallel"}
    assert frame.groupby("run_id")["kind"].first().to_dict() == by_run
    code, out, err = cli(capsys, "history", "--history", path, "--format", "json")
    assert code == 0, err
    assert {row["run_id"]: row["cases"] for row in json.loads(out)["rows"]} == {
        "layout1-step": 2,
        "layout1-optim": 2,
        "layout1-parallel": 2,
        "layout1-train": 1,
    }
    code, out, err = cli(capsys, "compare", "layout1-step", "layout1-step", "--history", path, "--format", "json")
    assert code == 0, err
    assert [row["case"] for row in json.loads(out)["rows"]][:2] == [
        "cnn/adam/b2/fp32/cl0/eager/synthetic/1x28x28",
        "cnn/sgdm/b2/fp32/cl0/eager/synthetic/1x28x28",
    ]
