"""Figures of the memory pass (``bench.kinds.step.memory_pass``): predicted against measured peak over
the batch sweep, and the largest batch that fits for Adam against SGDM. Each takes the
run's records as a DataFrame and returns a Figure, like those of ``bench.reporting.figures``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import pyplot as plt
from matplotlib import ticker
from matplotlib.figure import Figure

from bench.reporting.figures import COLUMN, MIB, PALETTE, algorithm
from bench.reporting.report import FigureSpec, step_records
from bench.storage.store import Run

#: The series one line of the sweep follows: everything but the batch size.
SERIES = ["model", "optimizer", "precision", "channels_last"]


def _tracked(frame: pd.DataFrame) -> pd.DataFrame:
    ok = frame[frame["status"] == "ok"] if "status" in frame else frame
    return ok.dropna(subset=[c for c in ("tracked_peak_bytes", "predicted_peak_bytes") if c in ok])


def has_predicted_sweep(frame: pd.DataFrame) -> bool:
    """Some series has tracked and predicted peaks at two or more batch sizes."""
    if not {"tracked_peak_bytes", "predicted_peak_bytes"} <= set(frame.columns):
        return False
    tracked = _tracked(frame)
    return not tracked.empty and bool((tracked.groupby(SERIES)["batch_size"].nunique() > 1).any())


def predicted_peak_figure(frame: pd.DataFrame) -> Figure:
    """Peak memory against batch size, one colour per model / optimizer / precision: the
    tracker's measured peak (solid, dots), the fake-tensor prediction (dashed, crosses) and,
    on CUDA, the allocator's peak over the same step (dotted)."""
    tracked = _tracked(frame).sort_values("batch_size")
    groups = list(tracked.groupby(SERIES, sort=False))
    colours = sns.color_palette(PALETTE, len(groups))
    figure, axes = plt.subplots(figsize=(COLUMN, 2.8), layout="constrained")
    for (key, series), colour in zip(groups, colours, strict=True):
        label = " / ".join(str(k) for k in key[:3])
        axes.plot(series["batch_size"], series["tracked_peak_bytes"] / MIB, "o-", color=colour, label=label)
        axes.plot(series["batch_size"], series["predicted_peak_bytes"] / MIB, "x--", color=colour)
        allocator = series.get("tracked_allocator_peak_bytes")
        if allocator is not None and allocator.notna().any():
            axes.plot(series["batch_size"], allocator / MIB, ":", color=colour)
    axes.set_xscale("log", base=2)
    axes.xaxis.set_major_formatter(ticker.ScalarFormatter())
    axes.set_xlabel("batch size")
    axes.set_ylabel("peak memory (MiB)")
    axes.set_title("measured (solid) and predicted (dashed) peak", fontsize="small")
    figure.legend(loc="outside lower center", ncols=2, frameon=False, fontsize="x-small")
    return figure


def has_max_batch(frame: pd.DataFrame) -> bool:
    return "max_batch_size" in frame and frame["max_batch_size"].notna().any()


def max_batch_figure(frame: pd.DataFrame) -> Figure:
    """The largest batch that trains without running out of memory, per model and
    optimizer, grouped so that each Adam-family bar stands beside the SGDM-family ones:
    bars measured, black ticks the prediction. The figure's title gives the memory."""
    cases = frame[frame["max_batch_size"].notna()].copy()
    cases["family"] = cases["optimizer"].map(algorithm)
    cases = cases.sort_values(["model", "family", "optimizer"])
    model_names = list(dict.fromkeys(cases["model"]))
    optimizer_names = list(dict.fromkeys(cases.sort_values(["family", "optimizer"])["optimizer"]))
    colours = dict(zip(optimizer_names, sns.color_palette(PALETTE, len(optimizer_names)), strict=True))
    width = 0.8 / len(optimizer_names)
    figure, axes = plt.subplots(figsize=(COLUMN, 2.6), layout="constrained")
    for k, name in enumerate(optimizer_names):
        rows = cases[cases["optimizer"] == name].groupby("model")[["max_batch_size", "max_batch_predicted"]].median()
        x = np.array([model_names.index(m) for m in rows.index]) - 0.4 + width * (k + 0.5)
        axes.bar(x, rows["max_batch_size"], width, color=colours[name], label=name)
        axes.scatter(x, rows["max_batch_predicted"], marker="_", s=120, color="black", zorder=3)
    axes.set_xticks(range(len(model_names)), model_names)
    axes.set_ylabel("largest batch that fits")
    memory = cases["max_batch_memory_bytes"].dropna().unique()
    if len(memory) == 1:
        axes.set_title(f"in {memory[0] / MIB:,.0f} MiB; ticks: predicted", fontsize="small")
    axes.grid(axis="x", visible=False)
    figure.legend(loc="outside lower center", ncols=min(4, len(optimizer_names)), frameon=False, fontsize="x-small")
    return figure


def _predicted_sweep(run: Run) -> pd.DataFrame | None:
    frame = step_records(run)
    return frame if frame is not None and has_predicted_sweep(frame) else None


def _max_batch(run: Run) -> pd.DataFrame | None:
    frame = step_records(run)
    return frame if frame is not None and has_max_batch(frame) else None


#: The step kind's memory figures in the report (bench.reporting.report.FigureSpec).
FIGURES = [
    FigureSpec(
        "predicted_peak",
        "Predicted against measured peak",
        "Peak memory of one training step over the batch sweep: measured by the tensor tracker (solid), "
        "predicted on fake tensors before anything was allocated (dashed) and, on CUDA, the allocator's "
        "max_memory_allocated over the same step (dotted).",
        predicted_peak_figure,
        _predicted_sweep,
    ),
    FigureSpec(
        "max_batch",
        "Largest batch that fits",
        "The largest batch that trained without running out of memory (--find-max-batch: doubling, then "
        "bisection), Adam beside SGDM: the optimizer-state difference in batch terms. Ticks: the same search "
        "on predicted peaks.",
        max_batch_figure,
        _max_batch,
    ),
]
