"""The trend and speed-up figures draw what their frames say."""

import pandas as pd
from matplotlib.collections import PathCollection

from bench.reporting.figures import speedup_figure, trend_figure, use_theme


def marked_points(axes) -> int:
    return sum(len(c.get_offsets()) for c in axes.collections if isinstance(c, PathCollection))


def test_trend_marks_only_the_flagged_runs():
    use_theme()
    frame = pd.DataFrame(
        {
            "started": ["2026-11-23T01:00:00+00:00", "2026-11-24T01:00:00+00:00", "2026-11-25T01:00:00+00:00"] * 2,
            "series": ["cnn/adam"] * 3 + ["cnn/sgdm"] * 3,
            "throughput": [800.0, 640.0, 800.0, 900.0, 900.0, 905.0],
            "peak_memory_bytes": [600 * 2**20] * 5 + [700 * 2**20],
            "time": [None, "regression", "improvement", None, "unchanged", "unchanged"],
            "memory": [None, "unchanged", "unchanged", None, "unchanged", "regression"],
        }
    )
    figure = trend_figure(frame)
    throughput_axes, memory_axes = figure.axes
    assert marked_points(throughput_axes) == 2 and marked_points(memory_axes) == 1
    assert [len(line.get_xdata()) for line in throughput_axes.get_lines()] == [3, 3]
    assert memory_axes.get_lines()[1].get_ydata()[-1] == 700.0


def test_speedup_bars_have_the_speedups():
    frame = pd.DataFrame(
        {"case": ["cnn", "cnn", "resnet20"], "device": ["A100", "H100", "A100"], "speedup": [1.0, 2.5, 1.0]}
    )
    axes = speedup_figure(frame).axes[0]
    widths = sorted(round(patch.get_width(), 3) for patch in axes.patches if patch.get_width() > 0)
    assert widths == [1.0, 1.0, 2.5]
