"""Host syncs, host time and the host-bound flag (bench.measure.host), on the CPU; CUDA parts with fakes
for the device only."""

import types
import warnings

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import models
import optimizers
from bench.kinds.step.runner import RunContext, run_case
from bench.kinds.step.suite import Case
from bench.measure import host

CPU = torch.device("cpu")
CONTEXT = RunContext(run_id="r", suite="test", device=CPU, env={"hostname": "h"})


def case(optimizer="adam", precision="fp32", **changes) -> Case:
    fields = dict(
        model="mlp",
        optimizer=optimizer,
        batch_size=2,
        precision=precision,
        channels_last=False,
        compile=False,
        dataset="synthetic",
        input_shape=(1, 28, 28),
        num_classes=10,
        steps=1,
        warmup=1,
        repeats=1,
        detailed=False,
    )
    return Case(**{**fields, **changes})


@pytest.mark.parametrize(
    "optimizer, precision, syncs",
    [
        # GradScaler._maybe_opt_step reads found_inf with .item() unless the optimizer is fused.
        ("adam", "fp16", 1),
        ("torch-adam-fused", "fp16", 0),
        # torch.optim's for-loop Adam reads its step counters with .item(), but they live on
        # the host in a CUDA run too.
        ("torch-adam", "fp32", 0),
    ],
)
def test_every_case_records_the_host_syncs_of_a_step(optimizer, precision, syncs):
    record = run_case(case(optimizer, precision), CONTEXT)
    assert record.status == "ok", record.error
    assert (record.host_syncs_per_step, record.host_syncs_source) == (syncs, "host_reads")
    # CUDA-only figures are absent, not zero, on the CPU.
    assert record.kernel_launches_per_step is record.device_busy_ms is record.host_bound is None
    assert record.telemetry_source is record.energy_per_step_j is record.gpu_power_w_samples is None


def _step(optimizer_name: str, precision: str):
    torch.manual_seed(0)
    model = models.build("cnn")
    optimizer = optimizers.build(optimizer_name, model.parameters())
    scaler = torch.amp.GradScaler("cpu", enabled=precision == "fp16")
    images, labels = torch.randn(2, 1, 28, 28), torch.randint(0, 10, (2,))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.float16, enabled=precision == "fp16"):
            loss = torch.nn.functional.cross_entropy(model(images), labels)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=False)

    step()  # creates the state
    return step, optimizer, model


class ScalarReads(TorchDispatchMode):
    """An independent count, one level down: the dispatcher's ``_local_scalar_dense``
    (what item, float and bool run), with the tensors it read."""

    def __init__(self) -> None:
        super().__init__()
        self.read = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.read.append(args[0])
        return func(*args, **(kwargs or {}))


def test_the_counter_agrees_with_the_dispatchers_scalar_reads():
    step, optimizer, model = _step("torch-adam", "fp16")
    resident = host.host_resident_tensors(optimizer)
    with ScalarReads() as reads, host.HostReadCounter(resident) as counter:
        step()
    on_device = [t for t in reads.read if id(t) not in resident]
    # Adam reads each parameter's step counter (host-resident); GradScaler reads found_inf.
    assert len(reads.read) > len(list(model.parameters()))
    assert len(on_device) == 1 and on_device[0].numel() == 1
    assert counter.counts == {"item": 1}


def test_host_reads_and_data_dependent_shapes_count_and_async_copies_do_not():
    t = torch.arange(4.0)
    with host.HostReadCounter() as counter:
        float(t.sum())
        bool(t.sum() > 0)
        t.tolist()
        t.nonzero()
        t[t > 1]
        t.to("cpu")
        t.to(device=torch.device("cpu"), non_blocking=True)  # no wait
        t.to(torch.float64)  # no copy to the host
        t[1:3]  # no mask
        t * 2
    assert counter.counts == {"__float__": 1, "__bool__": 1, "tolist": 1, "nonzero": 1, "__getitem__": 1, "to": 1}


class FakeCuda(types.SimpleNamespace):
    """torch.cuda's sync debug mode, without a device: keeps the mode it is set to."""

    def __init__(self) -> None:
        super().__init__(mode=0, modes=[])

    def get_sync_debug_mode(self) -> int:
        return self.mode

    def set_sync_debug_mode(self, mode) -> None:
        self.modes.append(mode)
        self.mode = {"default": 0, "warn": 1}.get(mode, mode)


