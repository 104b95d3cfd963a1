"""`convbench memory`, the memory figures and the report's memory columns, on hand-made records."""

import pandas as pd
import pytest

from bench.cli import main
from bench.kinds.step import memory_figures
from bench.kinds.step.max_batch import parse_bytes
from bench.measure.memory_breakdown import CATEGORIES
from bench.reporting import figures, report
from tests.bench import synthetic
from tests.bench.test_figures import close_figures  # noqa: F401  (autouse: the theme, and no figure left open)

MIB = 2**20


def test_parse_bytes_reads_binary_and_decimal_units():
    assert parse_bytes("80GiB") == 80 * 2**30
    assert parse_bytes("512 MiB") == 512 * 2**20
    assert parse_bytes("16GB") == 16 * 10**9
    assert parse_bytes("1e3") == 1000
    for bad in ("x", "0", "GiB", "-5MiB"):
        with pytest.raises(ValueError, match="not a memory size"):
            parse_bytes(bad)


def test_memory_command_prints_the_breakdown_and_the_largest_batch(capsys):
    assert main(["memory", "mlp", "--optimizer", "sgdm", "--batch-size", "2", "--device", "cpu",
                 "--device-memory", "6MiB"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    # mlp: 400,906 float32 parameters, once as weights, once as gradients, once as SGDM's m
    assert int(rows["parameters"][1]) == int(rows["gradients"][1]) == 400_906 * 4
    assert "largest batch that fits 6.00 MiB:" in out
    # 6 MiB minus three copies of the model (4.59 MiB) leaves room for some samples, not thousands
    largest = int(out.rsplit(":", 1)[1])
    assert 1 <= largest < 5000


@pytest.mark.parametrize(
    "argv",
    [
        ["memory", "mlp", "--optimizer", "nope", "--batch-size", "2"],
        ["memory", "nope", "--optimizer", "adam", "--batch-size", "2"],
        ["memory", "mlp", "--optimizer", "adam", "--batch-size", "0"],
        ["memory", "mlp", "--optimizer", "adam", "--batch-size", "2", "--device-memory", "lots"],
        ["memory", "mlp", "--optimizer", "adam", "--batch-size", "2", "--gpu", "H900"],
        # a compiled optimizer's step on fake tensors crashed the process (a segfault)
        ["memory", "cnn", "--optimizer", "adam-compiled", "--batch-size", "2", "--device", "cpu"],
        ["memory", "cnn", "--optimizer", "adam", "--batch-size", "99999999999999", "--device", "cpu"],
        ["memory", "cnn", "--optimizer", "adam", "--batch-size", "2", "--device-memory", "1e400"],
        ["memory", "cnn", "--optimizer", "adam", "--batch-size", "2", "--device", "cpu", "--precision", "tf32"],
    ],
)
def test_memory_command_rejects_bad_input_with_status_2(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err
    assert "error" in err and "Traceback" not in err


def _with_memory(rows: list[dict]) -> pd.DataFrame:
    """Synthetic records given a memory pass: categories of hand-picked sizes (MiB)."""
    frame = pd.DataFrame(rows)
    sizes = {"parameters": 1, "buffers": 0, "gradients": 1, "inputs": 0.5, "activations": 4, "temporaries": 0.5}
    for name, mib in sizes.items():
        frame[f"tracked_{name}_bytes"] = mib * MIB
    frame["tracked_optimizer_state_bytes"] = frame["optimizer"].map({"adam": 2, "sgdm": 1}) * MIB
    per_sample = frame["batch_size"] * MIB / 32
    frame["tracked_activations_bytes"] = per_sample
    frame["tracked_peak_bytes"] = frame[[f"tracked_{name}_bytes" for name in CATEGORIES]].sum(axis=1)
    frame["predicted_peak_bytes"] = frame["tracked_peak_bytes"] * 1.01
    return frame


def test_memory_figure_stacks_the_exact_categories_up_to_the_tracked_peak():
    frame = _with_memory(synthetic.records())
    ok = frame[frame["status"] == "ok"]
    figure = figures.memory_breakdown_figure(ok)
    axes = figure.axes[0]
    labels = [t.get_text() for legend in figure.legends for t in legend.get_texts()]
    assert labels == list(figures.EXACT_MEMORY_PARTS.values())
    # each case's bars end exactly at its tracked peak
    ends = {}
    for patch in axes.patches:
        y = round(patch.get_y() + patch.get_height() / 2)
        ends[y] = max(ends.get(y, 0), patch.get_x() + patch.get_width())
    assert sorted(ends.values()) == pytest.approx(sorted(ok["tracked_peak_bytes"] / MIB))


def test_predicted_peak_figure_draws_measured_and_predicted_lines_per_series():
    frame = _with_memory(synthetic.records())
    assert memory_figures.has_predicted_sweep(frame)
    figure = memory_figures.predicted_peak_figure(frame)
    lines = figure.axes[0].get_lines()
    solid = [line for line in lines if line.get_linestyle() == "-"]
    dashed = [line for line in lines if line.get_linestyle() == "--"]
    assert len(solid) == len(dashed) >= 1
    for measured, predicted in zip(solid, dashed, strict=True):
        assert list(predicted.get_ydata()) == pytest.approx([1.01 * y for y in measured.get_ydata()])


def test_max_batch_figure_puts_adam_beside_sgdm_with_predicted_ticks():
    frame = pd.DataFrame(
        {
            "model": ["cnn", "cnn", "resnet20", "resnet20"],
            "optimizer": ["adam", "sgdm", "adam", "sgdm"],
            "status": "ok",
            "max_batch_size": [100, 120, 40, 44],
            "max_batch_predicted": [101, 120, 40, 45],
            "max_batch_memory_bytes": 64 * MIB,
        }
    )
    assert memory_figures.has_max_batch(frame)
    axes = memory_figures.max_batch_figure(frame).axes[0]
    heights = sorted(p.get_height() for p in axes.patches)
    assert heights == [40, 44, 100, 120]
    assert "64 MiB" in axes.get_title()


def test_summary_shows_tracked_and_predicted_peaks_and_hides_absent_figures():
    frame = _with_memory(synthetic.records())
    summary = report.readable(report.summary_frame(frame))
    assert list(summary["tracked peak (MiB)"]) == pytest.approx(list(frame["tracked_peak_bytes"] / MIB))
    assert "predicted peak (MiB)" in summary
    assert "largest batch" not in summary and "allocator peak (MiB)" not in summary


def test_the_memory_pass_leaves_compiled_optimizers_alone_and_says_why():
    # On fake tensors a compiled optimizer step crashed the whole run (a segfault).
    import torch

    from bench.kinds.step import memory_pass
    from bench.kinds.step.suite import Case

    def must_not_build(case, out):
        raise AssertionError("the memory pass built a compiled optimizer's case")

    case = Case(
        "cnn", "sgdm-compiled", 2, "fp32", False, False, "synthetic", (1, 28, 28), 10,
        steps=1, warmup=1, repeats=1, detailed=False,
    )  # fmt: skip
    fields = memory_pass.record_fields(case, torch.device("cpu"), must_not_build, {})
    assert fields == {
        "memory_pass_error": "compiled optimizer 'sgdm-compiled': the tracker and the prediction see eager steps only"
    }


def test_find_max_batch_skips_what_it_cannot_search_and_a_failed_search_keeps_the_case(tmp_path, monkeypatch):
    # A compiled optimizer under the CPU's tensor tracker: torch.compile refuses to run under
    # the dispatch mode, and that error had stopped the whole run.
    import torch

    from bench.kinds.step import max_batch, runner
    from bench.kinds.step.suite import Case

    def must_not_build(case, out):
        raise AssertionError("the search built a compiled optimizer's case under the tracker")

    compiled = Case(
        "cnn", "sgdm-compiled", 2, "fp32", False, False, "synthetic", (1, 28, 28), 10,
        steps=1, warmup=1, repeats=1, detailed=False,
    )  # fmt: skip
    fields = max_batch.search_case(compiled, torch.device("cpu"), must_not_build, 2**26)
    assert "max_batch_size" not in fields and fields["max_batch_error"].startswith("compiled optimizer")

    def broken_search(*args, **kwargs):
        raise RuntimeError("torch.compile with fullgraph=True found no compiled frames")

    monkeypatch.setattr(max_batch, "search_case", broken_search)
    eager = Case(
        "cnn", "sgdm", 2, "fp32", False, False, "synthetic", (1, 28, 28), 10,
        steps=1, warmup=1, repeats=1, detailed=False,
    )  # fmt: skip
    context = runner.RunContext("r", "s", torch.device("cpu"), find_max_batch=True, memory_pass=False)
    record = runner.run_case(eager, context)
    assert record.status == "ok" and record.step_time_ms > 0
    assert record.max_batch_error == "RuntimeError: torch.compile with fullgraph=True found no compiled frames"
