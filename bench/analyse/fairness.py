"""Whether two runs' GPUs were set up alike, and whether a GPU is shared, from env.json.

``compare`` calls ``check_runs``: a different enforced power limit or MIG mode changes what
the same code measures, so the comparison is refused (exit status 2); a different driver,
CUDA, cuDNN, torch or default power limit is worth knowing but is what a nightly exists to
notice, so it is noted. A MIG instance's profile is part of its CUDA device name (``...
MIG 1g.10gb``), which compare already requires to match. ``run`` calls ``sharing_warnings``:
other compute processes on the GPU take its time and memory while cases are measured.
"""

from __future__ import annotations

import os

import pandas as pd

from bench.analyse.compare import IncomparableError
from bench.storage import history

#: GPU settings that must agree, and software versions only noted, (key, what) in env.json.
REFUSED = (("power_limit_w", "enforced power limit (W)"), ("mig_mode", "MIG mode"))
NOTED_GPU = (("default_power_limit_w", "default power limit (W)"),)
NOTED_SOFTWARE = (("torch", "torch"), ("cuda", "CUDA"), ("cudnn", "cuDNN"))
ALL_CASES = "all cases"


def cuda_index(frame: pd.DataFrame) -> int | None:
    """The CUDA device index the run's records ran on (the first CUDA one), or None."""
    devices = [d for d in frame.get("device", pd.Series(dtype=object)).dropna() if str(d).startswith("cuda")]
    if not devices:
        return None
    _, _, index = str(devices[0]).partition(":")
    return int(index or 0)


def gpu_of(env: dict, index: int | None) -> dict | None:
    """The env.json telemetry entry of the GPU with CUDA index ``index``, or None."""
    gpus = (env.get("gpu_telemetry") or {}).get("gpus") or []
    return next((gpu for gpu in gpus if index is not None and gpu.get("cuda_index") == index), None)


def _driver(env: dict) -> object:
    return (env.get("gpu_telemetry") or {}).get("driver") or next(
        (gpu.get("driver") for gpu in env.get("gpus") or []), None
    )


def differences(
    baseline_env: dict, candidate_env: dict, baseline_index: int | None, candidate_index: int | None
) -> tuple[list[str], list[tuple[str, str, object, object]]]:
    """(notes, refusals) for two runs' environments: notes are sentences, refusals
    ``(ALL_CASES, what, baseline value, candidate value)`` as IncomparableError takes them.
    Only what both runs recorded is compared."""
    notes, refusals = [], []
    software = [(what, baseline_env.get(key), candidate_env.get(key)) for key, what in NOTED_SOFTWARE]
    software.append(("NVIDIA driver", _driver(baseline_env), _driver(candidate_env)))
    base_gpu, cand_gpu = gpu_of(baseline_env, baseline_index), gpu_of(candidate_env, candidate_index)
    if base_gpu and cand_gpu:
        software += [(what, base_gpu.get(key), cand_gpu.get(key)) for key, what in NOTED_GPU]
        for key, what in REFUSED:
            b, c = base_gpu.get(key), cand_gpu.get(key)
            if b is not None and c is not None and b != c:
                refusals.append((ALL_CASES, what, b, c))
    for what, b, c in software:
        if b is not None and c is not None and b != c:
            notes.append(f"{what} differs: baseline {b}, candidate {c}")
    return notes, refusals


def check_runs(baseline: history.ResolvedRun, candidate: history.ResolvedRun) -> list[str]:
    """The notes on how the two runs' software and GPUs differ (from the env.json each was
    resolved with); raises IncomparableError when their GPUs' enforced power limit or MIG
    mode differ."""
    notes, refusals = differences(baseline.env, candidate.env, cuda_index(baseline.frame), cuda_index(candidate.frame))
    if refusals:
        raise IncomparableError(refusals)
    return notes


def sharing_warnings(env: dict, index: int, own_pid: int | None = None) -> list[str]:
    """A sentence for the GPU with CUDA index ``index`` if compute processes other than this
    one hold it (as env.json recorded them at the start of the run)."""
    own_pid = os.getpid() if own_pid is None else own_pid
    gpu = gpu_of(env, index)
    if gpu is None:
        return []
    others = [p for p in gpu.get("compute_processes") or [] if p.get("pid") != own_pid]
    if not others:
        return []
    used = sum(p.get("used_memory_bytes") or 0 for p in others) / 2**30
    pids = ", ".join(str(p.get("pid")) for p in others)
    return [
        f"GPU {index} ({gpu.get('name')}, {gpu.get('uuid')}) is shared: {len(others)} other compute "
        f"process(es) (pid {pids}) hold {used:.1f} GiB; they take its time and memory while cases are measured"
    ]
