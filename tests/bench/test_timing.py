"""Step timing: statistics against hand-computed values, host and CUDA clocks against fakes."""

import statistics

import pytest

from bench.measure import timing
from bench.measure.timing import CudaClock, HostClock, queued_span_ms, queued_times, summarize, time_steps
from tests.bench.fake_gpu import FakeGpu


def test_statistics_of_an_even_number_of_samples_by_hand():
    # sorted 1 2 3 4: median (2 + 3) / 2; quartiles at ranks 0.75 and 2.25 -> 1.75 and 3.25
    summary = summarize([4.0, 1.0, 3.0, 2.0])
    assert (summary.median, summary.iqr, summary.min, summary.count) == (2.5, 1.5, 1.0, 4)


def test_statistics_of_an_odd_number_of_samples_by_hand():
    # sorted 1 3 5 7 9 100: the outlier moves neither the median nor the quartiles much
    summary = summarize([9.0, 1.0, 100.0, 5.0, 3.0, 7.0])
    assert summary.median == 6.0
    assert summary.iqr == pytest.approx(8.5 - 3.5)  # ranks 1.25 and 3.75
    assert summary.min == 1.0


@pytest.mark.parametrize("samples", [[5.0], [2.0, 2.0], [0.3, 0.1, 0.2, 0.9, 0.4, 0.8, 0.5]])
def test_statistics_agree_with_the_standard_library(samples):
    summary = summarize(samples)
    assert summary.median == pytest.approx(statistics.median(samples))
    if len(samples) > 1:
        q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
        assert summary.iqr == pytest.approx(q3 - q1)
    else:
        assert summary.iqr == 0


def test_no_samples_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        summarize([])


def test_host_clock_times_each_phase_of_each_step(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(timing.time, "perf_counter", lambda: now[0])

    def advance(seconds):
        return lambda: now.__setitem__(0, now[0] + seconds)

    per_phase = time_steps([advance(0.001), advance(0.004)], steps=3, clock=HostClock())
    assert per_phase == [[pytest.approx(1.0)] * 3, [pytest.approx(4.0)] * 3]


class FakeStream:
    """A GPU stream: work queued by the host runs in order, starting no earlier than it was
    queued; an event's time is when the stream reaches it. Reading an elapsed time before
    the host has waited for the later event fails, as cudaEventElapsedTime does."""

    def __init__(self):
        self.host = 0.0  # host time, ms
        self.gpu = 0.0  # when the stream will be idle, ms
        self.synchronized = 0

    def launch(self, host_ms, gpu_ms):
        self.host += host_ms
        self.gpu = max(self.gpu, self.host) + gpu_ms

    def event_class(self, enable_timing):
        assert enable_timing
        stream = self

        class Event:
            def record(self):
                self.time = max(stream.gpu, stream.host)

            def synchronize(self):
                stream.synchronized += 1
                stream.host = max(stream.host, self.time)

            def elapsed_time(self, end):
                if not stream.synchronized or end.time > stream.host:
                    raise RuntimeError("cudaErrorNotReady")
                return end.time - self.time

        return Event()


def test_cuda_clock_uses_events_and_synchronizes_once(monkeypatch):
    def no_host_clock():
        raise AssertionError("the host clock was read around asynchronous work")

    monkeypatch.setattr(timing.time, "perf_counter", no_host_clock)
    stream = FakeStream()
    forward = lambda: stream.launch(host_ms=0.1, gpu_ms=5.0)  # noqa: E731
    backward = lambda: stream.launch(host_ms=0.1, gpu_ms=10.0)  # noqa: E731
    per_phase = time_steps([forward, backward], steps=4, clock=CudaClock(stream.event_class))
    assert stream.synchronized == 1
    # The host runs ahead; the GPU's own timeline gives each phase its real length. The first
    # forward also waited 0.1 ms for the host to queue it.
    assert per_phase[0] == pytest.approx([5.1, 5.0, 5.0, 5.0])
    assert per_phase[1] == pytest.approx([10.0] * 4)


def test_cuda_clock_counts_time_the_gpu_waits_for_the_host():
    stream = FakeStream()
    slow_host = lambda: stream.launch(host_ms=3.0, gpu_ms=1.0)  # noqa: E731
    (samples,) = time_steps([slow_host], steps=3, clock=CudaClock(stream.event_class))
    # A host-bound loop: each step takes the host's 3 ms, not the GPU's 1 ms.
    assert samples == pytest.approx([4.0, 3.0, 3.0])


# Device time with the host far ahead, on the simulated stream of tests/bench/fake_gpu.py.


def kernels(gpu: FakeGpu, count: int, device_ms: float):
    """A step of ``count`` kernel launches, each needing ``device_ms`` of the device."""

    def step():
        for _ in range(count):
            gpu.launch(device_ms)

    return step


def test_queued_steps_time_the_device_where_the_host_is_slower():
    gpu = FakeGpu(launch_ms=0.01)
    clock = CudaClock(gpu.event_class, gpu.sleep)
    step = kernels(gpu, 4, 0.002)  # the host needs 0.04 ms to queue a step, the device 0.008 to run it
    (wall,) = time_steps([step], steps=10, clock=clock)
    assert wall[1:] == pytest.approx([0.04] * 9)  # in program order the device waits for the host
    samples, count = queued_times(step, count=10, repeats=3, clock=clock, host_ms_per_call=0.04)
    assert count == 10 and samples == pytest.approx([0.008] * 3)


def test_queued_steps_of_a_device_bound_step_are_its_wall_time():
    gpu = FakeGpu(launch_ms=0.001)
    clock = CudaClock(gpu.event_class, gpu.sleep)
    step = kernels(gpu, 4, 0.01)
    (wall,) = time_steps([step], steps=10, clock=clock)
    samples, _ = queued_times(step, count=10, repeats=2, clock=clock, host_ms_per_call=0.004)
    assert samples == pytest.approx([0.04] * 2) and wall[1:] == pytest.approx([0.04] * 9)


def test_a_full_launch_queue_makes_the_span_unclean_and_fewer_steps_are_queued():
    # 20 steps of 4 launches cannot wait behind the delay in a queue of 25: the host blocks
    # until the device drains it, so the device catches up; 5 steps (20 launches) fit.
    gpu = FakeGpu(launch_ms=0.01, queue_depth=25)
    clock = CudaClock(gpu.event_class, gpu.sleep)
    step = kernels(gpu, 4, 0.002)
    assert queued_span_ms(step, 20, clock, hold_ms=10.0) is None
    samples, count = queued_times(step, count=20, repeats=2, clock=clock, host_ms_per_call=0.04)
    assert count == 5 and samples == pytest.approx([0.008] * 2)


def test_a_step_that_waits_for_the_device_never_gets_ahead_of_it():
    gpu = FakeGpu(launch_ms=0.01)
    clock = CudaClock(gpu.event_class, gpu.sleep)

    def syncing_step():  # e.g. an .item() on a device tensor
        gpu.launch(0.002)
        event = gpu.event_class()
        event.record()
        event.synchronize()

    assert queued_times(syncing_step, count=8, repeats=2, clock=clock, host_ms_per_call=0.01) is None


def test_a_hold_too_short_for_the_host_is_not_taken_for_device_time():
    gpu = FakeGpu(launch_ms=0.01)
    clock = CudaClock(gpu.event_class, gpu.sleep)
    step = kernels(gpu, 4, 0.002)
    assert queued_span_ms(step, 10, clock, hold_ms=0.1) is None  # the host needs 0.4 ms to queue them
    assert queued_span_ms(step, 10, clock, hold_ms=1.0) == pytest.approx(0.008)
