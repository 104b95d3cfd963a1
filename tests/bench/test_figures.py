import matplotlib.pyplot as plt

from bench.reporting.figures import COLUMN, save, use_theme


def test_save_writes_png_and_pdf_and_closes(tmp_path):
    use_theme()
    figure, axes = plt.subplots(figsize=(COLUMN, 2.5))
    axes.plot([1, 2, 3], [1, 4, 9])
    paths = save(figure, tmp_path / "figures" / "square")
    assert [p.name for p in paths] == ["square.png", "square.pdf"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths[1].read_bytes()[:5] == b"%PDF-"
    assert not plt.fignum_exists(figure.number)


# The run's figures, read back from the matplotlib objects they return. The expected values
# are worked out by hand from the synthetic run (tests/bench/synthetic.py), not by the code
# under test.

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.container import ErrorbarContainer  # noqa: E402
from matplotlib.image import AxesImage  # noqa: E402

from bench.reporting import figures  # noqa: E402
from tests.bench import synthetic  # noqa: E402

MIB = 2**20


@pytest.fixture(autouse=True)
def close_figures():
    figures.use_theme()
    yield
    plt.close("all")


def texts(axes) -> list[str]:
    return [t.get_text().strip() for t in axes.texts]


def legend_labels(figure) -> list[str]:
    legends = figure.legends or [a.get_legend() for a in figure.axes if a.get_legend()]
    return [t.get_text() for legend in legends for t in legend.get_texts()]


def test_throughput_bars_with_iqr_error_bars_from_the_step_time_quartiles():
    figure = figures.throughput_figure(synthetic.frame())
    axes = {a.get_title(): a for a in figure.axes}
    assert list(axes) == ["fp32, batch 32", "fp32, batch 64", "fp32, batch 128"]
    assert all(a.get_ylabel() == "throughput (samples/s)" for a in axes.values())
    assert legend_labels(figure) == ["adam", "sgdm"]
    # Step times 10..18 ms at batch 32: median 14 ms, quartiles 12 and 16 ms.
    batch32 = axes["fp32, batch 32"]
    assert [t.get_text() for t in batch32.get_xticklabels()] == ["cnn", "resnet20"]
    assert len(batch32.patches) == 4
    assert [p.get_height() for p in batch32.patches] == pytest.approx([32_000 / 14] * 4)
    bars = [c for c in batch32.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 4
    for bar in bars:
        (low, high) = sorted(y for _, y in bar.lines[2][0].get_segments()[0])
        assert (low, high) == pytest.approx((32_000 / 16, 32_000 / 12))
    # At batch 128 only cnn with adam ran; the other two say why.
    batch128 = axes["fp32, batch 128"]
    assert len(batch128.patches) == 1
    assert sorted(texts(batch128)) == ["error", "out of memory"]


def test_throughput_panels_per_precision():
    frame = synthetic.frame()
    frame = frame[frame["batch_size"] == 32]
    frame.loc[frame["model"] == "resnet20", "precision"] = "bf16"
    figure = figures.throughput_figure(frame)
    assert sorted(a.get_title() for a in figure.axes) == ["bf16, batch 32", "fp32, batch 32"]
    assert [len(a.patches) for a in figure.axes] == [2, 2]


def test_memory_breakdown_stacks_the_four_parts_and_states_the_ratio():
    frame = synthetic.frame()
    figure = figures.memory_breakdown_figure(frame)
    (axes,) = figure.axes
    assert axes.get_xlabel() == "memory (MiB)"
    assert legend_labels(figure) == ["parameters", "gradients", "optimizer state", "activations"]
    ok = int((frame["status"] == "ok").sum())
    assert ok == 9 and len(axes.patches) == 4 * ok
    labels = [t.get_text() for t in axes.get_yticklabels()]
    assert labels[0] == "cnn · adam · b32" and len(labels) == len(frame)
    params, state, activations = axes.containers[0], axes.containers[2], axes.containers[3]
    assert params[0].get_width() == pytest.approx(4 * 360_778 / MIB)
    assert state[0].get_width() == pytest.approx(8 * 360_778 / MIB)  # Adam: two fp32 buffers
    assert state[1].get_width() == pytest.approx(4 * 360_778 / MIB)  # SGDM: one
    assert activations[0].get_x() == pytest.approx(16 * 360_778 / MIB)  # stacked on the other three
    assert axes.get_title() == "Adam / SGDM optimizer state: 2.00× for every model"
    assert sorted(texts(axes)) == ["error", "out of memory"]


def test_state_ratio_per_model_when_models_differ_and_none_without_sgdm():
    frame = synthetic.frame()
    resnet_sgdm = (frame["model"] == "resnet20") & (frame["optimizer"] == "sgdm")
    frame.loc[resnet_sgdm, "optimizer_state_bytes"] = 8 * 272_474
    assert figures.state_ratio_text(frame) == "Adam / SGDM optimizer state: cnn 2.00×, resnet20 1.00×"
    assert figures.state_ratio_text(frame[frame["optimizer"] == "adam"]) is None


def test_state_bytes_per_parameter_measured_beside_theory():
    figure = figures.state_bytes_figure(synthetic.frame())
    (axes,) = figure.axes
    assert axes.get_ylabel() == "optimizer state (bytes / parameter)"
    assert [t.get_text() for t in axes.get_xticklabels()] == ["adam", "sgdm"]
    assert legend_labels(figure) == ["theory", "cnn", "resnet20"]
    # theory: 2 (Adam) or 1 (SGDM) fp32 buffers of 4 bytes; then each model's measurement
    assert [p.get_height() for p in axes.patches] == pytest.approx([8, 8, 8, 4, 4, 4])


def test_batch_scaling_marks_the_case_that_ran_out_of_memory():
    frame = synthetic.frame()
    assert figures.batch_sweeps(frame)
    assert not figures.batch_sweeps(frame[frame["batch_size"] == 32])
    figure = figures.batch_scaling_figure(frame)
    throughput, memory = figure.axes
    assert throughput.get_xlabel() == memory.get_xlabel() == "batch size (samples)"
    # records without the memory pass: the process's resident set, and the label says so
    assert (throughput.get_ylabel(), memory.get_ylabel()) == (
        "throughput (samples/s)",
        "peak memory (MiB)\nCPU: process RSS",
    )
    for axes in (throughput, memory):
        markers = [line for line in axes.lines if line.get_marker() == "x"]
        assert len(markers) == 1 and list(markers[0].get_xdata()) == [128]
    (cnn_adam,) = [line for line in memory.lines if line.get_label() == "cnn · adam"]
    assert list(cnn_adam.get_xdata()) == [32, 64, 128]
    expected = [(4 * 4 * 360_778 + 50_000 * b) / MIB for b in (32, 64, 128)]
    assert list(cnn_adam.get_ydata()) == pytest.approx(expected)
    assert legend_labels(figure)[-2:] == ["out of memory", "error"]
    # Both axes from zero: a memory axis starting near the smallest peak makes 1 MiB look steep.
    assert throughput.get_ylim()[0] == memory.get_ylim()[0] == 0


def test_batch_scaling_keeps_a_series_that_only_diverged():
    frame = synthetic.frame()
    diverged = (frame["model"] == "cnn") & (frame["optimizer"] == "sgdm")
    frame.loc[diverged, "status"] = "diverged"
    figure = figures.batch_scaling_figure(frame)
    for axes in figure.axes:
        (marks,) = [line for line in axes.lines if line.get_marker() == "d"]
        assert sorted(marks.get_xdata()) == sorted(frame.loc[diverged, "batch_size"])
    assert "diverged" in legend_labels(figure)


def test_constant_gradient_sgdm_scales_with_c_and_adam_collapses():
    figure = figures.constant_gradient_figure(figures.constant_gradient_frame(steps=50))
    sgdm, adam = figure.axes
    assert sgdm.get_yscale() == "log" and sgdm.get_xlabel() == "step t"
    assert [line.get_label() for line in sgdm.lines] == ["c = 0.01", "c = 0.1", "c = 1", "c = 10"]
    # By hand: w(1) = -lr c and w(2) = -lr c (2 + beta) with lr 0.01, beta 0.9.
    distance = {line.get_label(): np.asarray(line.get_ydata()) for line in sgdm.lines}
    assert distance["c = 1"][:2] == pytest.approx([0.01, 0.029])
    assert distance["c = 10"] == pytest.approx(10 * distance["c = 1"])
    # Adam: -w = lr t for every c (to within eps = 1e-8 against c >= 0.01).
    t = np.arange(1, 51)
    for line in adam.lines:
        assert np.asarray(line.get_ydata()) == pytest.approx(1e-3 * t, rel=1e-5)


def test_axis_values_reads_rf_csv_cells():
    assert figures.axis_values("[3, 5]") == (3, 5)
    assert figures.axis_values([7, 7]) == (7, 7)
    assert figures.axis_values(11) == (11, 11)
    assert figures.axis_values("global") is None and figures.axis_values(float("nan")) is None
    assert figures.axis_values("irregular") is None
    assert figures.axis_values('["global", 7]') == pytest.approx((np.nan, 7), nan_ok=True)


def test_receptive_field_growth_analytic_beside_probe():
    figure = figures.receptive_field_figure(synthetic.rf_frame())
    (axes,) = figure.axes
    assert axes.get_title() == "toynet" and axes.get_ylabel() == "receptive field (input pixels)"
    assert [t.get_text() for t in axes.get_xticklabels()] == ["conv1", "conv2", "pool"]
    lines = {line.get_label(): line for line in axes.lines}
    assert list(lines) == ["analytic", "gradient mask", "global (whole input)"]
    assert np.asarray(lines["analytic"].get_ydata()) == pytest.approx([3, 5, np.nan], nan_ok=True)
    assert np.asarray(lines["gradient mask"].get_ydata()) == pytest.approx([3, 5, np.nan], nan_ok=True)
    assert list(lines["global (whole input)"].get_xdata()) == [2]


def test_receptive_field_growth_marks_probes_cut_by_the_border():
    frame = synthetic.rf_frame().assign(clipped=[False, True, False])
    (axes,) = figures.receptive_field_figure(frame).axes
    (cut,) = [line for line in axes.lines if line.get_label() == "mask cut by the input border"]
    assert list(cut.get_xdata()) == [1] and list(cut.get_ydata()) == [5]


def test_receptive_field_growth_draws_width_when_fields_are_not_square():
    frame = synthetic.rf_frame()
    frame.loc[1, ["rf", "rf_empirical"]] = "[5, 7]"
    (axes,) = figures.receptive_field_figure(frame).axes
    width = [line for line in axes.lines if line.get_label() == "analytic (width)"]
    assert len(width) == 1 and np.asarray(width[0].get_ydata())[:2] == pytest.approx([3, 7])


def test_receptive_field_maps_one_row_per_layer():
    mask = np.zeros((9, 9))
    mask[3:6, 3:6] = 2.0
    erf = np.outer(np.hanning(9), np.hanning(9))
    field = np.array([[3, 5], [3, 5]])  # rows 3..5 and columns 3..5 of the input
    rows = [
        dict(model="toynet", layer=layer, map=kind, values=values, field=field)
        for layer in ("conv1", "conv2")
        for kind, values in (("mask", mask), ("erf", erf))
    ]
    figure = figures.receptive_field_maps_figure(pd.DataFrame(rows))
    maps = [a for a in figure.axes if a.images]
    assert len(maps) == 4
    assert [a.get_title() for a in maps[:2]] == ["gradient mask", "effective receptive field"]
    assert maps[0].get_ylabel() == "toynet conv1\ninput row (px)" and maps[0].get_xlabel() == "input column (px)"
    image = maps[0].images[0]
    assert isinstance(image, AxesImage) and image.get_array().max() == 1.0 and image.get_array().sum() == 9
    (box,) = maps[0].patches  # the analytic field outlined around pixel centres 3..5
    assert (box.get_x(), box.get_y(), box.get_width(), box.get_height()) == (2.5, 2.5, 3, 3)
    assert legend_labels(figure) == ["analytic field"]


@pytest.mark.parametrize(
    "draw",
    [
        figures.throughput_figure,
        figures.memory_breakdown_figure,
        figures.state_bytes_figure,
        figures.batch_scaling_figure,
    ],
)
def test_a_run_whose_cases_all_failed_still_gets_its_figures(draw):
    frame = pd.DataFrame([synthetic.record("cnn", "adam", b, status="oom") for b in (32, 64)])
    assert draw(frame).axes
    assert figures.state_ratio_text(frame) is None


def test_receptive_field_follows_the_main_path_and_marks_shortcuts():
    """resnet20's analytic fields (3 + 2 per 3x3 conv at jump 1, 2 and 4; a 1x1 stride-2
    shortcut sees what its block's input sees): the shortcut must not break the line."""
    rows = [
        ("conv1", "[3, 3]"),
        ("layer2.0.conv1", "[17, 17]"),
        ("layer2.0.conv2", "[21, 21]"),
        ("layer2.0.shortcut.0", "[15, 15]"),
        ("layer2.1.conv1", "[25, 25]"),
    ]
    frame = pd.DataFrame([{"model": "resnet20", "layer": layer, "rf": rf, "rf_empirical": rf} for layer, rf in rows])
    (axes,) = figures.receptive_field_figure(frame).axes
    lines = {line.get_label(): line for line in axes.lines}
    assert list(lines["analytic"].get_ydata()) == [3, 17, 21, 25]  # increasing: no zig-zag
    assert [t.get_text() for t in axes.get_xticklabels()] == [
        "conv1",
        "layer2.0.conv1",
        "layer2.0.conv2",
        "layer2.1.conv1",
    ]
    shortcut = lines["shortcut (off the main path)"]
    assert (list(shortcut.get_xdata()), list(shortcut.get_ydata())) == ([2], [15])


def test_batch_scaling_on_the_cpu_draws_the_tracked_step_peak():
    frame = synthetic.frame()
    # the memory pass's tracked peak: a tenth of the process's resident set
    frame["tracked_peak_bytes"] = pd.to_numeric(frame["peak_memory_bytes"]) / 10
    figure = figures.batch_scaling_figure(frame)
    memory = figure.axes[1]
    assert memory.get_ylabel() == "peak memory (MiB)\nCPU: tracked step peak"
    (cnn_adam,) = [line for line in memory.lines if line.get_label() == "cnn · adam"]
    expected = [(4 * 4 * 360_778 + 50_000 * b) / MIB / 10 for b in (32, 64, 128)]
    assert list(cnn_adam.get_ydata()) == pytest.approx(expected)
