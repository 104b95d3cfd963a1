"""The exact memory breakdown: torch's MemTracker as relied on, categories against hand-counted
bytes, measured against predicted, and the largest-batch search."""

import pytest
import torch
from torch import nn

import models
import optimizers
from bench.kinds.step import max_batch, memory_pass
from bench.kinds.step.runner import RunContext, build, run_case
from bench.kinds.step.suite import Case
from bench.measure import memory_breakdown
from bench.measure.memory_breakdown import CATEGORIES, track_step
from tests.bench.test_runner import case

CPU = torch.device("cpu")
CONTEXT = RunContext(run_id="r", suite="test", device=CPU)
F32 = 4  # bytes per float32 element
I64 = 8


def make_case(model="cnn", optimizer="sgdm", batch_size=2, **changes) -> Case:
    """A one-step case of ``model`` at its natural input (test_runner's, smaller)."""
    return case(model, optimizer, batch_size=batch_size, steps=1, repeats=1, **changes)


def runner_build(case: Case, out: dict):
    return build(case, CONTEXT, out)


def test_torch_ships_the_tracker_this_module_relies_on():
    # MemTracker is not public API: its existence and the members used here are pinned.
    from torch.distributed._tools.mem_tracker import MemTracker

    assert memory_breakdown.available()
    for member in ("_WINFO", "_curr_mem_snap", "_peak_mem", "_in_opt", "_mod_tracker", "_update_peak_stats"):
        assert hasattr(MemTracker(), member), member


