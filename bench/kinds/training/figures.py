"""Figures of a training run: each takes a DataFrame and returns a matplotlib Figure.

``curves`` frames are ``curves.jsonl`` (one row per evaluation of each training run);
``records`` frames are the run's Records. Spread over seeds is drawn as the band from the
lowest to the highest seed around the median line: with three seeds, an interquartile
range would be two of the three points, so the full range is the honest summary.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from bench.reporting.figures import COLUMN, PAGE, plt, sns

#: Model families the degradation figure compares (models/cifar.py).
PLAIN, RESIDUAL = "cifar-plain", "cifar-resnet"


def seed_bands(curves: pd.DataFrame, y: str) -> pd.DataFrame:
    """Per (model, recipe, evaluation): the median over seeds of epoch and training time,
    and of ``y`` its median, min and max, with the number of seeds that got that far."""
    grouped = curves.groupby(["model", "recipe", "evaluation"], sort=False)
    return grouped.agg(
        epoch=("epoch", "median"),
        train_time_s=("train_time_s", "median"),
        median=(y, "median"),
        low=(y, "min"),
        high=(y, "max"),
        seeds=("seed", "nunique"),
    ).reset_index()


def _recipe_colours(recipes: list[str]) -> dict[str, tuple]:
    return dict(zip(recipes, sns.color_palette(n_colors=max(len(recipes), 1)), strict=False))


def accuracy_figure(curves: pd.DataFrame) -> Figure:
    """Test accuracy against epochs (top row) and against training time (bottom row), one
    column per model, one line per recipe: median over seeds, band from min to max."""
    bands = seed_bands(curves, "test_accuracy")
    model_names = list(dict.fromkeys(curves["model"]))
    colours = _recipe_colours(list(dict.fromkeys(curves["recipe"])))
    columns = len(model_names)
    figure, axes = plt.subplots(
        2, columns, figsize=(max(COLUMN, 2.4 * columns), 4.2), squeeze=False, sharey=True, layout="constrained"
    )
    for column, model in enumerate(model_names):
        for row, x in enumerate(("epoch", "train_time_s")):
            ax = axes[row][column]
            for recipe, band in bands[bands["model"] == model].groupby("recipe", sort=False):
                ax.plot(band[x], band["median"], color=colours[recipe], label=recipe, marker=".", markersize=3)
                ax.fill_between(band[x], band["low"], band["high"], color=colours[recipe], alpha=0.25, linewidth=0)
            ax.set_xlabel("epoch" if x == "epoch" else "training time (s)")
            if row == 0:
                ax.set_title(model)
            if column == 0:
                ax.set_ylabel("test accuracy")
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, title="recipe", loc="outside right upper", frameon=False)
    return figure


def depth(model: str) -> int | None:
    """The depth in a CIFAR model's name (``resnet56`` -> 56), or None."""
    match = re.search(r"(\d+)$", model)
    return int(match.group(1)) if match else None


def degradation_frame(curves: pd.DataFrame, families: dict[str, str]) -> pd.DataFrame | None:
    """The curves of plain and residual CIFAR nets (``families``: model -> family), with
    ``family`` and ``depth`` columns; None unless both kinds are there."""
    chosen = curves[curves["model"].map(families).isin([PLAIN, RESIDUAL])]
    if chosen.empty or chosen["model"].map(families).nunique() < 2:
        return None
    return chosen.assign(family=chosen["model"].map(families), depth=chosen["model"].map(depth))


def degradation_figure(curves: pd.DataFrame) -> Figure:
    """He et al. 2016, figure 1/4: training error (solid) and test error (dashed) against
    epochs, plain nets left and ResNets right, one colour per depth, median over seeds; one
    row per recipe. ``curves``: ``degradation_frame``'s rows."""
    depths = sorted(curves["depth"].unique())
    colours = dict(zip(depths, sns.color_palette(n_colors=len(depths)), strict=False))
    recipes = list(dict.fromkeys(curves["recipe"]))
    figure, axes = plt.subplots(
        len(recipes), 2, figsize=(PAGE, 2.3 * len(recipes) + 0.4), squeeze=False, sharey=True, layout="constrained"
    )
    for row, recipe in enumerate(recipes):
        for column, family in enumerate((PLAIN, RESIDUAL)):
            ax = axes[row][column]
            chosen = curves[(curves["recipe"] == recipe) & (curves["family"] == family)]
            for model, runs in chosen.groupby("model", sort=False):
                colour = colours[depth(model)]
                for y, style in (("train_accuracy", "-"), ("test_accuracy", "--")):
                    band = seed_bands(runs, y)
                    ax.plot(band["epoch"], 1 - band["median"], style, color=colour, label=f"{model} {y.split('_')[0]}")
            ax.set_title(f"{'plain' if family == PLAIN else 'residual'} ({recipe})")
            ax.set_xlabel("epoch")
            ax.set_ylabel("error (1 - accuracy)")
            ax.legend(fontsize="x-small", frameon=False)
    return figure


def time_to_target_figure(records: pd.DataFrame) -> Figure:
    """Training time to the target accuracy per case (model / recipe): one dot per seed, a
    bar at the median; seeds that never reached it are × at the right edge (beyond the
    longest training time of the run), counted."""
    records = records.assign(group=records["model"] + " / " + records["recipe"])
    groups = list(dict.fromkeys(records["group"]))
    reached = records[records["time_to_target_s"].notna()]
    figure, ax = plt.subplots(figsize=(PAGE, 0.9 + 0.35 * len(groups)), layout="constrained")
    # A miss sits at the right edge: past every time to target and every run's whole training time.
    right = float(pd.concat([reached["time_to_target_s"], records["train_time_s"]]).max()) * 1.1
    for y, group in enumerate(groups):
        runs = records[records["group"] == group]
        times = runs["time_to_target_s"].dropna().to_numpy(dtype=float)
        ax.scatter(times, np.full(len(times), y), color="C0", s=14, zorder=3)
        missed = len(runs) - len(times)
        median = _median_with_misses(times, missed)
        if median is not None:
            ax.plot([median, median], [y - 0.3, y + 0.3], color="black", linewidth=1.5)
        if missed:
            ax.scatter([right], [y], marker="x", color="C3", zorder=3)
            ax.annotate(
                f"{missed} of {len(runs)} not reached",
                (right, y),
                xytext=(6, 0),
                textcoords="offset points",
                va="center",
                fontsize="x-small",
                color="C3",
                annotation_clip=False,
            )
    targets = sorted(records["target_accuracy"].dropna().unique())
    ax.set_yticks(range(len(groups)), groups)
    ax.set_ylim(len(groups) - 0.5, -0.5)
    ax.set_xlim(0, right * 1.05)
    target = ", ".join(f"{t:.1%}" for t in targets)
    ax.set_xlabel(f"training time to {target} test accuracy (s); bar: median over seeds")
    return figure


def _median_with_misses(times: np.ndarray, missed: int) -> float | None:
    """The median time with each miss counted as infinitely slow; None if that is infinite."""
    median = float(np.median(np.concatenate([times, np.full(missed, np.inf)]))) if len(times) + missed else math.inf
    return median if math.isfinite(median) else None
