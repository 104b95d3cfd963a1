"""history, ingest, compare, trend and gpus as a user (or a nightly job) runs them."""

import json
import os
import re
import subprocess
import sys

import pandas as pd

from bench.analyse import compare, trend
from bench.cli import main
from bench.storage.history import records as history_records
from bench.storage.store import load_run
from tests.bench.runs import SMOKE, record, samples, smoke_run, write_run

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_ingest_then_history_lists_each_run_once(tmp_path, capsys):
    database = tmp_path / "history.sqlite"
    first = smoke_run(tmp_path, "20261123T010000Z-aaaa", started="2026-11-23T01:00:00+00:00")
    failing = write_run(
        tmp_path, "20261124T010000Z-bbbb", [record("x"), record("x", "resnet20", status="oom")], cases_total=3
    )
    code, out, _ = run_cli(capsys, "ingest", first, failing, "--history", database)
    assert code == 0
    assert out.splitlines() == ["added 20261123T010000Z-aaaa", "added 20261124T010000Z-bbbb"]
    assert run_cli(capsys, "ingest", first, "--history", database)[1] == (
        "skipped 20261123T010000Z-aaaa: already in the history\n"
    )
    code, out, _ = run_cli(capsys, "history", "--history", database)
    lines = out.splitlines()
    assert lines[0].split() == [
        "run_id",
        "started",
        "machine",
        "device",
        "suite",
        "steps",
        "repeats",
        "commit",
        "status",
        "cases",
        "failures",
    ]
    assert len(lines) == 4
    assert lines[2].split()[0] == "20261123T010000Z-aaaa" and lines[2].split()[-2:] == ["4", "0"]
    # each run's timed steps per repeat and repeats, as its records say (tests.bench.runs: 10 and 3)
    code, out, _ = run_cli(capsys, "history", "--history", database, "--format", "json")
    assert [(row["steps"], row["repeats"]) for row in json.loads(out)["rows"]] == [("10", "3"), ("10", "3")]
    assert lines[3].split()[-3:] == ["incomplete", "2", "1"]


def test_compare_exit_status_is_what_a_nightly_job_needs(tmp_path, capsys):
    database = tmp_path / "history.sqlite"
    same = smoke_run(tmp_path, "monday", seed=0, started="2026-11-23T01:00:00+00:00")
    again = smoke_run(tmp_path, "tuesday", seed=1, started="2026-11-24T01:00:00+00:00")
    slower = smoke_run(
        tmp_path, "wednesday", medians={("resnet20", "sgdm"): 47.0}, seed=2, started="2026-11-25T01:00:00+00:00"
    )
    main(["ingest", str(same), str(again), str(slower), "--history", str(database)])
    capsys.readouterr()

    code, out, _ = run_cli(capsys, "compare", "monday", "tuesday", "--history", database)
    assert code == 0 and "time: 4 unchanged; memory: 4 unchanged" in out

    markdown = tmp_path / "verdicts.md"
    code, out, _ = run_cli(capsys, "compare", "previous", "latest", "--history", database)
    assert code == 1
    assert out.splitlines()[0] == "baseline tuesday, candidate wednesday"
    regression = [line for line in out.splitlines()[3:7] if "regression" in line]
    assert len(regression) == 1 and regression[0].startswith("resnet20/sgdm/")
    options = ("--history", database, "--format", "markdown", "--output", markdown)
    code, out, _ = run_cli(capsys, "compare", "previous", "latest", *options)
    assert code == 1 and out == ""
    table = markdown.read_text().splitlines()
    assert table[0] == "baseline tuesday, candidate wednesday"
    assert table[1].startswith("| case | time |") and len(table) == 8

    code, out, _ = run_cli(capsys, "compare", same, slower, "--format", "markdown", "--history", database)
    assert code == 1 and out.splitlines()[1].startswith("| case |")
    assert run_cli(capsys, "compare", same, slower, "--threshold", "25", "--history", database)[0] == 0


