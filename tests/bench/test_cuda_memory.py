"""The memory figures on CUDA, with a fake of the caching allocator that keeps its block rules
(tests/bench/fake_cuda.py): what a case records does not depend on which case ran first or
failed before it, and the optimizer state the allocator saw is checked against the state
tensors themselves, exactly in requested bytes, whatever whole blocks the allocator handed out."""

import weakref

import pytest
import torch
from torch import nn

import optimizers
from bench.kinds.step import runner
from bench.kinds.step.runner import RunContext, run_case
from bench.kinds.step.suite import Case
from bench.measure.memory import CudaMeter
from bench.measure.timing import HostClock
from models.registry import _REGISTRY, ModelSpec
from tests.bench.fake_cuda import SMALL_SIZE, CachingAllocatorFake, round_size

CPU = torch.device("cpu")
CONTEXT = RunContext(run_id="r", suite="test", device=CPU, env={})
WORKSPACE = 2**20  # what cuBLAS allocates at its first use; the meter's release drops it


class FakeDevice:
    """One process's allocator, cuBLAS workspace and library caches."""

    def __init__(self) -> None:
        self.allocator = CachingAllocatorFake(capacity=256 * 2**20)
        self.workspace = None
        self.library_cache = []  # blocks a library keeps for good (sized by what it last saw)
        self.state_extra = 0  # bytes allocated beside the optimizer state when it is created

    def clear_workspaces(self) -> None:
        if self.workspace is not None:
            self.allocator.free(self.workspace)
            self.workspace = None


class Net(nn.Module):
    """Each forward allocates the cuBLAS workspace if there is none, ``step_bytes`` for the step
    (freed at once), and whatever ``extra`` does."""

    def __init__(self, device: FakeDevice, step_bytes: int, in_features: int, num_classes: int, extra=None) -> None:
        super().__init__()
        self.device, self.step_bytes, self.extra = device, step_bytes, extra
        self.head = nn.Linear(in_features, num_classes)

    def forward(self, x):
        if not x.is_meta:
            allocator = self.device.allocator
            if self.device.workspace is None:
                self.device.workspace = allocator.malloc(WORKSPACE)
            allocator.free(allocator.malloc(self.step_bytes))
            if self.extra:
                self.extra(self.device)
        return self.head(x.flatten(1))


def pinned_hole(device: FakeDevice) -> None:
    """Once: a 3 MiB block freed inside a 20 MiB segment whose other 17 MiB stay in use, so the
    first large request of 2 to 3 MiB gets the whole 3 MiB block (what remains, under 1 MiB,
    is not split off)."""
    if device.library_cache:
        return
    allocator = device.allocator
    hole = allocator.malloc(3 * 2**20)
    device.library_cache.append(allocator.malloc(17 * 2**20))
    allocator.free(hole)


def leaves_and_runs_out(device: FakeDevice) -> None:
    """A library keeps 180 MiB sized for this batch, then the batch does not fit."""
    device.library_cache.append(device.allocator.malloc(180 * 2**20))
    device.allocator.malloc(10**12)


def register(monkeypatch, device_holder, name, step_bytes, input_shape=(1, 8, 8), extra=None):
    features = input_shape[0] * input_shape[1] * input_shape[2]

    def builder(in_channels=1, num_classes=3):
        return Net(device_holder["device"], step_bytes, features, num_classes, extra)

    monkeypatch.setitem(_REGISTRY, name, ModelSpec(name, builder, input_shape, 3, "test"))


@pytest.fixture
def fake_cuda(monkeypatch):
    """A fresh fake device (a fresh process) behind the runner's meter; models on it:
    ``small-net`` (1,000 bytes a step), ``large-net`` (5,000), ``hole-net`` (a step that leaves
    a 3 MiB hole in a pinned segment; a 200,000-feature input, so the state of its weights is
    2.4 MB a buffer), ``oom-net`` (leaves 180 MiB behind, then runs out of memory); and
    optimizers whose state tensors are allocated on it as their first update creates them."""
    holder = {"device": FakeDevice()}
    register(monkeypatch, holder, "small-net", 1_000)
    register(monkeypatch, holder, "large-net", 5_000)
    register(monkeypatch, holder, "hole-net", 1_000, (1, 400, 500), pinned_hole)
    register(monkeypatch, holder, "oom-net", 1_000, extra=leaves_and_runs_out)

    def instruments(device):
        fake = holder["device"]
        return HostClock(), CudaMeter(device, fake.allocator, fake.clear_workspaces)

    monkeypatch.setattr(runner, "instruments_for", instruments)
    real_build = optimizers.build

    def build_on_fake(name, params, **kwargs):
        optimizer = real_build(name, params, **kwargs)
        step = optimizer.step
        blocks = []  # freed with the optimizer, as its state tensors would be

        def allocating_step(*args, **kw):
            creating = not optimizer.state
            result = step(*args, **kw)
            if creating:
                allocator = holder["device"].allocator
                for state in optimizer.state.values():
                    for tensor in state.values():
                        if torch.is_tensor(tensor):
                            blocks.append(allocator.malloc(tensor.nbytes))
                if holder["device"].state_extra:
                    blocks.append(allocator.malloc(holder["device"].state_extra))
            return result

        optimizer.step = allocating_step
        allocator = holder["device"].allocator
        weakref.finalize(optimizer, lambda: [allocator.free(block) for block in blocks])
        return optimizer

    monkeypatch.setattr(optimizers, "build", build_on_fake)
    return holder