def test_on_cuda_syncs_are_the_debug_modes_warnings_and_the_mode_comes_back():
    cuda = FakeCuda()
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)

    def step() -> None:
        assert cuda.mode == 1  # warning on every synchronising call while the step runs
        warnings.warn(host.SYNC_WARNING + " (cudaStreamSynchronize)", UserWarning, stacklevel=1)
        warnings.warn(host.SYNC_WARNING + " (cudaStreamSynchronize)", UserWarning, stacklevel=1)
        warnings.warn("something else", UserWarning, stacklevel=1)

    count, source = host.count_host_syncs(step, torch.device("cuda", 0), optimizer, cuda=cuda)
    assert (count, source) == (2, "cuda_sync_debug_mode")
    assert cuda.modes == ["warn", 0] and cuda.mode == 0


def _event(name, start, end, on_device=True):
    device_type = torch.autograd.DeviceType.CUDA if on_device else torch.autograd.DeviceType.CPU
    return types.SimpleNamespace(
        name=name, device_type=device_type, time_range=types.SimpleNamespace(start=start, end=end)
    )


def test_device_activity_counts_launches_and_merges_overlapping_busy_intervals():
    events = [
        _event("cudaLaunchKernel", 0, 2, on_device=False),
        _event("cuLaunchKernel", 3, 4, on_device=False),
        _event("aten::add", 0, 9, on_device=False),  # host time is not device time
        _event("kernel_a", 10, 20),
        _event("kernel_b", 15, 30),  # overlaps a: 10..30 is 20 µs
        _event("Memcpy DtoH", 40, 45),  # 5 µs
    ]
    assert host.device_activity(events) == host.DeviceActivity(2, pytest.approx(0.025), pytest.approx(0.035))
    # Without the runtime's launch calls in the trace, the kernels the device ran are counted.
    assert host.device_activity(events[3:]).launches == 2


def _trace(kernels: int, kernel_us: float, gap_us: float) -> list:
    """A profiled step: ``kernels`` launches, each kernel ``kernel_us`` long, ``gap_us`` apart."""
    events, now = [], 0.0
    for index in range(kernels):
        events.append(_event("cudaLaunchKernel", now, now + 1, on_device=False))
        events.append(_event(f"kernel_{index}", now + 5, now + 5 + kernel_us))
        now += kernel_us + gap_us
    return events


def test_a_case_is_host_bound_when_the_device_idles_more_than_a_tenth_of_the_profiled_step():
    # A textbook Adam's thousands of tiny kernels, each launched after the last has finished:
    # the device is busy 64.4 ms of 89.6 ms. Profiling slowed the step beyond its unprofiled
    # 47.5 ms, so only against the profiled step's own span does the idling show.
    idle = host.device_activity(_trace(kernels=3_220, kernel_us=20.0, gap_us=7.8))
    assert idle.busy_ms == pytest.approx(64.4) and idle.busy_ms > 47.5
    fields = host.host_fields([1.0, 3.0, 2.0], idle.busy_ms, idle.span_ms)
    assert fields == {"host_time_ms": 2.0, "host_bound": True}
    # Kernels queued back to back (the host far ahead): busy for the whole span.
    busy = host.device_activity(_trace(kernels=1_462, kernel_us=49.0, gap_us=0.0))
    assert host.host_fields([70.0], busy.busy_ms, busy.span_ms)["host_bound"] is False
    assert host.host_fields([9.0], device_busy_ms=None, device_span_ms=None)["host_bound"] is None


def test_host_time_is_inside_the_step_time_on_the_cpu():
    """On the CPU the harness's clock stamps around each step and the host timer inside it,
    so each step's host time is at most its step time, and so is the median."""
    record = run_case(case("sgdm", detailed=True), CONTEXT)
    assert 0 < record.host_time_ms <= record.step_time_ms


def test_the_host_timer_keeps_each_steps_phases_summed():
    calls = []
    timer = host.HostTimer([lambda: calls.append("a"), lambda: calls.append("b")])
    for _ in range(3):
        for phase in timer.phases:
            phase()
    assert calls == ["a", "b"] * 3
    per_step = timer.per_step_ms()
    assert len(per_step) == 3
    assert per_step == [a + b for a, b in zip(*timer.samples_ms, strict=True)]
