"""Figures of data-parallel runs, one function per figure, each taking the run's records as
a DataFrame (rows with a ``strategy``) and returning a matplotlib Figure in the suite's theme
(``bench.reporting.figures``). A failed case keeps its place: its status is written where its point
would be, never drawn as a zero.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from bench.record import DATA_PARALLEL
from bench.reporting.figures import COLUMN, MIB, PAGE, PALETTE, algorithm
from bench.reporting.report import FigureSpec, step_records
from bench.storage.store import Run

STRATEGY_MARKERS = {"ddp": "o", "zero1": "s", "fsdp": "D"}


def parallel_cases(frame: pd.DataFrame) -> pd.DataFrame:
    """The data-parallel rows of a run's records (empty when there are none), with the
    optimizer's algorithm and the largest rank's optimizer state in MiB."""
    if "kind" not in frame:
        return frame.iloc[0:0]
    rows = frame[frame["kind"] == DATA_PARALLEL]
    state = [
        max(v) / MIB if isinstance(v, list) and None not in v else np.nan for v in rows["rank_optimizer_state_bytes"]
    ]
    return rows.assign(algorithm=rows["optimizer"].map(algorithm), state_mib=state)


def _panels(count: int, height: float = 2.4) -> tuple[Figure, np.ndarray]:
    width = COLUMN if count == 1 else PAGE
    figure, axes = plt.subplots(1, count, figsize=(width, height), layout="constrained", squeeze=False, sharey=True)
    return figure, axes[0]


def _world_axis(axes: plt.Axes, sizes: list[int]) -> None:
    axes.set_xscale("log", base=2)
    axes.set_xticks(sizes, [str(n) for n in sizes])
    axes.minorticks_off()
    axes.set_xlabel("world size (ranks)")


class _Style:
    """One look for every line figure: a colour per strategy, a line style per optimizer,
    the world sizes on the x-axis, a panel per model."""

    def __init__(self, cases: pd.DataFrame) -> None:
        strategies = list(dict.fromkeys(cases["strategy"]))
        self.colours = dict(zip(strategies, sns.color_palette(PALETTE, len(strategies)), strict=True))
        self.styles = dict(zip(dict.fromkeys(cases["optimizer"]), ["-", "--", ":", "-."] * 4, strict=False))
        self.models = list(dict.fromkeys(cases["model"]))
        self.sizes = sorted(int(n) for n in cases["world_size"].unique())

    def line(self, axes: plt.Axes, line: pd.DataFrame, column: str, failed_at: float) -> None:
        """One strategy and optimizer's ``column`` against world size; failed cases by name."""
        strategy, optimizer = line["strategy"].iloc[0], line["optimizer"].iloc[0]
        ok = line[line["status"] == "ok"].sort_values("world_size")
        axes.plot(
            ok["world_size"],
            ok[column].astype(float),
            linestyle=self.styles[optimizer],
            marker=STRATEGY_MARKERS.get(strategy, "o"),
            color=self.colours[strategy],
            label=f"{strategy} · {optimizer}",
        )
        for row in line[line["status"] != "ok"].itertuples():
            axes.annotate(
                row.status, (row.world_size, failed_at), ha="center", va="bottom", fontsize="xx-small", color="0.3"
            )


def scaling_efficiency_figure(frame: pd.DataFrame) -> Figure:
    """Scaling efficiency, throughput(N) / (N × throughput(1)), against world size: a panel
    per model, a colour per strategy, a line style per optimizer; 1 is linear scaling."""
    cases = parallel_cases(frame)
    style = _Style(cases)
    figure, panels = _panels(len(style.models))
    for axes, model in zip(panels, style.models, strict=True):
        for _, line in cases[cases["model"] == model].groupby(["strategy", "optimizer"], sort=False):
            style.line(axes, line, "scaling_efficiency", failed_at=0.05)
        axes.axhline(1.0, color="0.5", linewidth=0.8, linestyle="--")
        axes.set_title(model, fontsize="small")
        axes.set_ylim(0, 1.15)
        _world_axis(axes, style.sizes)
    panels[0].set_ylabel("scaling efficiency")
    panels[-1].legend(fontsize="xx-small", loc="lower left")
    return figure


