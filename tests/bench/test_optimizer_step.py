"""Optimizer-step cases and the bandwidth they are placed against: STREAM's byte counts with a
fake clock, the record's figures against closed forms, and ``convbench optim`` end to end."""

import json

import pandas as pd
import pytest
import torch

from bench.cli import main
from bench.kinds.optimizer_step import roofline
from bench.kinds.optimizer_step import runner as optimizer_step
from bench.measure import bandwidth, host, timing
from bench.reporting import figures, report
from bench.storage import history
from bench.storage.store import load_run
from tests.bench.fake_gpu import FakeGpu


class FakeClock:
    """Each stamp is 2 ms after the one before, whatever ran between them (a synchronous clock,
    as the CPU's)."""

    asynchronous = False

    def __init__(self) -> None:
        self.now = 0.0

    def stamp(self) -> float:
        self.now += 2.0
        return self.now

    def wait(self, stamp: object) -> None:
        pass

    def elapsed_ms(self, start: float, end: float) -> float:
        return end - start

    def hold(self, milliseconds: float) -> None:
        pass

    def reached(self, stamp: object) -> bool:
        return True


def calls_per_timing(moved_bytes: int) -> int:
    """Back-to-back calls a bandwidth timing spans: enough to move 128 MiB, at most 200."""
    return min(200, -(-128 * 2**20 // moved_bytes))


def update_rate_gbs(array_bytes: int) -> float:
    """The in-place update's rate on the fake clock: its calls in one 2 ms timing."""
    n_bytes = -(-array_bytes // 4) * 4
    return 3 * n_bytes * calls_per_timing(3 * n_bytes) / 2e-3 / 1e9


def test_stream_rates_count_two_arrays_for_copy_and_three_for_triad():
    result = bandwidth.measure_bandwidth(torch.device("cpu"), array_bytes=4096, repeats=3, clock=FakeClock())
    n_bytes = 4096
    # a timing spans many calls of so small a kernel; the rate counts each call's arrays
    assert result.calls == {"copy": 200, "triad": 200, "update": 200}
    assert result.samples_gbs["copy"] == pytest.approx([2 * n_bytes * 200 / 2e-3 / 1e9] * 3)
    assert result.samples_gbs["triad"] == pytest.approx([3 * n_bytes * 200 / 2e-3 / 1e9] * 3)
    assert result.samples_gbs["update"] == pytest.approx([3 * n_bytes * 200 / 2e-3 / 1e9] * 3)
    assert result.to_dict()["triad_median_gbs"] == pytest.approx(3 * n_bytes * 200 / 2e-3 / 1e9)


def test_dram_sized_arrays_are_timed_one_call_at_a_time():
    result = bandwidth.measure_bandwidth(
        torch.device("cpu"), array_bytes=48 * 2**20, repeats=1, clock=FakeClock(), kernels=("update",)
    )
    assert result.calls == {"update": 1} and list(result.samples_gbs) == ["update"]
    assert result.samples_gbs["update"] == pytest.approx([3 * 48 * 2**20 / 2e-3 / 1e9])


def test_stream_arrays_outsize_the_last_level_cache(monkeypatch):
    monkeypatch.setattr(bandwidth, "last_level_cache_bytes", lambda device: 32 * 2**20)
    assert bandwidth.array_bytes_for(torch.device("cpu")) == 128 * 2**20
    monkeypatch.setattr(bandwidth, "last_level_cache_bytes", lambda device: None)
    assert bandwidth.array_bytes_for(torch.device("cpu")) == bandwidth.MIN_ARRAY_BYTES
    assert bandwidth._parse_cache_size("32768K\n") == 32 * 2**20
    assert bandwidth._parse_cache_size("2M") == 2 * 2**20


@pytest.mark.parametrize("repeats,array_bytes", [(0, 4096), (2, 100)])
def test_stream_refuses_empty_measurements(repeats, array_bytes):
    with pytest.raises(ValueError):
        bandwidth.measure_bandwidth(torch.device("cpu"), array_bytes=array_bytes, repeats=repeats)


def test_a_case_places_its_median_step_against_the_bandwidth():
    measured = bandwidth.Bandwidth("cpu", 4096, "float32", {"copy": [1.0], "triad": [2.0], "update": [8.0, 12.0, 10.0]})
    records = {}
    for name in ("adam", "sgdm"):
        case = optimizer_step.OptimizerStepCase("cnn", name, "fp32", steps=3, warmup=1, repeats=2)
        records[name] = optimizer_step.run_case(
            case, torch.device("cpu"), measured, run_id="r", suite="optim", env={}, device_name="cpu", clock=FakeClock()
        )
    adam, sgdm = records["adam"], records["sgdm"]
    assert adam.status == sgdm.status == "ok"
    params = 360_778  # the lab cnn (README's model table)
    assert adam.params == params and adam.step_time_ms == 2.0 and len(adam.step_time_samples_ms) == 6
    assert adam.compulsory_bytes_per_param == 28 and sgdm.compulsory_bytes_per_param == 20
    # a synchronous clock: the device's time is the wall time
    assert adam.device_time_ms == 2.0 and adam.device_time_source == "wall" and adam.host_bound is None
    assert adam.achieved_bandwidth_gbs == pytest.approx(28 * params / 2e-3 / 1e9)
    assert adam.measured_bandwidth_gbs == 10.0
    assert adam.dram_bandwidth_fraction == pytest.approx(adam.achieved_bandwidth_gbs / 10.0)
    # the limit at the working set: p, g, m, v for Adam (16 B/param), p, g, m for SGDM (12),
    # measured on two arrays of half of it each
    assert (adam.working_set_bytes, sgdm.working_set_bytes) == (16 * params, 12 * params)
    assert adam.working_set_bandwidth_gbs == pytest.approx(update_rate_gbs(8 * params))
    assert sgdm.working_set_bandwidth_gbs == pytest.approx(update_rate_gbs(6 * params))
    assert adam.bandwidth_fraction == pytest.approx(adam.achieved_bandwidth_gbs / adam.working_set_bandwidth_gbs)
    assert adam.wall_bandwidth_fraction == pytest.approx(adam.bandwidth_fraction)
    assert adam.traffic_bytes_per_param == pytest.approx(80, abs=0.01)
    assert adam.optimizer_state_bytes == 2 * sgdm.optimizer_state_bytes == 2 * 4 * params
    assert adam.kind == "optimizer-step" and adam.batch_size is None and adam.case_id == "cnn/adam/optimizer-step/fp32"


def test_a_host_bound_step_keeps_its_device_time_apart_from_its_wall_and_host_time():
    # On the simulated GPU a step of 4 launches costs the host 4 x 0.01 ms to queue and the
    # device 4 x 0.002 ms to run: wall time is the host's 0.04 ms, device time 0.008 ms.
    gpu = FakeGpu(launch_ms=0.01)

    def step():
        gpu.host_work(0.02)  # Python before the launches: grouping tensors, building lists
        for _ in range(4):
            gpu.launch(0.002)

    times = optimizer_step.time_step(step, timing.CudaClock(gpu.event_class, gpu.sleep), 10, 3, now=gpu.now)
    assert timing.summarize(times.wall_ms).median == pytest.approx(0.06)
    assert times.host_ms == pytest.approx([0.06] * 30)
    assert (times.device_source, times.device_steps) == ("queued", 10)
    assert times.device_ms == pytest.approx([0.008] * 3)

    # The record's figures: bandwidth on device time, the wall-time fraction beside it, and
    # a step whose device time is under 0.9 x its wall time is host-bound.
    out = {"params": 1000, "step_time_ms": 0.06, "device_time_ms": 0.008}
    out |= {"measured_bandwidth_gbs": 5.0, "working_set_bandwidth_gbs": 8.0}
    figures = optimizer_step.bandwidth_figures(28 * 1000, 72.0, out)
    assert figures["achieved_bandwidth_gbs"] == pytest.approx(28e3 / 0.008e-3 / 1e9)
    assert figures["traffic_bandwidth_gbs"] == pytest.approx(72e3 / 0.008e-3 / 1e9)
    assert figures["bandwidth_fraction"] == pytest.approx(28e3 / 0.008e-3 / 1e9 / 8.0)
    assert figures["dram_bandwidth_fraction"] == pytest.approx(28e3 / 0.008e-3 / 1e9 / 5.0)
    assert figures["wall_bandwidth_fraction"] == pytest.approx(28e3 / 0.06e-3 / 1e9 / 8.0)
    assert host.host_fields(times.host_ms, device_busy_ms=0.008, device_span_ms=0.06)["host_bound"] is True


def test_a_step_that_syncs_every_time_has_no_queued_device_time():
    gpu = FakeGpu(launch_ms=0.01)

    def step():
        gpu.launch(0.002)
        event = gpu.event_class()
        event.record()
        event.synchronize()  # .item() on a device tensor

    times = optimizer_step.time_step(step, timing.CudaClock(gpu.event_class, gpu.sleep), 4, 2, now=gpu.now)
    assert (times.device_ms, times.device_source) == ([], None)  # the caller falls back on the profiler


def test_on_the_cpu_wall_host_and_device_time_coincide():
    # One processor queues and runs the kernels: the device's time is the wall time, and the
    # host clock around each call agrees with the stamps between calls.
    measured = bandwidth.Bandwidth("cpu", 4096, "float32", {"update": [10.0]})
    case = optimizer_step.OptimizerStepCase("cnn", "sgdm", "fp32", steps=5, warmup=1, repeats=3)
    record = optimizer_step.run_case(
        case, torch.device("cpu"), measured, run_id="r", suite="o", env={}, device_name="cpu"
    )
    assert record.status == "ok", record.error
    assert record.device_time_source == "wall" and record.device_time_samples_ms == record.step_time_samples_ms
    assert record.host_time_ms == pytest.approx(record.step_time_ms, rel=0.05)
    assert record.host_bound is None  # not judged where host and device are one
    assert record.bandwidth_fraction == pytest.approx(record.wall_bandwidth_fraction)


def test_a_failing_implementation_is_recorded_and_named(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no kernel for this dtype")

    monkeypatch.setattr(optimizer_step, "_parameters", broken)
    case = optimizer_step.OptimizerStepCase("cnn", "adam", "fp16")
    measured = bandwidth.Bandwidth("cpu", 4096, "float32", {"update": [1.0]})
    record = optimizer_step.run_case(case, torch.device("cpu"), measured, run_id="r", suite="o", env={}, device_name="")
    assert record.status == "error" and "no kernel for this dtype" in record.error


def test_bad_cases_are_refused_by_name():
    with pytest.raises(ValueError, match="precision 'tf32'"):
        optimizer_step.cases(["cnn"], ["adam"], ["tf32"])
    with pytest.raises(ValueError, match="unknown optimizer 'adamw'"):
        optimizer_step.cases(["cnn"], ["adamw"], ["fp32"])
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        optimizer_step.cases(["cnn"], ["adam"], ["fp32"], steps=0)


def test_roofline_figure_keeps_a_failed_case_in_its_place():
    frame = pd.DataFrame(
        [
            dict(
                model="cnn",
                optimizer="adam",
                precision="fp32",
                status="ok",
                achieved_bandwidth_gbs=5.0,
                traffic_bandwidth_gbs=14.0,
                bandwidth_fraction=0.5,
                measured_bandwidth_gbs=10.0,
            ),
            dict(
                model="cnn",
                optimizer="torch-adam-fused",
                precision="fp32",
                status="error",
                achieved_bandwidth_gbs=None,
                traffic_bandwidth_gbs=None,
                bandwidth_fraction=None,
                measured_bandwidth_gbs=10.0,
            ),
            dict(
                model="cnn",
                optimizer="sgdm",
                precision="fp32",
                status="ok",
                achieved_bandwidth_gbs=8.0,
                traffic_bandwidth_gbs=12.8,
                bandwidth_fraction=0.8,
                measured_bandwidth_gbs=10.0,
            ),
        ]
    )
    figure = figures.roofline_figure(frame)
    axes = figure.axes[0]
    assert [t.get_text() for t in axes.get_xticklabels()] == ["adam", "torch-adam-fused", "sgdm"]
    assert any(t.get_text() == "error" for t in axes.texts)
    # each ok case's own measured limit is drawn across its bar; the failed one has none
    assert [segments[0][0][1] for segments in (c.get_segments() for c in axes.collections) if segments] == [
        10.0,
        10.0,
    ]


def test_convbench_optim_writes_a_run_folder_report_and_history(tmp_path, capsys):
    code = main(
        [
            "optim",
            "--models",
            "cnn",
            "--optimizers",
            "adam,sgdm-foreach",
            "--device",
            "cpu",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--repeats",
            "2",
            "--bandwidth-mib",
            "1",
            "--results",
            str(tmp_path),
            "--run-id",
            "o1",
        ]
    )
    assert code == 0
    run = load_run(tmp_path / "o1")
    frame = run.frame()
    assert list(frame["case_id"]) == ["cnn/adam/optimizer-step/fp32", "cnn/sgdm-foreach/optimizer-step/fp32"]
    assert (frame["status"] == "ok").all() and run.manifest["status"] == "complete"
    measured = json.loads((tmp_path / "o1" / "bandwidth.json").read_text())
    assert frame["measured_bandwidth_gbs"].tolist() == [measured[c]["update_median_gbs"] for c in frame["case_id"]]
    assert (tmp_path / "o1" / "figures" / "roofline.png").is_file()
    assert "throughput" not in {p.stem for p in (tmp_path / "o1" / "figures").iterdir()}
    assert "of bandwidth (%)" in (tmp_path / "o1" / "summary.md").read_text()
    assert list(history.runs(tmp_path / "history.sqlite")["run_id"]) == ["o1"]
    assert "achieved (GB/s)" in capsys.readouterr().out

    # Exports: step times, never a throughput an optimizer step does not have.
    export = ["export", str(tmp_path / "o1"), "--history", str(tmp_path / "history.sqlite")]
    assert main([*export, "--format", "github-action-benchmark", "--metric", "step_time"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert [e["value"] for e in entries] == frame["step_time_ms"].tolist() and {e["unit"] for e in entries} == {"ms"}
    assert main([*export, "--format", "github-action-benchmark"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == [] and "run o1 has no ok case with a throughput" in err
    assert main([*export, "--format", "pytest-benchmark"]) == 0
    session = json.loads(capsys.readouterr().out)
    medians = [b["stats"]["median"] * 1e3 for b in session["benchmarks"]]
    assert medians == pytest.approx([float(pd.Series(s).median()) for s in frame["step_time_samples_ms"]])
    assert {b["params"]["batch_size"] for b in session["benchmarks"]} == {None}


def step_row(model: str, optimizer: str, precision: str, **figures: object) -> dict:
    """An ok optimizer-step record as a report reads it, with the given figures."""
    row = dict(kind="optimizer-step", case_id=f"{model}/{optimizer}/optimizer-step/{precision}", device="cpu")
    return row | dict(model=model, optimizer=optimizer, precision=precision, status="ok") | figures


def test_the_roofline_has_a_panel_for_every_model_and_precision():
    rows = [
        step_row(m, o, p, achieved_bandwidth_gbs=a, bandwidth_fraction=a / 10, wall_bandwidth_fraction=a / 20)
        | dict(measured_bandwidth_gbs=10.0, working_set_bandwidth_gbs=10.0)
        for m, a in (("cnn", 4.0), ("resnet18", 6.0))
        for o in ("adam", "sgdm")
        for p in ("fp32", "bf16")
    ]
    figure = figures.roofline_figure(pd.DataFrame(rows))
    panels = [axes for axes in figure.axes if axes.get_title()]
    assert [axes.get_title() for axes in panels] == ["cnn, fp32", "cnn, bf16", "resnet18, fp32", "resnet18, bf16"]
    for axes, expected in zip(panels, (4.0, 4.0, 6.0, 6.0), strict=True):
        solid = [bar.get_height() for bar in axes.patches if bar.get_width() == pytest.approx(0.8) and bar.get_fill()]
        wall = [bar.get_height() for bar in axes.patches if bar.get_width() == pytest.approx(0.36)]
        assert solid == [expected, expected] and wall == pytest.approx([expected / 2] * 2)
        labels = [text.get_text() for text in axes.texts]
        assert labels == [f"{10 * expected:.0f}%\nwall {5 * expected:.0f}%"] * 2


def test_a_percentage_above_100_says_which_limit_it_exceeds_and_why():
    mib = 2**20
    frame = pd.DataFrame(
        [
            step_row(
                "cnn",
                "adam",
                "fp32",
                dram_bandwidth_fraction=1.54,
                bandwidth_fraction=0.88,
                wall_bandwidth_fraction=0.88,
                measured_bandwidth_gbs=45.0,
                working_set_bandwidth_gbs=78.8,
                working_set_bytes=5.5 * mib,
                last_level_cache_bytes=32 * mib,
            ),
            step_row(
                "resnet18",
                "torch-sgdm-fused",
                "fp32",
                dram_bandwidth_fraction=1.02,
                bandwidth_fraction=1.03,
                wall_bandwidth_fraction=1.03,
                measured_bandwidth_gbs=45.0,
                working_set_bandwidth_gbs=44.6,
                working_set_bandwidth_samples_gbs=[40.0, 44.6, 49.0],
                working_set_bytes=134 * mib,
                last_level_cache_bytes=32 * mib,
            ),
            step_row("resnet18", "adam", "fp32", dram_bandwidth_fraction=0.3, bandwidth_fraction=0.3),
        ]
    )
    notes = roofline.limit_notes(frame)
    assert notes == [
        "cnn/adam/optimizer-step/fp32: 154% of the DRAM-sized bandwidth (45.0 GB/s): its working set (5.5 MiB) "
        "fits the last-level cache (32.0 MiB), where the same kernel measured 78.8 GB/s.",
        "resnet18/torch-sgdm-fused/optimizer-step/fp32: 102% of the DRAM-sized bandwidth (45.0 GB/s): its working "
        "set (134.0 MiB) does not fit the last-level cache (32.0 MiB), where the same kernel measured 44.6 GB/s.",
        "resnet18/torch-sgdm-fused/optimizer-step/fp32: 103% of the bandwidth measured at its working set's size "
        "(44.6 GB/s, the median of its timings, which ranged 40.0–49.0 GB/s): that limit was timed at another "
        "moment than the step, with one kernel streaming two arrays where the step streams four or more.",
    ]
    # and the figure marks the percentage and carries the notes
    figure = figures.roofline_figure(frame, notes)
    assert any(text.get_text().endswith("%*") for axes in figure.axes for text in axes.texts)
    assert "78.8 GB/s" in figure.get_supxlabel() and "does not fit" in figure.get_supxlabel()


def test_records_from_before_device_time_keep_their_wall_time_figures_only():
    # Their bandwidth figures were on wall time against the DRAM-sized limit.
    old = dict(bandwidth_fraction=0.25, achieved_bandwidth_gbs=722.0, step_time_ms=0.99)
    frame = pd.DataFrame(
        [
            step_row("resnet50", "torch-adam-fused", "fp32", **old) | dict(device="cuda:0"),
            step_row("resnet18", "torch-adam-fused", "fp32", **old) | dict(device="cpu"),
        ]
    )
    read = roofline.optimizer_step_frame(frame)
    assert read["wall_bandwidth_fraction"].tolist() == [0.25, 0.25]
    gpu, cpu = read.iloc[0], read.iloc[1]
    assert pd.isna(gpu["achieved_bandwidth_gbs"]) and pd.isna(gpu["bandwidth_fraction"])
    assert pd.isna(gpu["device_time_ms"]) and pd.isna(gpu["dram_bandwidth_fraction"])
    assert (cpu["device_time_ms"], cpu["dram_bandwidth_fraction"], cpu["achieved_bandwidth_gbs"]) == (0.99, 0.25, 722.0)
    summary = report.summary_frame(frame, roofline.optimizer_step_frame)
    assert summary["of bandwidth in wall time (%)"].tolist() == [25.0, 25.0]
    assert summary["of bandwidth (%)"].isna().all()


def test_host_time_shows_for_optimizer_steps_only():
    frame = pd.DataFrame(
        [
            step_row("cnn", "adam", "fp32", host_time_ms=0.5),
            dict(kind="training-step", model="cnn", optimizer="adam", status="ok", host_time_ms=9.0),
        ]
    )
    assert report.summary_frame(frame, roofline.optimizer_step_frame)["host time (ms)"].tolist()[0] == 0.5
    assert pd.isna(report.summary_frame(frame, roofline.optimizer_step_frame)["host time (ms)"].tolist()[1])


def test_optim_over_two_models_writes_its_report(tmp_path, capsys):
    flags = ["--steps", "1", "--warmup", "1", "--repeats", "1", "--bandwidth-mib", "1"]
    flags += ["--results", str(tmp_path), "--run-id", "two"]
    command = ["optim", "--models", "cnn,resnet18", "--optimizers", "adam,torch-adam-fused", "--device", "cpu"]
    assert main([*command, *flags]) == 0
    assert "the report failed" not in capsys.readouterr().err
    run_dir = tmp_path / "two"
    assert len(load_run(run_dir).records) == 4 and (run_dir / "figures" / "roofline.png").is_file()
    (run_dir / "report.html").unlink()
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "report.html").is_file()
    assert "resnet18" in (run_dir / "summary.md").read_text()


def test_convbench_optim_refuses_bad_input_before_any_folder(tmp_path, capsys):
    assert main(["optim", "--precision", "fp64", "--results", str(tmp_path), "--device", "cpu"]) == 2
    assert "precision 'fp64' is not one of fp32, bf16, fp16" in capsys.readouterr().err
    assert main(["optim", "--models", "resnet19", "--results", str(tmp_path), "--device", "cpu"]) == 2
    assert "unknown model 'resnet19'" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_a_cublas_allocation_failure_is_out_of_memory_as_in_a_training_case(monkeypatch):
    def no_workspace(*args, **kwargs):
        raise RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`")

    monkeypatch.setattr(optimizer_step, "_parameters", no_workspace)
    case = optimizer_step.OptimizerStepCase("cnn", "adam", "fp32")
    measured = bandwidth.Bandwidth("cpu", 4096, "float32", {"update": [1.0]})
    record = optimizer_step.run_case(case, torch.device("cpu"), measured, run_id="r", suite="o", env={}, device_name="")
    assert record.status == "oom" and "CUBLAS_STATUS_ALLOC_FAILED" in record.error


def test_sigterm_between_optimizer_cases_keeps_the_first_and_marks_the_run_incomplete(tmp_path, capsys, monkeypatch):
    import os
    import signal

    measure = bandwidth.measure_bandwidth
    calls = []

    def second_call_is_stopped(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # as the second case begins
            os.kill(os.getpid(), signal.SIGTERM)
        return measure(*args, **kwargs)

    monkeypatch.setattr(bandwidth, "measure_bandwidth", second_call_is_stopped)
    flags = ["--models", "cnn", "--optimizers", "adam,sgdm", "--device", "cpu", "--steps", "1", "--warmup", "1"]
    flags += ["--repeats", "1", "--bandwidth-mib", "1", "--results", str(tmp_path), "--run-id", "o2"]
    assert main(["optim", *flags]) == 143
    run = load_run(tmp_path / "o2")
    assert list(run.frame()["case_id"]) == ["cnn/adam/optimizer-step/fp32"]
    assert (run.manifest["status"], run.manifest["stopped_by"]) == ("incomplete", "SIGTERM")
    assert history.runs(tmp_path / "history.sqlite")["status"].tolist() == ["incomplete"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert "Traceback" not in capsys.readouterr().err


def test_a_failure_between_cases_closes_the_run_with_what_it_measured(tmp_path, capsys, monkeypatch):
    measure = bandwidth.measure_bandwidth
    calls = []

    def second_call_fails(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory")
        return measure(*args, **kwargs)

    monkeypatch.setattr(bandwidth, "measure_bandwidth", second_call_fails)
    flags = ["--models", "cnn", "--optimizers", "adam,sgdm", "--device", "cpu", "--steps", "1", "--warmup", "1"]
    flags += ["--repeats", "1", "--bandwidth-mib", "1", "--results", str(tmp_path), "--run-id", "o3"]
    assert main(["optim", *flags]) == 1
    run = load_run(tmp_path / "o3")
    assert list(run.frame()["case_id"]) == ["cnn/adam/optimizer-step/fp32"]
    assert run.manifest["status"] == "incomplete" and "can't allocate memory" in run.manifest["stopped_by"]
    assert history.runs(tmp_path / "history.sqlite")["status"].tolist() == ["incomplete"]
    assert "stopped: RuntimeError" in capsys.readouterr().err


def test_optim_warns_when_the_machine_is_busy_as_run_does(tmp_path, capsys, monkeypatch):
    import os

    from bench.storage import store

    monkeypatch.setattr(store, "load_average", lambda: 8.0 * (os.cpu_count() or 1))
    flags = ["--models", "cnn", "--optimizers", "sgdm", "--device", "cpu", "--steps", "1", "--warmup", "1"]
    assert main(["optim", *flags, "--repeats", "1", "--bandwidth-mib", "1", "--results", str(tmp_path)]) == 0
    assert "convbench optim: warning: the machine is busy (load average" in capsys.readouterr().err
