"""The report of a training run: its tables and figures, in the same pages as a benchmark run's.

``write_training_report(run)`` reads the run folder (records.jsonl and curves.jsonl; it
never trains) and writes summary.csv / .md / .tex (one row per model and recipe, with
medians and ranges over seeds), ``curves.csv`` and the figures of ``FIGURES``, then
report.html and report.md through ``bench.reporting.report``'s page writers.

Time to target over seeds: a seed that never reached the target counts as infinitely slow,
so the median is "not reached" (empty) when half or more of the seeds missed it, and the
range's upper end is "not reached" when any seed did; ``reached`` says how many did.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

import models
from bench.kinds.training import figures as train_figures
from bench.kinds.training.compare import time_spread
from bench.kinds.training.curves import CURVES
from bench.reporting.report import (
    FIGURES_DIR,
    FigureSpec,
    Sections,
    failures_frame,
    html_report,
    markdown_report,
    read_damageable,
    run_status,
    write_figures,
)
from bench.reporting.tables import format_number, latex_table, markdown_table, markdown_text
from bench.storage.store import Run, write_atomic

GROUP_FIELDS = ["model", "recipe", "optimizer", "batch_size", "dataset", "target_accuracy"]


def curves_frame(run: Run) -> pd.DataFrame:
    """curves.jsonl of the run (empty if it has none yet)."""
    frame = read_damageable(
        run.path / CURVES,
        lambda path: pd.DataFrame([json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]),
    )
    return pd.DataFrame() if frame is None else frame


def _spread(values: pd.Series) -> tuple[float | None, float | None, float | None]:
    numbers = pd.to_numeric(values, errors="coerce").dropna()
    if numbers.empty:
        return None, None, None
    return float(numbers.median()), float(numbers.min()), float(numbers.max())


def summary_frame(records: pd.DataFrame) -> pd.DataFrame:
    """One row per model and recipe: seeds, how many reached the target, final test
    accuracy (median, min, max, in %), time to target (median, min, max, s), epochs to
    target (median over the seeds that reached it), and per training run the median
    training time, evaluation time, epoch time and input-pipeline epoch time (s)."""
    rows = []
    for key, runs in records.groupby(GROUP_FIELDS, sort=False, dropna=False):
        group = dict(zip(GROUP_FIELDS, key, strict=True))
        ok = runs[runs["status"] == "ok"]
        accuracy = _spread(ok["final_test_accuracy"] * 100)
        time = time_spread(ok["time_to_target_s"])
        epochs_trained = pd.to_numeric(ok["epochs_trained"], errors="coerce")
        rows.append(
            {
                "model": group["model"],
                "recipe": group["recipe"],
                "target (%)": group["target_accuracy"] * 100,
                "seeds": len(runs),
                "failed": int((runs["status"] != "ok").sum()),
                "reached": int(ok["time_to_target_s"].notna().sum()),
                "final acc. median (%)": accuracy[0],
                "final acc. min (%)": accuracy[1],
                "final acc. max (%)": accuracy[2],
                "time to target median (s)": time[0],
                "time to target min (s)": time[1],
                "time to target max (s)": time[2],
                "epochs to target median": _spread(ok["epochs_to_target"])[0],
                "training time median (s)": _spread(ok["train_time_s"])[0],
                "eval time median (s)": _spread(ok["eval_time_s"])[0],
                "epoch time median (s)": _spread(ok["train_time_s"] / epochs_trained)[0],
                "input epoch median (s)": _spread(ok["input_epoch_s"])[0],
            }
        )
    return pd.DataFrame(rows)


def _families(curves: pd.DataFrame) -> dict[str, str]:
    return {name: models.spec(name).family for name in curves["model"].unique() if name in models.available()}


def _curves_or_none(run: Run) -> pd.DataFrame | None:
    curves = curves_frame(run)
    return curves if not curves.empty else None


def _degradation(run: Run) -> pd.DataFrame | None:
    curves = curves_frame(run)
    return None if curves.empty else train_figures.degradation_frame(curves, _families(curves))


def _records_with_target(run: Run) -> pd.DataFrame | None:
    records = run.frame()
    return records[records["status"] == "ok"] if run.records and (records["status"] == "ok").any() else None


FIGURES = [
    FigureSpec(
        "accuracy",
        "Test accuracy against epochs and training time",
        "Test accuracy at each evaluation: the line is the median over seeds, the band runs from the "
        "lowest to the highest seed. Training time excludes the evaluations.",
        train_figures.accuracy_figure,
        _curves_or_none,
    ),
    FigureSpec(
        "degradation",
        "Plain against residual networks",
        "Training error (solid, on the augmented batches since the previous evaluation) and test error "
        "(dashed) of plain nets and ResNets at each depth, median over seeds (He et al. 2016, figure 4).",
        train_figures.degradation_figure,
        _degradation,
    ),
    FigureSpec(
        "time_to_target",
        "Time to target accuracy",
        "Training time until the first evaluation at or above the target test accuracy, one dot per seed, "
        "the bar at the median; × marks seeds that never reached it within the budget.",
        train_figures.time_to_target_figure,
        _records_with_target,
    ),
]


def _context(run: Run) -> list[str]:
    manifest, env = run.manifest, run.env
    context = [
        f"# convbench training run {run.run_id}",
        "",
        f"- suite: {manifest.get('suite')}; status: {manifest.get('status')} "
        f"({len(run.records)} of {manifest.get('cases_total')} training runs, {manifest.get('failures')} failed)",
        f"- started {manifest.get('started')}, finished {manifest.get('finished')}; host: {env.get('hostname')}",
        f"- torch {env.get('torch')}, CUDA {env.get('cuda')}, Python {env.get('python')}, "
        f"commit {env.get('git_commit')}",
    ]
    return [
        *map(markdown_text, context),
        "",
        "Medians and ranges over seeds. Time to target: training time (evaluations excluded) at the first "
        "evaluation whose test accuracy reached the target; a seed that never did counts as infinitely slow.",
        "",
    ]


def write_training_report(run: Run) -> list[Path]:
    """Write the training run's tables, curves.csv, figures and both pages; returns the files."""
    records, curves = run.frame(), curves_frame(run)
    summary = summary_frame(records) if run.records else pd.DataFrame()
    written = []
    for name, text in (
        ("summary.csv", summary.to_csv(index=False)),
        ("summary.md", "\n".join(_context(run)) + markdown_table(summary, format_number) + "\n"),
        ("summary.tex", latex_table(summary, f"convbench training run {run.run_id}", f"tab:convbench-{run.run_id}")),
        ("curves.csv", curves.to_csv(index=False)),
    ):
        write_atomic(run.path / name, text, inside=run.path)
        written.append(run.path / name)
    specs = write_figures(run, FIGURES)
    written += [run.path / FIGURES_DIR / f"{spec.name}.{ext}" for spec in specs for ext in ("png", "pdf")]
    sections = Sections(run, run_status(run), summary, failures_frame(records), None, specs)
    write_atomic(run.path / "report.html", html_report(sections), inside=run.path)
    write_atomic(run.path / "report.md", markdown_report(sections), inside=run.path)
    return written + [run.path / "report.html", run.path / "report.md"]