def state_per_rank_figure(frame: pd.DataFrame) -> Figure:
    """Optimizer-state bytes per rank (the largest rank) against world size: a panel per
    model, a colour per strategy, a line style per optimizer; the dotted lines are each
    optimizer's one-rank state / N, where perfect sharding would put zero1 and fsdp."""
    cases = parallel_cases(frame)
    style = _Style(cases)
    figure, panels = _panels(len(style.models))
    for axes, model in zip(panels, style.models, strict=True):
        for _, group in cases[cases["model"] == model].groupby("optimizer", sort=False):
            one = group[(group["world_size"] == 1) & (group["status"] == "ok")]["state_mib"]
            if not one.empty:
                ideal = [one.iloc[0] / n for n in style.sizes]
                # on top: fsdp's points lie on it, and it must stay visible there
                axes.plot(style.sizes, ideal, color="0.2", linestyle=":", linewidth=1, label="one rank / N", zorder=3)
            for _, line in group.groupby("strategy", sort=False):
                style.line(axes, line, "state_mib", failed_at=0)
        axes.set_title(model, fontsize="small")
        axes.set_ylim(bottom=0)
        _world_axis(axes, style.sizes)
        handles, labels = axes.get_legend_handles_labels()
        unique = dict(zip(labels, handles, strict=True))
        axes.legend(unique.values(), unique.keys(), fontsize="xx-small", loc="lower left")
    panels[0].set_ylabel("optimizer state per rank (MiB)")
    return figure


def adam_vs_sgdm_figure(frame: pd.DataFrame) -> Figure:
    """Optimizer state per rank (the largest rank), Adam beside SGDM, for each strategy and
    world size: a panel per model; the title gives Adam's state as a multiple of SGDM's."""
    cases = parallel_cases(frame)
    cases = cases[cases["algorithm"].isin(["adam", "sgdm"])]
    model_names = list(dict.fromkeys(cases["model"]))
    figure, panels = _panels(len(model_names), height=2.6)
    colours = dict(zip(["adam", "sgdm"], sns.color_palette(PALETTE, 2), strict=True))
    for axes, model in zip(panels, model_names, strict=True):
        mine = cases[cases["model"] == model].assign(
            setting=lambda rows: rows["strategy"] + " w" + rows["world_size"].astype(int).astype(str)
        )
        order = mine.assign(rank=mine["strategy"].map({name: k for k, name in enumerate(STRATEGY_MARKERS)}))
        settings = list(dict.fromkeys(order.sort_values(["rank", "world_size"])["setting"]))
        for k, name in enumerate(["adam", "sgdm"]):
            rows = mine[mine["algorithm"] == name].groupby("setting")["state_mib"].max()
            heights = [rows.get(setting, np.nan) for setting in settings]
            axes.bar(np.arange(len(settings)) + (k - 0.5) * 0.4, heights, 0.4, color=colours[name], label=name)
        ratio = mine.groupby(["setting", "algorithm"])["state_mib"].max().unstack()
        if {"adam", "sgdm"} <= set(ratio.columns):
            ratios = (ratio["adam"] / ratio["sgdm"]).dropna()
            if not ratios.empty:
                axes.set_title(f"{model}: Adam / SGDM per rank = {ratios.median():.2f}", fontsize="small")
        else:
            axes.set_title(model, fontsize="small")
        axes.set_xticks(range(len(settings)), settings, rotation=45, ha="right", fontsize="x-small")
        axes.grid(axis="x", visible=False)
    panels[0].set_ylabel("optimizer state per rank (MiB)")
    panels[-1].legend(fontsize="x-small")
    return figure


def _parallel(run: Run) -> pd.DataFrame | None:
    frame = step_records(run)
    return None if frame is None else parallel_cases(frame)


#: Data-parallel figures in the report, drawn when the run has cases with a strategy.
FIGURES = [
    FigureSpec(
        "scaling_efficiency",
        "Data-parallel scaling efficiency",
        "Global throughput at N ranks / (N × the same case's throughput on one rank), against N, at a "
        "fixed per-rank batch; step time is the slowest rank's. 1 (dashed) is linear scaling.",
        scaling_efficiency_figure,
        _parallel,
    ),
    FigureSpec(
        "state_per_rank",
        "Optimizer state per rank",
        "Optimizer-state bytes held by the largest rank against world size; dotted: the one-rank "
        "state / N, where zero1 and fsdp would sit if sharding were perfect.",
        state_per_rank_figure,
        _parallel,
    ),
    FigureSpec(
        "adam_vs_sgdm_per_rank",
        "Adam against SGDM per rank",
        "Optimizer state per rank (largest rank) with Adam and with SGDM, per strategy and world size.",
        adam_vs_sgdm_figure,
        _parallel,
    ),
]
