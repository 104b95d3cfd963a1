"""Hand-built run folders for the history and compare tests, written through RunWriter.

Step-time samples are drawn from a seeded log-normal (CPU and GPU step times are
right-skewed) around a chosen median, so each test knows the truth it checks against.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.record import Record, case_id
from bench.storage.store import RunFolderError, RunWriter

SMOKE = [("cnn", "adam"), ("cnn", "sgdm"), ("resnet20", "adam"), ("resnet20", "sgdm")]
SHAPES = {"cnn": [1, 28, 28], "resnet20": [3, 32, 32], "mlp": [1, 28, 28]}
PARAMS = {"cnn": 360_778, "resnet20": 272_474, "mlp": 400_906}
BUFFERS = {"adam": 2, "sgdm": 1}


def samples(median_ms: float, n: int = 30, spread: float = 0.03, seed: int = 0) -> list[float]:
    """``n`` step times (ms) with the given median and log-scale spread, seeded."""
    rng = np.random.default_rng(seed)
    return (median_ms * np.exp(rng.normal(0.0, spread, n))).tolist()


def record(
    run_id: str,
    model: str = "cnn",
    optimizer: str = "adam",
    step_samples: list[float] | None = None,
    status: str = "ok",
    **overrides: object,
) -> Record:
    """A realistic Record of one case; ``overrides`` replace any field."""
    config = dict(
        model=model,
        optimizer=optimizer,
        batch_size=32,
        precision="fp32",
        channels_last=False,
        compile=False,
        dataset="synthetic",
        input_shape=SHAPES[model],
    )
    config.update({k: overrides.pop(k) for k in list(overrides) if k in config})
    ok = status == "ok"
    step = samples(40.0) if step_samples is None else step_samples
    median = float(np.median(step)) if ok else None
    params = PARAMS[model]
    fields = dict(
        run_id=run_id,
        case_id=case_id(config),
        timestamp="2026-11-27T00:00:00+00:00",
        suite="smoke",
        steps=10,
        warmup=3,
        repeats=3,
        hyperparameters={"lr": 0.001} if optimizer == "adam" else {"lr": 0.01, "momentum": 0.9},
        device="cpu",
        device_name="AMD EPYC",
        hostname="nightly-box",
        torch_version="2.14.1",
        git_commit="0123456789abcdef0123456789abcdef01234567",
        status=status,
        error=None if ok else "CUDA out of memory",
        params=params,
        step_time_ms=median,
        step_time_samples_ms=step if ok else [],
        throughput=config["batch_size"] / median * 1000 if ok else None,
        param_bytes=4 * params,
        grad_bytes=4 * params,
        optimizer_state_bytes=4 * params * BUFFERS[optimizer],
        peak_memory_bytes=600 * 2**20 if ok else None,
        peak_memory_source="process_rss",
    )
    fields.update(overrides)
    return Record.from_flat({**config, **fields})


def write_run(
    root: Path,
    run_id: str,
    records: list[Record],
    started: str = "2026-11-27T01:00:00+00:00",
    hostname: str = "nightly-box",
    suite: str = "smoke",
    cases_total: int | None = None,
    suite_toml: str | None = None,
    tags: tuple[str, ...] = (),
) -> Path:
    """A finished run folder holding ``records``; returns its path. ``suite_toml``: the suite
    as the run wrote it (default: only its name)."""
    env = {"hostname": hostname, "git_commit": "0123456789abcdef", "gpus": [], "cpu": {"model": "AMD EPYC"}}
    total = len(records) if cases_total is None else cases_total
    toml = f"[suite]\nname = '{suite}'\n" if suite_toml is None else suite_toml
    writer = RunWriter(root, run_id, suite, toml, env, total, tags=tags)
    writer.manifest["started"] = started
    for one in records:
        writer.append(one)
    writer.finish()
    return writer.path


def smoke_run(
    root: Path, run_id: str, medians: dict[tuple[str, str], float] | None = None, seed: int = 0, **run: object
) -> Path:
    """A run of the four smoke cases; ``medians`` sets a case's median step time (ms)."""
    medians = medians or {}
    records = [
        record(
            run_id,
            model,
            optimizer,
            samples(medians.get((model, optimizer), 40.0), seed=seed * 100 + index),
            hostname=str(run.get("hostname", "nightly-box")),
            suite=str(run.get("suite", "smoke")),
        )
        for index, (model, optimizer) in enumerate(SMOKE)
    ]
    return write_run(root, run_id, records, **run)


def claim_run_ids(root: Path, run_ids: list[str], barrier, won) -> None:
    """Start a run folder for each id in turn, in step with another process (``barrier``),
    putting each id this process got on the queue ``won``. Lives here, away from torch, so
    that a spawned process starts in a second."""
    for run_id in run_ids:
        barrier.wait()
        try:
            RunWriter(root, run_id, "smoke", "", {}, 1)
            won.put(run_id)
        except RunFolderError:
            pass
