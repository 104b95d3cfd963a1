"""The command line as one application layer: every measuring command gets the same
destinations and load watching from the run session; reading commands start without torch;
the Python API returns data and prints no tables."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import bench
from bench.cli import build_parser, main
from bench.commands import COMMANDS
from bench.storage.store import load_run
from tests.bench.test_train import _write_tiny_mnist

ROOT = Path(__file__).resolve().parents[2]

TRAIN_SUITE = """
[train]
dataset = "mnist"
target_accuracy = 0.5
steps = 2
batch_size = 8
seeds = [0]

[[recipe]]
name = "sgdm"
optimizer = "sgdm"
lr = 0.01
momentum = 0.9

[[grid]]
models = ["cnn"]
recipes = ["sgdm"]
"""


def cli(capsys, *args: object) -> tuple[int, str, str]:
    code = main([str(arg) for arg in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_every_command_module_gives_what_the_dispatcher_needs():
    parser = build_parser()
    assert list(parser.commands) == list(COMMANDS)
    for name in COMMANDS:
        assert parser.commands[name].get_default("handler").__module__ == f"bench.commands.{name}"


def test_building_the_parser_and_reading_the_history_import_neither_torch_nor_the_measuring_code(tmp_path):
    """``--help`` and ``history`` answer without loading torch (the slow part of a start)."""
    from bench.storage import history

    history.check_destinations(tmp_path, tmp_path / "h.sqlite")  # an empty history
    probe = (
        "import sys; from bench.cli import main; "
        f"code = main(['history', '--history', {str(tmp_path / 'h.sqlite')!r}]); "
        "print(sorted(m for m in ('torch', 'torchvision', 'bench.kinds.step.runner') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip().splitlines()[-1] == "[]", done.stdout + done.stderr
    done = subprocess.run(
        [sys.executable, "-c", "import sys; import bench.cli as c; c.build_parser(); print('torch' in sys.modules)"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.stdout.strip() == "False", done.stderr


def test_train_files_its_run_under_the_machine_given_and_records_each_cases_load(tmp_path, capsys):
    """train takes --machine as run and optim do, and its records carry the load fields
    that compare reads (before, only `convbench run` filled them)."""
    _write_tiny_mnist(tmp_path / "data", count=40, test=16)
    suite = tmp_path / "t.toml"
    suite.write_text(TRAIN_SUITE)
    code, _, err = cli(
        capsys, "train", "--suite", suite, "--data-root", tmp_path / "data", "--device", "cpu",
        "--results", tmp_path / "r", "--run-id", "t1", "--machine", "bench-box-7",
    )  # fmt: skip
    assert code == 0, err
    run = load_run(tmp_path / "r" / "t1")
    assert run.manifest["machine"] == "bench-box-7"
    (record,) = run.records
    assert record["load_average_1m"] >= 0 and 0 <= record["other_cpu_fraction"] <= 1


def test_optim_records_each_cases_load(tmp_path, capsys):
    flags = ["--models", "cnn", "--optimizers", "sgdm", "--device", "cpu", "--steps", "1", "--warmup", "1"]
    flags += ["--repeats", "1", "--bandwidth-mib", "1", "--results", tmp_path, "--run-id", "o"]
    code, _, err = cli(capsys, "optim", *flags)
    assert code == 0, err
    (record,) = load_run(tmp_path / "o").records
    assert record["load_average_1m"] >= 0 and 0 <= record["other_cpu_fraction"] <= 1


def test_run_suite_returns_the_records_and_prints_no_table(tmp_path, capsys):
    frame = bench.run_suite(
        "smoke", results=tmp_path, run_id="api", models=["cnn"], optimizers=["sgdm"], batch_sizes=[2],
        steps=1, warmup=1, repeats=1, no_memory_pass=True, device="cpu",
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert frame["case_id"].tolist() == ["cnn/sgdm/b2/fp32/synthetic"] or len(frame) == 1
    assert out == ""  # a library call leaves standard output to its caller
    assert "run complete" in err


def test_memory_prints_json_with_its_fields(capsys):
    code, out, err = cli(capsys, "memory", "cnn", "--optimizer", "adam", "--batch-size", "4", "--format", "json")
    assert code == 0, err
    document = json.loads(out)
    rows = {row[""]: row["bytes"] for row in document["rows"]}
    # Adam keeps two buffers per parameter: its state is twice the fp32 parameters' bytes.
    assert rows["optimizer state"] == 2 * rows["parameters"]
    assert document["batch_size"] == 4 and document["phase"] in ("forward", "backward", "optimizer")


def test_rf_takes_the_whole_input_shape_for_a_model_that_does_not_say_its_own(tmp_path, capsys, monkeypatch):
    module = tmp_path / "mymodels.py"
    module.write_text(
        "import torch.nn as nn\n"
        "def two_convs(num_classes=10):\n"
        "    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    code, _, err = cli(capsys, "rf", "mymodels:two_convs", "--input-size", "2")
    assert code == 2 and "give --input-size C,H,W" in err
    code, out, err = cli(capsys, "rf", "mymodels:two_convs", "--input-size", "2,16,16", "--erf-samples", "0")
    assert code == 0, err
    # Two 3x3 convolutions, the second of stride 2 after one of stride 1: 3 + (3 - 1) * 1 = 5.
    assert "5" in out.splitlines()[-1]


@pytest.mark.parametrize("command", ["run", "optim", "train"])
def test_the_measuring_commands_share_their_destination_flags(command):
    parser = build_parser().commands[command]
    flags = {option for action in parser._actions for option in action.option_strings}
    assert {"--results", "--history", "--run-id", "--machine"} <= flags


def test_the_suites_rf_section_follows_models_and_is_skipped_with_no_rf(tmp_path, capsys):
    """With --models the smoke suite's [rf] (cnn and resnet20) analyses the models given,
    and says so; --no-rf skips it."""
    import pandas as pd

    flags = ["--models", "cnn", "--optimizers", "sgdm", "--batch-sizes", "2", "--steps", "1", "--warmup", "1"]
    flags += ["--repeats", "1", "--no-memory-pass", "--device", "cpu", "--results", tmp_path]
    code, _, err = cli(capsys, "run", *flags, "--run-id", "with-rf")
    assert code == 0, err
    assert "[rf] section analyses the models given: cnn" in err
    assert set(pd.read_csv(tmp_path / "with-rf" / "rf.csv")["model"]) == {"cnn"}
    assert load_run(tmp_path / "with-rf").manifest["sections"] == {"rf": "ok"}
    code, _, err = cli(capsys, "run", *flags, "--run-id", "no-rf", "--no-rf")
    assert code == 0, err
    assert "[rf] section is skipped (--no-rf)" in err
    assert not (tmp_path / "no-rf" / "rf.csv").exists()
    assert "[rf]" not in (tmp_path / "no-rf" / "suite.toml").read_text()


def test_a_model_module_that_cannot_be_imported_points_at_pythonpath(capsys):
    code, _, err = cli(capsys, "memory", "my_own_models:net", "--optimizer", "adam", "--batch-size", "1")
    assert code == 2
    assert "cannot import module 'my_own_models'" in err and "PYTHONPATH" in err
