"""The pytest-benchmark suite runs, and records the machine and the sizes it promises."""

import json
import os
import subprocess
import sys

import pytest
import torch

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
