"""pytest-benchmark set-up: the device every benchmark runs on, and the machine it is.

The benchmarks run on the first CUDA device where there is one, else on the CPU. The
GPU's name, driver and CUDA version go into pytest-benchmark's ``machine_info`` (saved with
every result, and warned about when compared results differ in them), and the default
storage folder gets one sub-folder per device, so ``--benchmark-compare`` on an H100 never
picks up a result saved on an A100 or on a CPU.
"""

from __future__ import annotations

import re

import pytest
import torch

from bench.measure.env import cpu_model, nvidia_driver

DEFAULT_STORAGE = "file://./.benchmarks"


def bench_device() -> torch.device:
    return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()


def pytest_configure(config: pytest.Config) -> None:
    # Runs before pytest-benchmark's own (trylast) configure, which opens the storage.
    if getattr(config.option, "benchmark_storage", None) == DEFAULT_STORAGE:
        device = bench_device()
        slug = re.sub(r"[^A-Za-z0-9.]+", "-", f"{device.type}-{device_name(device)}").strip("-")
        config.option.benchmark_storage = f"{DEFAULT_STORAGE}/{slug}"


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    device = bench_device()
    machine_info["device"] = str(device)
    machine_info["device_name"] = device_name(device)
    machine_info["gpu_driver"] = nvidia_driver() if device.type == "cuda" else None
    machine_info["cuda"] = torch.version.cuda if device.type == "cuda" else None
    machine_info["cudnn"] = torch.backends.cudnn.version() if device.type == "cuda" else None
    machine_info["torch"] = torch.__version__
    machine_info["torch_threads"] = torch.get_num_threads()


@pytest.fixture(scope="session")
def device() -> torch.device:
    return bench_device()


@pytest.fixture(scope="session")
def synchronize(device: torch.device):
    """Called at the end of every timed function: on a GPU the host clock must not stop
    before the queued kernels have finished."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None
