"""The optimizer step's part of a run's report: the roofline figure (bench.reporting.report.FigureSpec)."""

from __future__ import annotations

import pandas as pd

from bench.kinds.optimizer_step import roofline
from bench.reporting import figures
from bench.reporting.report import FigureSpec
from bench.storage.store import Run


def _optimizer_steps(run: Run) -> pd.DataFrame | None:
    frame = roofline.optimizer_step_frame(run.frame())
    return frame[frame["kind"] == roofline.KIND] if "kind" in frame and (frame["kind"] == roofline.KIND).any() else None


def _roofline(frame: pd.DataFrame) -> object:
    return figures.roofline_figure(frame, roofline.limit_notes(frame))


FIGURES = [
    FigureSpec(
        "roofline",
        "Optimizer step against the bandwidth limit",
        "optimizer.step() alone on the model's parameters, per model and precision: the bandwidth each "
        "implementation's kernels achieved in device time on the bytes the algorithm must move (Adam 7, SGDM 5 "
        "tensor reads and writes per parameter; solid), the same in wall time (hatched: lower where the device "
        "waited for the host), and on the kernels' actual traffic (outline), against the bandwidth an in-place "
        "update kernel reached right before that case on arrays the size of the case's parameters, gradients and "
        "state (black dash: the percentages are of it) and on DRAM-sized arrays (grey dots). A * marks a "
        "percentage above 100, explained under the figure.",
        _roofline,
        _optimizer_steps,
    ),
]
