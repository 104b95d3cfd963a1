"""Figures: one function per figure, each taking a DataFrame and returning a matplotlib Figure.

Every figure uses the same theme (seaborn's ``paper`` context, a white grid and the
colour-blind-safe palette) and is sized for a paper: ``COLUMN`` inches wide for one
column, ``PAGE`` for the full text width. ``save`` writes PNG (for the web) and PDF (for
papers, with embedded TrueType fonts) side by side.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures are files; no display is needed or assumed

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

COLUMN = 3.5  # inches: one column of a two-column paper
PAGE = 7.0  # inches: the full text width
PALETTE = "colorblind"
PNG_DPI = 200


def use_theme() -> None:
    """Apply the suite's one theme to everything drawn after this call."""
    sns.set_theme(
        context="paper",
        style="whitegrid",
        palette=PALETTE,
        rc={"pdf.fonttype": 42, "ps.fonttype": 42, "figure.dpi": 100, "savefig.bbox": "tight"},
    )


def save(figure: Figure, stem: Path) -> list[Path]:
    """Write ``stem.png`` and ``stem.pdf`` and close the figure; returns both paths."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    figure.savefig(paths[0], dpi=PNG_DPI)
    figure.savefig(paths[1])
    plt.close(figure)
    return paths


#: How ``trend_figure`` marks a run that ``compare`` flags against the run before it.
FLAG_MARKERS = {"regression": ("v", "regression"), "improvement": ("^", "improvement")}


def trend_figure(frame: pd.DataFrame) -> Figure:
    """Throughput (top) and peak memory (bottom) of each case over the runs.

    ``frame``: one row per case and run with ``started`` (ISO time), ``series`` (the line a
    row belongs to, e.g. the case id), ``throughput``, ``peak_memory_bytes``, and the
    ``time`` and ``memory`` verdicts from ``bench.compare.flag_history``; flagged points get
    a large open marker, pointing down for a regression and up for an improvement."""
    frame = frame.assign(when=pd.to_datetime(frame["started"]), peak_mib=frame["peak_memory_bytes"] / 2**20)
    series = list(dict.fromkeys(frame["series"]))
    colours = dict(zip(series, sns.color_palette(PALETTE, len(series)), strict=True))
    figure, (throughput_axes, memory_axes) = plt.subplots(2, 1, sharex=True, figsize=(PAGE, 5.0))
    for axes, column, verdict, label in (
        (throughput_axes, "throughput", "time", "throughput (samples/s)"),
        (memory_axes, "peak_mib", "memory", "peak memory (MiB)"),
    ):
        for name in series:
            points = frame[frame["series"] == name].sort_values("when")
            axes.plot(points["when"], points[column], marker="o", markersize=3, color=colours[name], label=name)
            for flag, (marker, _) in FLAG_MARKERS.items():
                hit = points[points[verdict] == flag]
                axes.scatter(hit["when"], hit[column], marker=marker, s=90, facecolors="none", edgecolors="black")
        axes.set_ylabel(label)
    for marker, text in FLAG_MARKERS.values():
        throughput_axes.scatter([], [], marker=marker, s=90, facecolors="none", edgecolors="black", label=f"{text}")
    memory_axes.set_xlabel("run started (UTC)")
    figure.autofmt_xdate()
    throughput_axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return figure


def speedup_figure(frame: pd.DataFrame) -> Figure:
    """Throughput of each case on each device relative to the reference device (1 = as fast).

    ``frame``: one row per case and device with ``case``, ``device`` and ``speedup``, as
    ``bench.compare.side_by_side`` returns it."""
    cases = list(dict.fromkeys(frame["case"]))
    figure, axes = plt.subplots(figsize=(PAGE, 1.0 + 0.3 * len(cases) * frame["device"].nunique()))
    sns.barplot(data=frame, y="case", x="speedup", hue="device", order=cases, ax=axes)
    axes.axvline(1.0, color="black", linewidth=0.8)
    axes.set_xlabel("throughput relative to the reference device")
    axes.set_ylabel("")
    axes.legend(title="device", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return figure
