"""One case at a time: what run_case measures, and what it records when a case fails."""

import gc
import statistics

import pytest
import torch

import models
from bench.kinds.step import runner
from bench.kinds.step.runner import RunContext, run_case
from bench.kinds.step.suite import Case
from bench.measure import setup
from bench.measure.memory import CudaMeter
from bench.measure.setup import SetupError, check_cases
from bench.measure.timing import CudaClock

CPU = torch.device("cpu")
CONTEXT = RunContext(run_id="r", suite="test", device=CPU, env={"hostname": "h", "cpu": {"model": "a cpu"}})


def case(model="cnn", optimizer="adam", **changes) -> Case:
    spec = models.spec(model)
    fields = dict(
        model=model,
        optimizer=optimizer,
        batch_size=4,
        precision="fp32",
        channels_last=False,
        compile=False,
        dataset="synthetic",
        input_shape=spec.input_shape,
        num_classes=spec.num_classes,
        steps=3,
        warmup=1,
        repeats=2,
        detailed=False,
    )
    return Case(**{**fields, **changes})


def test_a_case_records_its_configuration_timing_and_memory():
    record = run_case(case(), CONTEXT)
    assert record.status == "ok" and record.error is None
    assert record.case_id == "cnn/adam/b4/fp32/cl0/eager/synthetic/1x28x28"
    assert (record.device, record.device_name, record.hostname) == ("cpu", "a cpu", "h")
    assert record.torch_version == torch.__version__
    assert record.hyperparameters == {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8}
    samples = record.step_time_samples_ms
    assert len(samples) == 2 * 3 and all(s > 0 for s in samples)
    assert record.step_time_ms == pytest.approx(statistics.median(samples))
    q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    assert record.step_time_iqr_ms == pytest.approx(q3 - q1)
    assert record.step_time_min_ms == min(samples)
    assert record.throughput == pytest.approx(4 / (statistics.median(samples) / 1e3))
    # The lab CNN's published size (README), fp32: 4 bytes per parameter and per gradient.
    assert record.params == 360_778
    assert record.param_bytes == record.grad_bytes == 4 * 360_778
    assert record.optimizer_state_bytes == 8 * 360_778
    assert (record.state_buffers_per_param, record.state_buffers_theory, record.state_bytes_per_param) == (2, 2, 8)
    assert record.optimizer_state_allocated_bytes is None  # an allocator figure, CUDA only
    assert record.peak_memory_source in ("process_rss", "process_rss_sampled")
    # On the CPU the resident-set figure is kept aside; the activation figure is the tracker's.
    assert record.rss_activation_bytes == record.peak_memory_bytes - record.static_memory_bytes
    assert record.activation_bytes == record.tracked_activations_bytes + record.tracked_temporaries_bytes
    assert record.final_loss > 0


def test_sgdm_keeps_one_buffer_and_four_bytes_per_parameter():
    record = run_case(case(optimizer="sgdm"), CONTEXT)
    assert (record.state_buffers_per_param, record.state_buffers_theory, record.state_bytes_per_param) == (1, 1, 4)
    assert record.hyperparameters == {"lr": 0.01, "momentum": 0.9}


def test_detailed_mode_times_the_three_phases(fault_models):
    record = run_case(case(model="ok-net", detailed=True), CONTEXT)
    assert record.status == "ok"
    assert all(t > 0 for t in (record.forward_ms, record.backward_ms, record.optimizer_ms))
    # Each step sample is the sum of its three phases, so the parts' medians cannot exceed the slowest step.
    assert record.forward_ms + record.backward_ms + record.optimizer_ms <= 3 * max(record.step_time_samples_ms)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_autocast_precisions_train_on_the_cpu(fault_models, precision):
    record = run_case(case(model="ok-net", precision=precision, channels_last=True), CONTEXT)
    assert record.status == "ok", record.error
    assert record.case_id == f"ok-net/adam/b4/{precision}/cl1/eager/synthetic/1x8x8"


def test_out_of_memory_is_recorded_and_its_memory_freed(fault_models):
    record = run_case(case(model="oom-net"), CONTEXT)
    assert record.status == "oom"
    assert "out of memory" in record.error
    assert record.params == 4 * 9 + 4 + 4 * 3 + 3  # measured before the fault, so kept
    assert record.step_time_ms is None and record.throughput is None
    gc.collect()
    assert fault_models.instances and all(ref() is None for ref in fault_models.instances)


def test_a_cublas_allocation_failure_is_out_of_memory_too(fault_models):
    record = run_case(case(model="cublas-oom-net"), CONTEXT)
    assert record.status == "oom"
    assert "CUBLAS_STATUS_ALLOC_FAILED" in record.error


def test_any_other_exception_is_an_error_with_its_message(fault_models):
    record = run_case(case(model="error-net"), CONTEXT)
    assert (record.status, record.error) == ("error", "ValueError: boom")


