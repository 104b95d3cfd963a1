"""Reports of a run folder: tables now (figures and HTML can join them here).

Reporting reads what the runner wrote (``bench.store.load_run``) and never measures.
``summary(frame)`` is the one-row-per-case table shown at the end of ``convbench run``;
``write_tables(run_dir)`` writes it as ``summary.csv`` and, with the run's context, as
``summary.md``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.store import Run, load_run, write_atomic
from bench.tables import markdown_table

SUMMARY_CSV = "summary.csv"
SUMMARY_MD = "summary.md"
MIB = 2**20

#: Summary column -> (record field, scale, decimals); scale None keeps the value as it is.
COLUMNS = {
    "model": ("model", None, None),
    "optimizer": ("optimizer", None, None),
    "batch": ("batch_size", None, None),
    "precision": ("precision", None, None),
    "channels_last": ("channels_last", None, None),
    "compile": ("compile", None, None),
    "status": ("status", None, None),
    "step_ms": ("step_time_ms", 1, 2),
    "iqr_ms": ("step_time_iqr_ms", 1, 2),
    "samples_per_s": ("throughput", 1, 1),
    "state_buffers_per_param": ("state_buffers_per_param", 1, 3),
    "state_bytes_per_param": ("state_bytes_per_param", 1, 3),
    "params_mib": ("param_bytes", MIB, 2),
    "state_mib": ("optimizer_state_bytes", MIB, 2),
    "peak_mib": ("peak_memory_bytes", MIB, 1),
    "activation_mib": ("activation_bytes", MIB, 1),
}


def summary(records: pd.DataFrame) -> pd.DataFrame:
    """One row per case: configuration, status, median step time and its IQR, throughput,
    state buffers and bytes per parameter, and memory in MiB (2^20 bytes)."""
    columns = {}
    for name, (source, scale, decimals) in COLUMNS.items():
        values = records[source] if source in records else pd.Series([None] * len(records), dtype=object)
        if scale is not None:
            values = (pd.to_numeric(values) / scale).round(decimals)
        columns[name] = values.reset_index(drop=True)
    return pd.DataFrame(columns)


def failures(records: pd.DataFrame) -> list[str]:
    """``case_id: status: message`` for every case that did not end ``ok``."""
    if records.empty:
        return []
    failed = records[records["status"] != "ok"]
    return [f"{row.case_id}: {row.status}: {row.error}" for row in failed.itertuples()]


def _context(run: Run) -> list[str]:
    manifest, env = run.manifest, run.env
    devices = ", ".join(sorted(run.frame()["device_name"].unique())) if run.records else ""
    return [
        f"# convbench run {run.run_id}",
        "",
        f"- suite: {manifest.get('suite')}; status: {manifest.get('status')} "
        f"({manifest.get('cases_done')} of {manifest.get('cases_total')} cases, {manifest.get('failures')} failed)",
        f"- started {manifest.get('started')}, finished {manifest.get('finished')}",
        f"- device: {devices or 'none recorded'}; host: {env.get('hostname')}",
        f"- torch {env.get('torch')}, CUDA {env.get('cuda')}, cuDNN {env.get('cudnn')}, "
        f"Python {env.get('python')}, commit {env.get('git_commit')}{' (dirty)' if env.get('git_dirty') else ''}",
        "",
        "Median step time over every timed step, its interquartile range, and throughput = batch / median. "
        "Memory in MiB; activation = peak minus the static memory (in use before the first step, "
        "plus gradients and optimizer state).",
        "",
    ]


def write_tables(run_dir: Path | str) -> list[Path]:
    """Write ``summary.csv`` and ``summary.md`` into the run folder; returns their paths."""
    run = load_run(run_dir)
    frame = run.frame()
    table = summary(frame)
    csv_path, md_path = run.path / SUMMARY_CSV, run.path / SUMMARY_MD
    write_atomic(csv_path, table.to_csv(index=False))
    lines = _context(run) + [markdown_table(table)]
    failed = failures(frame)
    if failed:
        lines += ["", "## Cases that did not finish", "", *(f"- {line}" for line in failed)]
    write_atomic(md_path, "\n".join(lines) + "\n")
    return [csv_path, md_path]