def test_compare_refusals_exit_2_naming_the_problem(tmp_path, capsys):
    database = tmp_path / "history.sqlite"
    base = write_run(tmp_path, "base", [record("base")])
    other = write_run(tmp_path, "other", [record("other", steps=50)])
    code, _, err = run_cli(capsys, "compare", base, other, "--history", database)
    assert (
        code == 2 and "cnn/adam/b32/fp32/cl0/eager/synthetic/1x28x28: steps differs (baseline 10, candidate 50)" in err
    )
    code, _, err = run_cli(capsys, "compare", base, "nosuchrun", "--history", database)
    assert code == 2 and "'nosuchrun' is neither a run folder nor a run in the history" in err
    code, _, err = run_cli(capsys, "ingest", tmp_path / "nowhere", "--history", database)
    assert code == 2 and "run.json" in err


def test_a_regression_fails_the_process(tmp_path):
    base = smoke_run(tmp_path, "base", seed=0)
    slower = smoke_run(tmp_path, "slower", medians={("cnn", "adam"): 60.0}, seed=1)
    done = subprocess.run(
        [sys.executable, "-m", "bench", "compare", base, slower, "--history", tmp_path / "h.sqlite"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 1, done.stderr
    assert re.search(r"^cnn/adam/b32/fp32/cl0/eager/synthetic/1x28x28 +regression ", done.stdout, re.MULTILINE)


def test_trend_draws_the_chosen_cases_and_lists_flagged_runs(tmp_path, capsys):
    database = tmp_path / "history.sqlite"
    days = [("mon", {}), ("tue", {}), ("wed", {("cnn", "adam"): 50.0})]
    folders = [
        smoke_run(tmp_path, run_id, medians=medians, seed=day, started=f"2026-11-2{day}T01:00:00+00:00")
        for day, (run_id, medians) in enumerate(days)
    ]
    moved = ["--history", database]
    main(["ingest", *map(str, folders), *map(str, moved)])
    capsys.readouterr()
    stem = tmp_path / "figures" / "trend"
    code, out, _ = run_cli(capsys, "trend", "--models", "cnn", "--optimizers", "adam", "--figure", stem, *moved)
    assert code == 0
    assert out.splitlines()[0].split() == ["run_id", "series", "time", "memory"]
    assert out.splitlines()[2].split() == [
        "wed",
        "cnn/adam/b32/fp32/cl0/eager/synthetic/1x28x28",
        "regression",
        "unchanged",
    ]
    assert "3 runs, 1 case regressions and 0 all-cases regressions flagged" in out
    # Against all the runs before it (mon and tue with wed's baseline being tue: 2 runs, too few
    # for the between-run test), wed is judged on repeats as before; there is no all-cases row.
    code, out, _ = run_cli(capsys, "trend", "--baseline-runs", "3", "--figure", stem, *moved)
    assert code == 0 and "0 all-cases regressions flagged" in out
    assert stem.with_suffix(".png").stat().st_size > 0 and stem.with_suffix(".pdf").stat().st_size > 0
    code, _, err = run_cli(capsys, "trend", "--models", "vgg16", "--figure", stem, *moved)
    assert code == 2 and "no recorded case matches" in err
    # A run of another suite with the same case ids is its own series, not a point on smoke's.
    other = smoke_run(tmp_path, "thu-other", medians={("cnn", "adam"): 50.0}, seed=3, suite="other",
                      started="2026-11-23T01:00:00+00:00")  # fmt: skip
    main(["ingest", str(other), *map(str, moved)])
    capsys.readouterr()
    code, out, _ = run_cli(capsys, "trend", "--models", "cnn", "--optimizers", "adam", "--figure", stem, "--format",
                           "json", *moved)  # fmt: skip
    assert code == 0
    series = {row["run_id"]: row["series"] for row in json.loads(out)["rows"]}
    assert series["wed"] == "cnn/adam/b32/fp32/cl0/eager/synthetic/1x28x28 (smoke)"


def test_gpus_side_by_side_table_figure_and_missing_cases(tmp_path, capsys):
    def gpu_run(run_id, name, models):
        records = [
            record(run_id, model, device="cuda:0", device_name=name, throughput=value)
            for model, value in models.items()
        ]
        return write_run(tmp_path, run_id, records, hostname=run_id)

    a100 = gpu_run("a100-night", "NVIDIA A100", {"cnn": 1000.0, "resnet20": 500.0})
    h100 = gpu_run("h100-night", "NVIDIA H100", {"cnn": 3000.0})
    stem = tmp_path / "gpus"
    code, out, _ = run_cli(
        capsys, "gpus", a100, h100, "--reference", "NVIDIA A100", "--figure", stem, "--history", tmp_path / "h.sqlite"
    )
    assert code == 0
    header, _, *rows = [line.split("  ") for line in out.splitlines()[:5]]
    header = [cell.strip() for cell in header if cell.strip()]
    assert header[1:4] == ["NVIDIA A100 samples/s", "NVIDIA A100 speed-up", "NVIDIA A100 peak MiB"]
    assert header[5] == "NVIDIA H100 speed-up"
    cells = [[cell.strip() for cell in row if cell.strip()] for row in rows[:2]]
    assert cells[0][0].startswith("cnn/") and cells[0][1:] == ["1000.0", "1.0", "600.0", "3000.0", "3.0", "600.0"]
    assert cells[1][0].startswith("resnet20/") and cells[1][1:] == ["500.0", "1.0", "600.0"]
    assert "resnet20/adam/b32/fp32/cl0/eager/synthetic/3x32x32 is missing on NVIDIA H100" in out
    assert stem.with_suffix(".png").exists() and stem.with_suffix(".pdf").exists()
    code, _, err = run_cli(capsys, "gpus", a100, h100, "--reference", "V100", "--figure", stem)
    assert code == 2 and "unknown device 'V100'" in err


def test_history_and_a_run_folder_give_the_same_comparison(tmp_path, capsys):
    database = tmp_path / "history.sqlite"
    base, cand = smoke_run(tmp_path, "base", seed=0), smoke_run(tmp_path, "cand", seed=1)
    main(["ingest", str(base), str(cand), "--history", str(database)])
    capsys.readouterr()
    from_folders = run_cli(capsys, "compare", base, cand, "--history", database)[1]
    from_history = run_cli(capsys, "compare", "base", "cand", "--history", database)[1]
    assert from_folders == from_history
    assert pd.DataFrame(load_run(base).records)["case_id"].nunique() == 4


def test_compare_against_several_baseline_runs_from_the_history(tmp_path, capsys):
    database = tmp_path / "history.sqlite"
    days = ["sunday", "monday", "tuesday"]
    folders = [
        smoke_run(tmp_path, day, seed=i, started=f"2026-11-2{2 + i}T01:00:00+00:00") for i, day in enumerate(days)
    ]
    slower = smoke_run(
        tmp_path, "wednesday", medians={("resnet20", "sgdm"): 47.0}, seed=9, started="2026-11-25T01:00:00+00:00"
    )
    main(["ingest", *map(str, folders), str(slower), "--history", str(database)])
    capsys.readouterr()
    code, out, _ = run_cli(capsys, "compare", "previous", "latest", "--baseline-runs", "3", "--history", database)
    assert code == 1
    assert out.splitlines()[0] == "baseline tuesday and 2 runs before it (sunday, monday), candidate wednesday"
    rows = {line.split()[0].split("/b")[0]: line for line in out.splitlines()[3:7]}
    assert " regression " in rows["resnet20/sgdm"] and "baseline: 3 runs" in rows["resnet20/sgdm"]
    assert all(" unchanged " in rows[case] for case in ("cnn/adam", "cnn/sgdm", "resnet20/adam"))
    # One case +17%, three unchanged: all four together move by about 4%, under the threshold.
    assert out.splitlines()[7].split()[:5] == ["all", "cases", "(geometric", "mean)", "unchanged"]
    assert "; all cases: unchanged (+" in out
    # Asking for more runs than the history holds uses what is there.
    code, out, _ = run_cli(capsys, "compare", "monday", "tuesday", "--baseline-runs", "5", "--history", database)
    assert out.splitlines()[0] == "baseline monday and 1 run before it (sunday), candidate tuesday"
    assert "too few for the between-run test" in out


NIGHTLY_TOML = """[suite]
name = "smoke"
steps = 10
warmup = 3
repeats = 3
tags = ["nightly"]

[[grid]]
models = ["cnn", "resnet20"]
optimizers = ["adam", "sgdm"]
batch_sizes = [32]
"""


NIGHT = dict(suite_toml=NIGHTLY_TOML, tags=("nightly",))


def night(root, run_id: str, day: int, seed: int = 0, **run):
    """A tagged nightly run of the four smoke cases at 01:00 on 2026-11-DAY."""
    return smoke_run(root, run_id, seed=seed, started=f"2026-11-{day}T01:00:00+00:00", **NIGHT, **run)


def five_steps(root, run_id: str, median_ms: float = 40.0):
    """An ad-hoc run of the nightly cases with 5 steps instead of 10, at 10:00 on 2026-11-23."""
    records = [record(run_id, m, o, samples(median_ms, n=15, seed=7), steps=5) for m, o in SMOKE]
    toml = NIGHTLY_TOML.replace("steps = 10", "steps = 5")
    return write_run(root, run_id, records, started="2026-11-23T10:00:00+00:00", suite_toml=toml)


def history_of(tmp_path, capsys, *folders):
    """A history holding ``folders``, ingested as a user would."""
    database = tmp_path / "history.sqlite"
    main(["ingest", *map(str, folders), "--history", str(database)])
    capsys.readouterr()
    return database


def test_ad_hoc_runs_between_two_nights_are_skipped_as_baselines_and_named(tmp_path, capsys):
    """The nightly job's week: a night, two ad-hoc runs of the same suite name with other
    settings (other steps; other models), the next night. ``compare previous latest`` on
    unchanged code must pass, and say which runs it passed over and why."""
    monday, fewer_steps = night(tmp_path, "mon", 23), five_steps(tmp_path, "adhoc-steps")
    other_models = write_run(
        tmp_path,
        "adhoc-mlp",
        [record("adhoc-mlp", "mlp", "adam")],
        started="2026-11-23T11:00:00+00:00",
        suite_toml=NIGHTLY_TOML.replace('["cnn", "resnet20"]', '["mlp"]').replace('["adam", "sgdm"]', '["adam"]'),
    )
    tuesday = night(tmp_path, "tue", 24, seed=1)
    database = history_of(tmp_path, capsys, monday, fewer_steps, other_models, tuesday)

    code, out, err = run_cli(capsys, "compare", "previous", "latest", "--history", database)
    assert code == 0, out + err
    lines = out.splitlines()
    assert lines[0] == "baseline mon, candidate tue"
    assert lines[1] == (
        "note: skipped 2 earlier runs as baselines: adhoc-mlp (measured something else: the grid (cases)), "
        "adhoc-steps (measured something else: steps 5, not 10)"
    )
    assert "time: 4 unchanged; memory: 4 unchanged" in out

    # Five baseline runs asked for, one to be had: said, not hidden.
    code, out, _ = run_cli(capsys, "compare", "previous", "latest", "--baseline-runs", "5", "--history", database)
    assert code == 0
    assert "note: baseline runs: 1 of the 5 asked for (the history holds no more complete runs" in out

    code, out, _ = run_cli(
        capsys, "compare", "previous", "latest", "--history", database, "--format", "json", "--baseline-tag", "nightly"
    )
    document = json.loads(out)
    assert document["baseline"] == "mon"
    assert [(s["run_id"], s["reason"]) for s in document["skipped"]] == [
        ("adhoc-mlp", "not tagged nightly"),
        ("adhoc-steps", "not tagged nightly"),
    ]


def test_a_run_with_the_nightly_settings_but_no_tag_is_kept_out_by_baseline_tag(tmp_path, capsys):
    monday = night(tmp_path, "mon", 23)
    # the same settings, untagged, measured while the machine was busy: 30% slower everywhere
    busy = smoke_run(
        tmp_path,
        "by-hand",
        medians={case: 52.0 for case in SMOKE},
        seed=2,
        started="2026-11-23T12:00:00+00:00",
        suite_toml=NIGHTLY_TOML.replace('tags = ["nightly"]\n', ""),
    )
    database = history_of(tmp_path, capsys, monday, busy, night(tmp_path, "tue", 24, seed=1))
    code, out, _ = run_cli(capsys, "compare", "previous", "latest", "--history", database)
    assert out.splitlines()[0] == "baseline by-hand, candidate tue"  # same content, so a baseline without the tag
    code, out, _ = run_cli(capsys, "compare", "previous", "latest", "--history", database, "--baseline-tag", "nightly")
    assert code == 0
    assert out.splitlines()[:2] == [
        "baseline mon, candidate tue",
        "note: skipped 1 earlier run as baselines: by-hand (not tagged nightly)",
    ]


def test_no_earlier_run_that_measured_the_same_thing_is_bad_input_naming_the_skipped(tmp_path, capsys):
    database = history_of(tmp_path, capsys, five_steps(tmp_path, "adhoc"), night(tmp_path, "night", 24))
    code, _, err = run_cli(capsys, "compare", "previous", "latest", "--history", database)
    assert code == 2
    assert "that measured the same thing; skipped: adhoc (measured something else: steps 5, not 10)" in err


def test_trend_draws_ad_hoc_runs_as_lines_of_their_own_and_never_judges_against_them(tmp_path, capsys):
    # the same cases with 5 steps, 25% slower: joined to the nightly line it would flag tuesday an improvement
    fewer_steps = five_steps(tmp_path, "adhoc-steps", median_ms=50.0)
    database = history_of(tmp_path, capsys, night(tmp_path, "mon", 23), fewer_steps, night(tmp_path, "tue", 24, 1))
    stem = tmp_path / "trend"
    code, out, _ = run_cli(
        capsys, "trend", "--history", database, "--figure", stem, "--format", "json", "--baseline-runs", "3"
    )
    assert code == 0
    document = json.loads(out)
    assert document["rows"] == []  # nothing flagged: tuesday is judged against monday alone
    notes = document["notes"]
    assert any(note.startswith("suite smoke on ") and "1 run measured it otherwise" in note and "adhoc-steps" in note
               for note in notes)  # fmt: skip
    assert "runs judged against fewer baseline runs than the 3 asked for: tue (1)" in notes
    records = history_records(database)
    flagged = compare.flag_history(records)
    lines = trend.series_names(flagged)
    by_run = dict(zip(flagged["run_id"] + " " + flagged["model"] + flagged["optimizer"], lines, strict=True))
    assert by_run["mon cnnadam"] == by_run["tue cnnadam"] != by_run["adhoc-steps cnnadam"]
    assert flagged[flagged["run_id"] == "tue"]["time"].eq("unchanged").all()


def test_gpus_says_when_two_runs_ran_on_the_same_cpu(tmp_path, capsys):
    quiet = write_run(tmp_path, "quiet", [record("quiet", "cnn", throughput=1195.0)])
    busy = write_run(tmp_path, "busy", [record("busy", "cnn", throughput=100.0)])
    code, out, _ = run_cli(capsys, "gpus", busy, quiet, "--figure", tmp_path / "gpus", "--history", tmp_path / "h")
    assert code == 0
    header = [cell.strip() for cell in out.splitlines()[0].split("  ") if cell.strip()]
    assert "AMD EPYC (quiet) speed-up (same device as the reference)" in header
    assert "AMD EPYC (busy) speed-up" in header  # the reference's own column says nothing
    assert (
        "AMD EPYC (quiet) ran on the same device as the reference AMD EPYC (busy) (AMD EPYC on host nightly-box): "
        "its speed-up is one device against itself from run to run, not a difference between devices"
    ) in out


def test_gpus_peak_memory_of_cpu_runs_is_the_tracked_step_peak(tmp_path, capsys):
    runs = [
        write_run(tmp_path, run_id, [record(run_id, "cnn", tracked_peak_bytes=12 * 2**20, device_name=name)])
        for run_id, name in (("xeon", "Intel Xeon"), ("epyc", "AMD EPYC"))
    ]
    code, out, _ = run_cli(capsys, "gpus", *runs, "--figure", tmp_path / "gpus", "--format", "json", "--history",
                           tmp_path / "h")  # fmt: skip
    assert code == 0
    # the records' peak_memory_bytes is the process's resident set, 600 MiB; the step's peak is 12 MiB
    assert [row["peak_memory_bytes"] for row in json.loads(out)["rows"]] == [12 * 2**20, 12 * 2**20]
