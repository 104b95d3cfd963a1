"""The command line: ``main(argv)`` in process, and ``python -m bench`` as a user runs it."""

import json
import os
import subprocess
import sys
from importlib import metadata

import psutil
import pytest
import torch

import models
import optimizers
from bench.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["run", "--bogus", "x"], "convbench run: error: unrecognized arguments: --bogus x (see convbench run --help)"),
        (["optim", "--steps", "abc"], "convbench optim: error: argument --steps: expected an integer, got 'abc'"),
        (["run", "--peak-tflops", "x"], "convbench run: error: argument --peak-tflops: expected a number, got 'x'"),
        (["models", "--zz"], "convbench models: error: unrecognized arguments: --zz (see convbench models --help)"),
        # a negative threshold called identical runs a regression; nan and inf judged nothing
        (["compare", "a", "b", "--memory-threshold", "-1"], "convbench compare: error: argument --memory-threshold:"),
        (["trend", "--threshold", "nan"], "convbench trend: error: argument --threshold: must be zero or more"),
        (["compare", "a", "b", "--threshold", "inf"], "convbench compare: error: argument --threshold: must be a"),
    ],
)
def test_a_bad_flag_is_one_line_naming_the_command_it_was_given_to(capsys, argv, line):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and err.splitlines() == [err.strip()] and err.startswith(line)


def test_python_dash_m_bench_answers_help():
    done = subprocess.run([sys.executable, "-m", "bench", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0
    for command in ("models", "optimizers", "env"):
        assert command in done.stdout


def test_models_table_shows_every_model_with_its_parameters(capsys):
    code, out, _ = run_cli(capsys, "models", "--format", "json")
    assert code == 0
    rows = {row["model"]: row for row in json.loads(out)}
    assert list(rows) == models.available()
    assert rows["resnet18"]["params"] == 11_689_512
    assert rows["resnet50"]["params"] == 25_557_032
    assert rows["cnn"]["input (C, H, W)"] == "1x28x28"
    table = run_cli(capsys, "models", "resnet20", "cnn")[1].splitlines()
    assert [line.split()[0] for line in table[2:]] == ["resnet20", "cnn"]


def test_optimizers_table(capsys):
    rows = json.loads(run_cli(capsys, "optimizers", "--format", "json")[1])
    assert {row["optimizer"]: row["state buffers / param"] for row in rows} == {
        name: 2 if optimizers.spec(name).algorithm == "adam" else 1 for name in optimizers.available()
    }


@pytest.mark.parametrize("command,kind", [("models", "model"), ("optimizers", "optimizer")])
def test_unknown_names_exit_2_and_list_the_valid_ones(capsys, command, kind):
    code, _, err = run_cli(capsys, command, "nonesuch")
    assert code == 2
    assert f"unknown {kind} 'nonesuch'" in err
    valid = models.available() if kind == "model" else optimizers.available()
    assert all(name in err for name in valid)


def test_unknown_name_exit_status_from_a_real_process():
    done = subprocess.run(
        [sys.executable, "-m", "bench", "models", "resnet19"], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 2 and "resnet20" in done.stderr


def test_env_describes_this_machine(capsys):
    code, out, _ = run_cli(capsys, "env")
    assert code == 0
    env = json.loads(out)
    assert env["torch"] == torch.__version__
    assert env["python"] == ".".join(map(str, sys.version_info[:3]))
    assert env["cpu"]["logical_cores"] == os.cpu_count()
    assert env["cpu"]["ram_bytes"] == psutil.virtual_memory().total
    assert env["cuda_available"] == torch.cuda.is_available()
    assert len(env["gpus"]) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    if head.returncode == 0:
        assert env["git_commit"] == head.stdout.strip()
        assert isinstance(env["git_dirty"], bool)


def test_console_script_is_declared():
    scripts = [s for s in metadata.entry_points(group="console_scripts") if s.name == "convbench"]
    assert scripts, "convbench is not installed"
    assert scripts[0].value == "bench.cli:main"


def test_ctrl_c_while_a_run_starts_up_is_one_line_and_status_130(tmp_path, capsys, monkeypatch):
    from bench.measure import setup

    def interrupted(name):
        raise KeyboardInterrupt

    monkeypatch.setattr(setup, "resolve_device", interrupted)
    assert main(["run", "--device", "cpu", "--models", "cnn", "--results", str(tmp_path)]) == 130
    assert capsys.readouterr().err == "convbench run: interrupted\n"
    assert not any(tmp_path.iterdir())