def case(model: str, input_shape=(1, 8, 8)) -> Case:
    return Case(model, "adam", 2, "fp32", False, False, "synthetic", input_shape, 3, 2, 1, 1, False)


def test_the_memory_split_does_not_depend_on_case_order(fake_cuda):
    figures = {}
    for order in (["small-net", "large-net"], ["large-net", "small-net"]):
        fake_cuda["device"] = FakeDevice()  # each sweep is a new process
        for model in order:
            record = run_case(case(model), CONTEXT)
            assert record.status == "ok", record.error
            figures.setdefault(model, []).append(
                (
                    record.static_memory_bytes,
                    record.activation_bytes,
                    record.peak_memory_requested_bytes - record.static_memory_requested_bytes,
                )
            )
    # Static: what lives on the fake device between steps, the case's own cuBLAS workspace and
    # Adam's m and v of Linear(64, 3) (weight 768 bytes, bias 12), each in 512-byte blocks; the
    # step's own memory on top, allocated and requested.
    static = WORKSPACE + 2 * (round_size(4 * 192) + round_size(4 * 3))
    assert figures == {"small-net": [(static, 1_024, 1_000)] * 2, "large-net": [(static, 5_120, 5_000)] * 2}


def test_state_the_allocator_saw_is_checked_against_the_state_tensors(fake_cuda):
    record = run_case(case("small-net"), CONTEXT)
    params = 3 * 64 + 3  # Linear(64, 3)
    assert record.params == params
    # Adam's m and v: two tensors per parameter tensor (weight 192, bias 3 floats), each rounded.
    assert record.optimizer_state_allocated_bytes == 2 * (round_size(4 * 192) + round_size(4 * 3))
    assert record.optimizer_state_requested_bytes == record.optimizer_state_bytes == 8 * params
    assert record.optimizer_state_mismatch is False
    assert record.peak_memory_reserved_bytes >= record.peak_memory_bytes

    fake_cuda["device"] = FakeDevice()
    fake_cuda["device"].state_extra = WORKSPACE  # something else stayed allocated
    record = run_case(case("small-net"), CONTEXT)
    assert record.optimizer_state_requested_bytes == 8 * params + WORKSPACE
    assert record.optimizer_state_mismatch is True


def test_a_state_tensor_handed_a_larger_cached_block_is_not_a_mismatch(fake_cuda):
    """What the H100 showed on 16 of 18 cases: the allocated delta around the state's creation
    is larger than the state's 512-byte blocks, because a large request takes a whole cached
    block when less than 1 MiB would remain. The requested bytes match the tensors exactly."""
    record = run_case(case("hole-net", (1, 400, 500)), CONTEXT)
    assert record.status == "ok", record.error
    weight, bias = 4 * 3 * 200_000, 4 * 3
    assert record.optimizer_state_bytes == record.optimizer_state_requested_bytes == 2 * (weight + bias)
    # m of the weight took the 3 MiB hole whole; v a block of its own size; the biases' 512.
    hole = 3 * 2**20
    assert hole - round_size(weight) <= SMALL_SIZE
    assert record.optimizer_state_allocated_bytes == hole + round_size(weight) + 2 * round_size(bias)
    assert record.optimizer_state_mismatch is False


def test_what_a_failed_case_leaves_allocated_stays_out_of_the_next_cases_figures(fake_cuda):
    """The acceptance's OOM sweep: the same case before and after one that runs out of memory
    and leaves a library's 180 MiB behind must record the same static and peak memory."""
    before = run_case(case("small-net"), CONTEXT)
    failed = run_case(case("oom-net"), CONTEXT)
    after = run_case(case("small-net"), CONTEXT)
    assert [before.status, failed.status, after.status] == ["ok", "oom", "ok"]
    left = 180 * 2**20
    assert after.memory_at_case_start_bytes == before.memory_at_case_start_bytes + left
    for field in ("static_memory_bytes", "peak_memory_bytes", "activation_bytes", "static_memory_requested_bytes"):
        assert getattr(after, field) == getattr(before, field), field
    # Only what is still held stays allocated: the case's own tensors and workspace went back.
    assert fake_cuda["device"].allocator.allocated == round_size(left)
