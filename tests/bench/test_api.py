"""The Python API as the README shows it: its examples run as written."""

import os
import re

import pytest
import torch

import bench
import models
from bench.checks import SuiteError
from models.registry import _REGISTRY

README = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "README.md")


def readme_python(after_heading: str) -> str:
    """The first ```python block of the README after ``after_heading``."""
    text = open(README, encoding="utf-8").read()
    start = text.index(after_heading)
    return re.search(r"```python\n(.*?)```", text[start:], re.S).group(1)


@pytest.mark.slow
def test_the_readme_example_runs_and_compares_from_python(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(readme_python("### From Python"), namespace)
    before, after, verdicts = namespace["before"], namespace["after"], namespace["verdicts"]
    assert list(before["status"]) == list(after["status"]) == ["ok", "ok"]
    assert list(before["case_id"]) == [
        "cnn/adam/b8/fp32/cl0/eager/synthetic/1x28x28",
        "cnn/sgdm/b8/fp32/cl0/eager/synthetic/1x28x28",
    ]
    assert sorted(verdicts["case"]) == sorted(before["case_id"])
    assert set(verdicts["time"]) <= {"unchanged", "regression", "improvement"}
    assert (tmp_path / "results" / "example" / "history.sqlite").is_file()


def test_run_suite_refuses_unknown_flags_and_bad_models_before_any_work(tmp_path):
    with pytest.raises(TypeError, match="unknown flag 'batch_size'; valid: .*batch_sizes"):
        bench.run_suite("smoke", results=tmp_path, batch_size=[2])
    with pytest.raises(SuiteError, match="--models\\[0\\]: unknown model 'resnet9'"):
        bench.run_suite("smoke", results=tmp_path, models=["resnet9"])
    assert not any(tmp_path.iterdir())


def test_the_readme_registration_example_registers_a_model():
    try:
        exec(readme_python("Registering a model under a short name"), {})
        assert models.build("tiny")(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
        assert models.spec("tiny").family == "mine"
    finally:
        _REGISTRY.pop("tiny", None)
