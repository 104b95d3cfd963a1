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


def nights(series: list[str], throughput: float = 800.0, **columns) -> pd.DataFrame:
    """Three nights of each series: ``throughput`` samples/s and 600 MiB peaks, unless ``columns`` say otherwise."""
    rows = len(series) * 3
    frame = pd.DataFrame(
        {
            "started": ["2026-11-23T01:00:00+00:00", "2026-11-24T01:00:00+00:00", "2026-11-25T01:00:00+00:00"]
            * len(series),
            "series": [name for name in series for _ in range(3)],
            "throughput": [throughput] * rows,
            "peak_memory_bytes": [600 * 2**20] * rows,
            "time": [None, "unchanged", "unchanged"] * len(series),
            "memory": [None, "unchanged", "unchanged"] * len(series),
        }
    )
    return frame.assign(**columns)


def legend_texts(figure) -> list[str]:
    return [text.get_text() for text in figure.axes[0].get_legend().get_texts()]


def test_trend_legend_lists_only_the_lines_drawn_and_the_flags_that_occur():
    use_theme()
    frame = nights(["cnn/adam", "optim/adam"])
    # an optimizer-step case: no throughput and no peak memory, so nothing of it is drawn
    frame.loc[frame["series"] == "optim/adam", ["throughput", "peak_memory_bytes"]] = None
    figure = trend_figure(frame)
    assert legend_texts(figure) == ["cnn/adam"]  # no optim line, no regression or improvement marker
    frame.loc[2, "time"] = "regression"
    assert legend_texts(trend_figure(frame)) == ["cnn/adam", "regression"]


def test_trend_lines_past_eight_stay_distinct_and_memory_starts_at_zero():
    use_theme()
    series = [f"case{i}" for i in range(20)]
    figure = trend_figure(nights(series))
    throughput_axes, memory_axes = figure.axes
    looks = {(tuple(line.get_color()), line.get_linestyle(), line.get_marker()) for line in throughput_axes.get_lines()}
    assert len(throughput_axes.get_lines()) == 20 and len(looks) == 20
    colours = {tuple(line.get_color()) for line in throughput_axes.get_lines()[:8]}
    assert len(colours) == 8  # the first eight lines differ by colour alone
    assert memory_axes.get_ylim()[0] == 0
    assert len(legend_texts(figure)) == 20


def test_trend_memory_of_cpu_runs_is_the_tracked_step_peak_not_the_process():
    use_theme()
    frame = nights(["cnn/adam"], peak_memory_source="process_rss", tracked_peak_bytes=[12 * 2**20] * 3)
    figure = trend_figure(frame)
    memory_axes = figure.axes[1]
    assert list(memory_axes.get_lines()[0].get_ydata()) == [12.0, 12.0, 12.0]  # not the process's 600 MiB
    assert memory_axes.get_ylabel() == "peak memory (MiB)\nCPU: tracked step peak"
