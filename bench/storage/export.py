"""Runs in the JSON that other benchmark tools read, so their dashboards take convbench
results unchanged.

- github-action-benchmark (github.com/benchmark-action/github-action-benchmark), its
  ``customBiggerIsBetter`` / ``customSmallerIsBetter`` input: a list of
  ``{"name", "unit", "value", "range", "extra"}``, one per case. Throughput (samples/s) is
  bigger-is-better, step time (ms) smaller-is-better; ``range`` is half the interquartile
  range of the step-time samples, ``±`` as the tool prints it.
- pytest-benchmark's saved-session JSON (``--benchmark-save``), one benchmark per case, its
  statistics computed by pytest-benchmark's own ``Stats`` from every timed step (seconds), so
  ``pytest-benchmark compare`` and ``--benchmark-compare`` read it like their own files. A
  whole history becomes a pytest-benchmark storage folder: ``<host>/NNNN_<commit>_<time>.json``.
  Its quartiles (``q1``, ``q3``, ``iqr`` and the Tukey fences and outliers built on them) follow
  the record's rule, linear interpolation between closest ranks (numpy's default,
  ``bench.measure.timing.percentile``), not pytest-benchmark's (medians of halves for an even
  count, Wikipedia's method 3 for an odd one): the same samples give the same IQR in the export
  as in the record and the report.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

#: Export formats and, for github-action-benchmark, the ``tool`` input each needs.
GITHUB_TOOLS = {"throughput": "customBiggerIsBetter", "step_time": "customSmallerIsBetter"}
FORMATS = ("github-action-benchmark", "pytest-benchmark")


def _timed(frame: pd.DataFrame, column: str = "step_time_ms") -> pd.DataFrame:
    """The ``ok`` cases of ``frame`` that measured ``column``: a training-to-accuracy run has
    no step times, an optimizer-step run no throughput."""
    if frame.empty or column not in frame:
        return frame.iloc[0:0]
    return frame[(frame["status"] == "ok") & frame[column].notna()]


def _name(row: pd.Series) -> str:
    # Nightly jobs on several machines feed one dashboard: the device keeps their series apart.
    return f"{row['case_id']} ({row['device_name'] or row['device']})"


def github_action_benchmark(frame: pd.DataFrame, metric: str = "throughput") -> list[dict]:
    """One entry per ``ok`` case of ``frame`` (a run's records) that measured ``metric``:
    ``throughput`` (samples/s) or ``step_time`` (median, ms)."""
    entries = []
    for _, row in _timed(frame, "throughput" if metric == "throughput" else "step_time_ms").iterrows():
        iqr_ms = _number(row.get("step_time_iqr_ms"))
        if metric == "throughput":
            # the IQR of step time, carried to samples/s at the median (first-order)
            spread = row["throughput"] * iqr_ms / float(row["step_time_ms"]) / 2 if iqr_ms is not None else None
            value, unit = float(row["throughput"]), "samples/s"
        else:
            spread = iqr_ms / 2 if iqr_ms is not None else None
            value, unit = float(row["step_time_ms"]), "ms"
        entries.append(
            {
                "name": _name(row),
                "unit": unit,
                "value": value,
                **({"range": f"± {spread:.4g}"} if spread is not None else {}),
                "extra": f"run {row['run_id']}; {row['device_name']}; torch {row['torch_version']}; "
                f"commit {row['git_commit']}; {row['repeats']} repeats x {row['steps']} steps",
            }
        )
    return entries


def _stats(samples_ms: Iterable[float]) -> dict:
    """pytest-benchmark's statistics of the samples (ms in, seconds out), quartiles by the
    record's rule (see the module's docstring)."""
    from functools import cached_property

    from pytest_benchmark.stats import Stats

    from bench.measure.timing import percentile

    class RecordQuartiles(Stats):
        @cached_property
        def q1(self) -> float:
            return percentile(self.sorted_data, 0.25)

        @cached_property
        def q3(self) -> float:
            return percentile(self.sorted_data, 0.75)

    stats = RecordQuartiles()
    for sample in samples_ms:
        stats.update(sample / 1e3)
    return {**stats.as_dict(), "iterations": 1}


def pytest_benchmark(frame: pd.DataFrame, manifest: dict, env: dict) -> dict:
    """A pytest-benchmark session of one run: ``frame`` its records, ``manifest`` and ``env``
    its manifest.json and env.json."""
    import pytest_benchmark as pb

    benchmarks = []
    for _, row in _timed(frame).iterrows():
        samples = list(row["step_time_samples_ms"] or [])
        if len(samples) < 1:
            continue
        batch_size = _number(row.get("batch_size"))
        benchmarks.append(
            {
                "group": f"{row['suite']} on {row['device_name'] or row['device']}",
                "name": row["case_id"],
                "fullname": f"convbench::{row['suite']}::{row['case_id']}",
                "params": {
                    "model": row["model"],
                    "optimizer": row["optimizer"],
                    "batch_size": None if batch_size is None else int(batch_size),
                },
                "param": row["case_id"],
                "extra_info": {
                    "throughput_samples_per_s": _number(row.get("throughput")),
                    "device_name": row["device_name"],
                    "peak_memory_bytes": _number(row.get("peak_memory_bytes")),
                    "optimizer_state_bytes": _number(row.get("optimizer_state_bytes")),
                    "mfu": _number(row.get("mfu")),
                },
                "options": {
                    "disable_gc": False,
                    "timer": "cuda events" if str(row["device"]).startswith("cuda") else "time.perf_counter",
                    "min_rounds": int(row["repeats"]) * int(row["steps"]),
                    "max_time": 0,
                    "min_time": 0,
                    "warmup": int(row["warmup"]),
                },
                "stats": _stats(samples),
            }
        )
    cpu = env.get("cpu", {})
    return {
        "machine_info": {
            "node": env.get("hostname", ""),
            "processor": cpu.get("model", ""),
            "python_implementation": "CPython",
            "python_version": env.get("python", ""),
            "system": env.get("platform", ""),
            "cpu": {"brand_raw": cpu.get("model", "")},
            "device": ", ".join(sorted(set(frame["device_name"].dropna()))) if not frame.empty else "",
        },
        "commit_info": {
            "id": env.get("git_commit"),
            "dirty": bool(env.get("git_dirty")),
            "project": "convbench",
        },
        "benchmarks": benchmarks,
        "datetime": manifest.get("started"),
        "version": pb.__version__,
    }


def _number(value: object) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if number != number else number


def storage_path(root: Path, index: int, manifest: dict, env: dict) -> Path:
    """Where pytest-benchmark's file storage keeps run ``index`` (1-based): a folder per
    machine, files ``NNNN_<commit>_<YYYYmmdd_HHMMSS>.json`` that its ``compare NNNN`` finds.
    The machine's folder is its host name from env.json, which came from another machine:
    it must be one folder name as a run id is (``bench.storage.store.check_run_id``), never a
    path out of ``root``; RunFolderError otherwise."""
    from bench.storage.store import RunFolderError, check_run_id

    host = env.get("hostname") or "machine"
    try:
        check_run_id(host)
    except RunFolderError:
        raise RunFolderError(f"host name {host[:40]!r} is not one folder name") from None
    commit = "".join(c for c in (env.get("git_commit") or "unversioned")[:8] if c.isalnum()) or "unversioned"
    started = "".join(c for c in (manifest.get("started") or "")[:19] if c.isdigit() or c == "T").replace("T", "_")
    return root / host / f"{index:04d}_{commit}_{started}.json"


def run_documents(reference: str, history_path: Path | str) -> tuple[pd.DataFrame, dict, dict]:
    """(records, manifest, env) of a run folder, a run id in the history, or ``latest``."""
    from bench.storage import history

    resolved = history.resolve(reference, history_path)
    return resolved.frame, resolved.manifest, resolved.env


def history_storage(history_path: Path | str, root: Path, notes: list[str] | None = None) -> list[Path]:
    """Write every run of the history, oldest first, as a pytest-benchmark storage folder
    under ``root``; returns the files written. A run whose history rows are damaged, or
    whose host name is not a folder name, is left out, and ``notes`` (if given) says so."""
    from bench.storage import history
    from bench.storage.store import RunFolderError, write_atomic

    notes = [] if notes is None else notes
    written = []
    for index, run_id in enumerate(history.runs(history_path, notes)["run_id"], start=1):
        try:
            frame, manifest, env = run_documents(run_id, history_path)
        except history.HistoryError as error:
            notes.append(f"{error}; left out")
            continue
        try:
            path = storage_path(root, index, manifest, env)
        except RunFolderError as error:
            notes.append(f"run {run_id}: {error}; left out")
            continue
        write_atomic(path, json.dumps(pytest_benchmark(frame, manifest, env), indent=2) + "\n")
        written.append(path)
    return written