class _Chain(nn.Module):
    """x -> x W -> relu; the loss is the sum. Autograd saves x and W for the product and the
    relu's output for its backward; nothing else of size."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.weight).relu()


def test_categories_match_a_hand_count_of_a_two_operator_step():
    batch, width = 64, 8
    model = _Chain(width)
    optimizer = optimizers.build("sgdm", model.parameters())
    x = torch.randn(batch, width)

    def step() -> None:
        model(x).sum().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)

    step()
    result = track_step(model, optimizer, step, CPU)
    square, rows = width * width * F32, batch * width * F32
    assert (result.parameters, result.gradients, result.optimizer_state, result.buffers) == (square, square, square, 0)
    assert result.inputs == rows
    # The peak is relu's backward: its saved output and the gradient it makes, both batch x width,
    # beside the 0-d loss and its gradient (x W was freed when relu had used it).
    assert result.phase == "backward"
    assert result.activations == rows
    assert rows <= result.temporaries <= rows + 4 * F32
    assert result.peak == sum(getattr(result, name) for name in CATEGORIES)


def test_a_view_is_counted_once_and_the_peak_equals_the_trackers_own():
    model = _Chain(4)
    optimizer = optimizers.build("adam", model.parameters())
    x = torch.randn(16, 4)
    unread = torch.zeros(1000)  # made before the step and never read by it: not counted

    def step() -> None:
        out = model(x)
        (out.view(-1)[:8].sum() + out.t().sum()).backward()  # two views of one storage
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)

    step()
    tracker_peaks = []
    original = memory_breakdown._PeakTracker.__exit__

    def keep_peak(self, *args):
        tracker_peaks.append(self.get_tracker_snapshot("peak")[CPU]["Total"])
        return original(self, *args)

    memory_breakdown._PeakTracker.__exit__ = keep_peak
    try:
        result = track_step(model, optimizer, step, CPU)
    finally:
        memory_breakdown._PeakTracker.__exit__ = original
    assert result.peak == tracker_peaks[0]
    assert result.peak < unread.numel() * F32
    assert result.activations == 16 * 4 * F32  # relu's output, once, however many views


def test_storage_bytes_rounds_like_the_cuda_allocator():
    assert [memory_breakdown.storage_bytes(n, "cuda") for n in (0, 1, 512, 513, 4096)] == [0, 512, 512, 1024, 4096]
    assert memory_breakdown.storage_bytes(513, "cpu") == 513


def test_a_cap_stops_the_step_as_soon_as_the_tensors_exceed_it():
    model = _Chain(8)
    optimizer = optimizers.build("sgdm", model.parameters())
    x = torch.randn(64, 8)

    def step() -> None:
        model(x).sum().backward()
        optimizer.step()

    step()
    peak = track_step(model, optimizer, step, CPU).peak
    assert track_step(model, optimizer, step, CPU, cap_bytes=peak).peak == peak
    with pytest.raises(memory_breakdown.MemoryCapExceeded):
        track_step(model, optimizer, step, CPU, cap_bytes=peak - 1)


@pytest.mark.parametrize("family", ["textbook", "torch"])
def test_adam_state_is_twice_sgdms_and_model_states_match_the_parameter_count(family):
    adam, sgdm = ("adam", "sgdm") if family == "textbook" else ("torch-adam", "torch-sgdm")
    case = make_case("cnn")
    by_optimizer = {name: memory_pass.tracked_step(make_case("cnn", name), CPU, runner_build) for name in (adam, sgdm)}
    param_bytes = 360_778 * F32  # the README's (and the builder's) parameter count of cnn
    for result in by_optimizer.values():
        assert result.parameters == result.gradients == param_bytes
        assert result.inputs == case.batch_size * (28 * 28 * F32 + I64)
    tensors = len(list(models.build("cnn").parameters()))
    # torch.optim.Adam keeps a 0-d float32 step tensor per parameter; SGD keeps none.
    steps = tensors * F32 if family == "torch" else 0
    assert by_optimizer[sgdm].optimizer_state == param_bytes
    assert by_optimizer[adam].optimizer_state == 2 * by_optimizer[sgdm].optimizer_state + steps


@pytest.mark.slow
def test_the_breakdown_reproduces_to_the_byte():
    case = make_case("resnet20", "adam", batch_size=2, input_shape=(3, 16, 16))
    first, second = (memory_pass.tracked_step(case, CPU, runner_build) for _ in range(2))
    assert first == second


@pytest.mark.slow
@pytest.mark.parametrize("model", ["cnn", "mlp", "resnet20", "plain20"])
def test_prediction_on_fake_tensors_is_within_5_percent_of_the_tracked_peak(model):
    for batch_size in (1, 3):
        spec = models.spec(model)
        small = spec.input_shape if model in ("cnn", "mlp") else (3, 16, 16)  # a smaller input, same network
        case = make_case(model, "adam", batch_size=batch_size, input_shape=small)
        measured = memory_pass.tracked_step(case, CPU, runner_build)
        predicted = memory_pass.predict(case, CPU)
        assert predicted.device == "cpu"
        assert abs(predicted.breakdown.peak - measured.peak) <= 0.05 * measured.peak
        # the model states do not depend on fake or real tensors at all
        assert predicted.breakdown.optimizer_state == measured.optimizer_state
        assert predicted.breakdown.parameters == measured.parameters


def test_a_cuda_prediction_without_cuda_runs_as_a_rounded_cpu_stand_in(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    case = make_case("mlp", "sgdm", batch_size=2)
    on_cpu = memory_pass.predict(case, CPU)
    for_cuda = memory_pass.predict(case, torch.device("cuda"))
    assert for_cuda.device == "cpu for cuda"
    # 10 parameter tensors, each rounded up to 512-byte blocks: never less, at most 511 more each
    assert 0 <= for_cuda.breakdown.parameters - on_cpu.breakdown.parameters <= 10 * 511
    assert for_cuda.breakdown.parameters % 512 == 0


def test_largest_batch_doubles_then_bisects_to_the_exact_threshold():
    largest, attempts = max_batch.largest_batch(lambda batch: batch <= 37)
    assert largest == 37
    assert [batch for batch, _ in attempts] == [1, 2, 4, 8, 16, 32, 64, 48, 40, 36, 38, 37]
    assert max_batch.largest_batch(lambda batch: False) == (None, [[1, False]])
    assert max_batch.largest_batch(lambda batch: True, limit=8)[0] == 8
    # from a guess: two tries when it is right, a few more when it is off either way
    assert max_batch.largest_batch(lambda batch: batch <= 37, guess=37)[1] == [[37, True], [38, False]]
    assert max_batch.largest_batch(lambda batch: batch <= 37, guess=40)[0] == 37
    assert max_batch.largest_batch(lambda batch: batch <= 37, guess=30)[0] == 37
    assert max_batch.largest_batch(lambda batch: False, guess=5)[0] is None


@pytest.mark.slow
def test_measured_search_under_a_tracker_cap_agrees_with_the_prediction():
    case = make_case("cnn", "sgdm")
    cap = 8 * 2**20  # cnn's model states take 5.5 MiB of it: the largest batch is about ten
    fields = max_batch.search_case(case, CPU, runner_build, cap)
    assert fields["max_batch_source"] == "tracker_cap"
    assert fields["max_batch_memory_bytes"] == cap
    assert fields["max_batch_size"] is not None
    assert abs(fields["max_batch_size"] - fields["max_batch_predicted"]) <= 1
    # the largest batch really fits and the next one really does not
    fits = max_batch.measured_fits(case, CPU, runner_build, cap)
    assert fits(fields["max_batch_size"]) and not fits(fields["max_batch_size"] + 1)


class _FakeCuda:
    """The CUDA calls the search makes, for a device of 1000 bytes."""

    def __init__(self):
        self.fractions = []

    def get_device_properties(self, device):
        return type("Properties", (), {"total_memory": 1000})()

    def set_per_process_memory_fraction(self, fraction, device):
        self.fractions.append(fraction)

    def empty_cache(self):
        pass


def test_cuda_search_caps_the_allocator_and_counts_out_of_memory_as_not_fitting():
    cuda = _FakeCuda()

    class Stepper:  # a training step that costs nothing: only the search's logic is under test
        def step(self):
            pass

    def build_or_oom(case, out):
        if case.batch_size > 5:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return None, None, Stepper()

    fits = max_batch.measured_fits(make_case("mlp"), torch.device("cuda"), build_or_oom, 250, cuda)
    assert max_batch.largest_batch(fits)[0] == 5
    assert max_batch.memory_for(torch.device("cuda"), None, cuda) == 1000
    assert max_batch.memory_for(CPU, None) == max_batch.DEFAULT_CPU_CAP_BYTES


def test_run_case_records_the_breakdown_beside_the_prediction_and_keeps_rss():
    record = run_case(make_case("cnn", "adam"), CONTEXT).to_dict()
    assert record["status"] == "ok" and record["memory_pass_error"] is None
    assert record["tracked_optimizer_state_bytes"] == record["optimizer_state_bytes"]
    assert record["tracked_peak_bytes"] == sum(record[f"tracked_{name}_bytes"] for name in CATEGORIES)
    assert record["predicted_peak_bytes"] == sum(record[f"predicted_{name}_bytes"] for name in CATEGORIES)
    assert record["activation_bytes"] == record["tracked_activations_bytes"] + record["tracked_temporaries_bytes"]
    assert record["rss_activation_bytes"] is not None
    assert record["max_batch_size"] is None  # only with --find-max-batch


class _AllocatorStatistics:
    """torch.cuda's peak statistics for a device that peaked at 12345 bytes."""

    def __init__(self):
        self.resets = 0

    def reset_peak_memory_stats(self, device):
        self.resets += 1

    def max_memory_allocated(self, device):
        return 12345