def test_a_non_finite_loss_is_diverged(fault_models):
    record = run_case(case(model="nan-net"), CONTEXT)
    assert record.status == "diverged"
    assert record.error == "the loss became nan at step 1"


def test_keyboard_interrupt_is_not_swallowed(fault_models):
    with pytest.raises(KeyboardInterrupt):
        run_case(case(model="interrupt-net"), CONTEXT)


class FakeCuda:
    """The slice of torch.cuda that CudaMeter uses, and a stream whose events time the host's work."""

    def __init__(self, allocated: list[int], peak: int) -> None:
        self.log: list[str] = []
        self.allocated = iter(allocated)
        self.current = 0  # the last memory_allocated answer, also the requested bytes (exact tensors)
        self.max_allocated = peak
        self.now = 0.0

    def memory_stats(self, device):
        self.log.append("memory_stats")
        return {"requested_bytes.all.current": self.current, "requested_bytes.all.peak": self.max_allocated - 100}

    def max_memory_reserved(self, device):
        self.log.append("max_memory_reserved")
        return 2 * 10**9

    def memory_allocated(self, device):
        self.log.append("memory_allocated")
        self.current = next(self.allocated)
        return self.current

    def reset_peak_memory_stats(self, device):
        self.log.append("reset_peak_memory_stats")

    def max_memory_allocated(self, device):
        self.log.append("max_memory_allocated")
        return self.max_allocated

    def empty_cache(self):
        self.log.append("empty_cache")

    def event_class(self, enable_timing):
        cuda = self

        class Event:
            def record(self):
                cuda.log.append("record")

            def synchronize(self):
                cuda.log.append("synchronize")

            def elapsed_time(self, other):
                return 1.0

        return Event()


def test_the_cuda_path_reads_the_allocator_and_events_in_the_right_order(monkeypatch, fault_models):
    fake = FakeCuda(allocated=[1_000, 5_000, 5_440, 6_000], peak=10**9)
    monkeypatch.setattr(
        runner,
        "instruments_for",
        lambda device: (CudaClock(fake.event_class), CudaMeter(device, fake, lambda: fake.log.append("clear"))),
    )
    record = run_case(case(model="ok-net", warmup=2, steps=3, repeats=2), CONTEXT)
    assert record.status == "ok", record.error
    # What was allocated before the case began is its own field and no part of its figures.
    assert record.memory_at_case_start_bytes == 1_000
    # The allocator's view of the update that creates the state: the delta around it.
    assert record.optimizer_state_allocated_bytes == record.optimizer_state_requested_bytes == 5_440 - 5_000
    # Adam's m and v of 55 fp32 parameters are 440 bytes: exactly the requested delta.
    assert record.optimizer_state_mismatch is False
    assert record.peak_memory_bytes == 10**9 - 1_000 and record.peak_memory_source == "cuda_max_allocated"
    assert record.params == 55  # conv 4x1x3x3 + 4, linear 3x4 + 3
    # Static: what was in use when the peak counter was reset; activations: the peak above it.
    assert record.static_memory_bytes == 6_000 - 1_000
    assert record.activation_bytes == 10**9 - 6_000
    assert (record.static_memory_requested_bytes, record.peak_memory_requested_bytes) == (5_000, 10**9 - 1_100)
    assert record.peak_memory_reserved_bytes == 2 * 10**9
    assert record.step_time_samples_ms == [1.0] * 6
    # In use at the start; around the update that creates the state (allocated and requested
    # bytes); in use, then the peak reset, after warm-up; per repeat, one event per step
    # boundary and a single synchronize; the peaks read after the last one; the case's memory
    # released (library workspaces, then the cache), again after the memory pass.
    timed = ["record"] * 4 + ["synchronize"]
    reading = ["memory_allocated", "memory_stats"]
    release = ["clear", "empty_cache"]
    assert fake.log == reading * 4 + ["reset_peak_memory_stats"] + timed * 2 + [
        "max_memory_allocated",
        "memory_stats",
        "max_memory_reserved",
        *release,
        *release,
    ]


def test_cases_that_cannot_run_fail_before_any_work():
    with pytest.raises(SetupError, match="tf32.*CUDA"):
        check_cases([case(precision="tf32")], CPU)
    # The MLP flattens exactly 28x28 inputs; CIFAR-10 images do not fit it.
    with pytest.raises(SetupError, match="'mlp'.*3, 32, 32"):
        check_cases([case(model="mlp", dataset="cifar10", input_shape=(3, 32, 32))], CPU)
    check_cases([case(), case(model="resnet20", input_shape=(3, 32, 32))], CPU)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the answer on a machine without CUDA")
def test_devices_resolve_to_what_this_machine_has():
    assert setup.resolve_device("auto") == CPU
    with pytest.raises(SetupError, match="CUDA is not available"):
        setup.resolve_device("cuda:0")
