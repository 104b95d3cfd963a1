"""The pytest-benchmark suite runs, and records the machine and the sizes it promises."""

import contextlib
import importlib
import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from bench.kinds.step.runner import RunContext
from bench.kinds.step.suite import Case
from models import registry

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_benchmarks_record_device_and_extra_info(tmp_path):
    report = tmp_path / "benchmarks.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "benchmarks/",
            "-q",
            "-p",
            "no:cacheprovider",
            "-k",
            "(test_optimizer_step and (torch-sgdm-fused or adam-foreach)) or (test_training_step and cnn and sgdm)",
            "--benchmark-min-rounds=1",
            "--benchmark-max-time=0",
            "--benchmark-warmup=off",
            f"--benchmark-json={report}",
            f"--benchmark-storage=file://{tmp_path}/storage",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        # pytest-benchmark turns itself off under xdist; a worker's variables must not reach this pytest.
        env={name: value for name, value in os.environ.items() if not name.startswith("PYTEST_XDIST")},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    saved = json.loads(report.read_text())
    assert saved["machine_info"]["device"] == ("cuda:0" if torch.cuda.is_available() else "cpu")
    assert saved["machine_info"]["device_name"]
    extra = {b["param"]: b["extra_info"] for b in saved["benchmarks"]}
    # ResNet-18 has 11,689,512 parameters (torchvision); Adam keeps 2 fp32 buffers per parameter.
    assert extra["adam-foreach"]["params"] == 11_689_512
    assert extra["adam-foreach"]["optimizer_state_bytes"] == 2 * 4 * 11_689_512
    assert extra["torch-sgdm-fused"]["optimizer_state_bytes"] == 4 * 11_689_512
    assert extra["adam-foreach"]["params_per_s"] > 0
    # The lab CNN has 360,778 parameters; SGDM keeps one fp32 buffer per parameter.
    step = extra["cnn/sgdm/32"]
    assert step["param_bytes"] == step["grad_bytes"] == step["optimizer_state_bytes"] == 4 * 360_778
    assert step["samples_per_s"] > 0


class SettingsRecorder:
    """Stands in for the harness's cuDNN/TF32 context manager and says which is in force."""

    def __init__(self) -> None:
        self.entered: list[tuple[str, torch.device]] = []
        self.in_force: str | None = None
        self.seen_in_forward: list[str | None] = []

    @contextlib.contextmanager
    def __call__(self, precision: str, device: torch.device):
        self.entered.append((precision, device))
        self.in_force = precision
        try:
            yield
        finally:
            self.in_force = None


class Watched(nn.Module):
    def __init__(self, recorder: SettingsRecorder, in_channels: int = 1, num_classes: int = 3) -> None:
        super().__init__()
        self.recorder = recorder
        self.head = nn.Linear(in_channels * 64, num_classes)

    def forward(self, x):
        if not x.is_meta:
            self.recorder.seen_in_forward.append(self.recorder.in_force)
        return self.head(x.flatten(1))


class FakeBenchmark:
    """pytest-benchmark's fixture, calling the timed function twice."""

    def __init__(self) -> None:
        self.extra_info: dict = {}
        self.stats = None

    def __call__(self, function):
        function()
        function()


@pytest.fixture
def reference_loops(monkeypatch):
    """The two reference loops' modules, with the harness's settings replaced by a recorder
    and ``watched-net`` registered (the import registers the ``probe`` model only in a copy
    of the registry)."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    overhead = importlib.import_module("benchmarks.overhead")
    training_step = importlib.import_module("benchmarks.test_training_step")
    recorder = SettingsRecorder()
    for module in (overhead, training_step):
        monkeypatch.setattr(module, "cuda_backend_settings", recorder)

    def builder(in_channels: int = 1, num_classes: int = 3) -> nn.Module:
        return Watched(recorder, in_channels, num_classes)

    registry._REGISTRY["watched-net"] = registry.ModelSpec("watched-net", builder, (1, 8, 8), 3, "test")
    return overhead, training_step, recorder


def test_the_reference_loops_run_under_the_harness_settings(reference_loops, monkeypatch):
    overhead, training_step, recorder = reference_loops
    cpu = torch.device("cpu")
    case = Case("watched-net", "sgdm", 2, "fp32", False, False, "synthetic", (1, 8, 8), 3, 2, 1, 1, False)
    overhead.hand_written_loop(case, cpu)
    overhead.paired_steps(case, RunContext("o", "overhead", cpu), pairs=2)
    monkeypatch.setitem(training_step.PRECISION, ("watched-net", "sgdm", 2), "fp32")
    training_step.test_training_step(FakeBenchmark(), cpu, lambda: None, "watched-net", "sgdm", 2)
    assert recorder.entered == [("fp32", cpu)] * 3
    # hand-written loop 1 + 2 steps; paired 3 x 1 warm-up, 3 x 2 paired; pytest-benchmark 1 + 2
    assert recorder.seen_in_forward == ["fp32"] * (3 + 9 + 3)