def test_on_cuda_the_allocator_peak_of_the_tracked_step_is_recorded_beside_the_tracker(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cuda = _AllocatorStatistics()
    timed = {"peak_memory_source": "cuda_max_allocated", "activation_bytes": 999}
    fields = memory_pass.record_fields(make_case("mlp"), torch.device("cuda"), runner_build, timed, cuda)
    assert cuda.resets == 1  # once, just before the tracked step
    assert fields["tracked_allocator_peak_bytes"] == 12345
    assert "rss_activation_bytes" not in fields and "activation_bytes" not in fields  # CPU only
    assert fields["predicted_device"] == "cpu for cuda"


def test_a_channels_last_case_is_predicted_like_it_is_measured():
    case = make_case("cnn", "sgdm", channels_last=True)
    assert memory_pass.predict(case, CPU).breakdown.peak == memory_pass.tracked_step(case, CPU, runner_build).peak


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_is_predicted_within_a_few_scalars(precision):
    # fp16's loss scaler is left out of the prediction (it reads a value): a few 0-d tensors
    case = make_case("mlp", "adam", precision=precision)
    measured = memory_pass.tracked_step(case, CPU, runner_build).peak
    assert abs(memory_pass.predict(case, CPU).breakdown.peak - measured) <= 16 * F32


def test_the_prediction_builds_the_case_with_its_model_arguments_and_hyperparameters():
    """A narrower resnet20 (width 8) and an optimizer with non-default hyperparameters: the
    fake step must build the same model as the tracked one, not the builder's default."""
    case = make_case(
        "resnet20",
        "sgdm",
        batch_size=2,
        input_shape=(3, 16, 16),
        model_kwargs={"width": 8},
        hyperparameters={"lr": 0.1},
    )
    measured = memory_pass.tracked_step(case, CPU, runner_build)
    predicted = memory_pass.predict(case, CPU)
    narrow = sum(p.numel() * 4 for p in models.build("resnet20", width=8).parameters())
    assert measured.parameters == predicted.breakdown.parameters == narrow
    assert predicted.breakdown.peak == measured.peak
