"""The machine and software a measurement was taken on; every run records this."""

from __future__ import annotations

import json
import os
import platform
import re
import socket
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import psutil
import torch
import torchvision

from bench.record import utc_now
from bench.telemetry.gpu import environment_variables, gpu_state

SOURCE_DIR = Path(__file__).resolve().parents[2]  # the checkout: bench/measure/env.py


def _run(command: list[str], cwd: Path | None = None) -> str | None:
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


#: Written into the package when it is built (setup.py): the commit it was built from.
BUILD_INFO = Path(__file__).resolve().parents[1] / "_build.json"


def git_state(directory: Path = SOURCE_DIR) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the git checkout whose top level is ``directory``; (None, None)
    otherwise, e.g. for an installed package inside a virtual environment that happens to
    sit in some other checkout."""
    if _run(["git", "rev-parse", "--show-toplevel"], cwd=directory) != str(directory):
        return None, None
    commit = _run(["git", "rev-parse", "HEAD"], cwd=directory)
    if not commit:
        return None, None
    status = _run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=directory)
    return commit, bool(status)


#: The commit of code that knows neither its build nor its checkout (a copy without .git),
#: as whoever copied it declares it.
COMMIT_VARIABLE = "CONVBENCH_GIT_COMMIT"
_COMMIT = re.compile(r"[0-9a-fA-F]{7,40}")


class CommitVariableError(ValueError):
    """``CONVBENCH_GIT_COMMIT`` holds something that is not a commit."""


def code_state(build_info: Path = BUILD_INFO, directory: Path = SOURCE_DIR) -> dict:
    """The code that runs: ``code_source`` ``installed`` with the commit recorded when the
    package was built (``build_info``), else ``checkout`` with the state of the checkout it
    runs from (``git_state``), else ``declared`` with the commit in ``$CONVBENCH_GIT_COMMIT``
    (for a copy of the code without its .git); ``git_commit`` / ``git_dirty`` None where none
    is known. Raises CommitVariableError if the variable is set but not 7 to 40 hex digits."""
    if build_info.is_file():
        recorded = json.loads(build_info.read_text(encoding="utf-8"))
        return {
            "code_source": "installed",
            "git_commit": recorded.get("git_commit"),
            "git_dirty": recorded.get("git_dirty"),
        }
    commit, dirty = git_state(directory)
    if commit:
        return {"code_source": "checkout", "git_commit": commit, "git_dirty": dirty}
    declared = os.environ.get(COMMIT_VARIABLE, "").strip()
    if declared and not _COMMIT.fullmatch(declared):
        raise CommitVariableError(f"{COMMIT_VARIABLE}={declared[:50]!r} is not a commit: give 7 to 40 hex digits")
    return {"code_source": "declared" if declared else None, "git_commit": declared or None, "git_dirty": None}


def cpu_model() -> str:
    """The CPU's marketing name, from /proc/cpuinfo where there is one."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        match = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.MULTILINE)
        if match:
            return match.group(1).strip()
    return platform.processor() or platform.machine()


@lru_cache(maxsize=1)
def nvidia_driver() -> str | None:
    """The NVIDIA kernel driver version (e.g. '550.54.15'), or None without one."""
    smi = _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    if smi:
        return smi.splitlines()[0].strip()
    proc = Path("/proc/driver/nvidia/version")
    return parse_proc_driver_version(proc.read_text()) if proc.exists() else None


def parse_proc_driver_version(text: str) -> str | None:
    """The version in /proc/driver/nvidia/version ('... Kernel Module  550.54.15 ...')."""
    match = re.search(r"Kernel Module(?: for \S+)?\s+(\d+(?:\.\d+)+)", text)
    return match.group(1) if match else None


def gpus() -> list[dict]:
    """One entry per visible CUDA device: index, name, memory, compute capability, driver."""
    if not torch.cuda.is_available():
        return []
    driver = nvidia_driver()
    found = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        found.append(
            {
                "index": index,
                "name": props.name,
                "memory_bytes": props.total_memory,
                "compute_capability": f"{props.major}.{props.minor}",
                "multiprocessors": props.multi_processor_count,
                "driver": driver,
            }
        )
    return found


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def collect_env() -> dict:
    """Everything needed to interpret a number: software, accelerators, CPU, host, commit."""
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    memory = psutil.virtual_memory()
    return {
        "convbench": _version("convbench"),
        **code_state(),
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cuda_available": torch.cuda.is_available(),
        "cuda": torch.version.cuda,
        "cudnn": cudnn,
        "gpus": gpus(),
        "gpu_telemetry": gpu_state(),
        "environment_variables": environment_variables(),
        "cpu": {
            "model": cpu_model(),
            "physical_cores": psutil.cpu_count(logical=False),
            "logical_cores": psutil.cpu_count(logical=True),
            "torch_threads": torch.get_num_threads(),
            "ram_bytes": memory.total,
        },
    }


def provenance(run_id: str, suite: str, device: torch.device, name: str, env: dict) -> dict:
    """The Record fields every kind of case shares: its run and suite, when it ended, the
    device (``name`` as ``device_name`` gives it) and host it ran on, the torch and commit."""
    return {
        "run_id": run_id,
        "timestamp": utc_now(),
        "suite": suite,
        "device": str(device),
        "device_name": name,
        "hostname": env.get("hostname", ""),
        "torch_version": torch.__version__,
        "git_commit": env.get("git_commit"),
        "threads": torch.get_num_threads(),
    }
