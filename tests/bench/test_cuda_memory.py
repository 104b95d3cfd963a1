"""The memory split on CUDA, with a fake of the caching allocator's statistics only: what a
case records does not depend on which case ran first, and the optimizer state the allocator
saw is checked against the state tensors themselves."""

import pytest
import torch
from torch import nn

import optimizers
from bench.measure import runner
from bench.measure.memory import CudaMeter
from bench.measure.runner import RunContext, run_case
from bench.measure.timing import HostClock
from bench.suite import Case
from models.registry import _REGISTRY, ModelSpec

CPU = torch.device("cpu")
CONTEXT = RunContext(run_id="r", suite="test", device=CPU, env={})
BLOCK = 512  # the CUDA caching allocator rounds every block up to 512 bytes
WORKSPACE = 2**20  # what cuBLAS/cuDNN keep allocated from their first use to the process's end


def rounded(nbytes: int) -> int:
    return -(-nbytes // BLOCK) * BLOCK


class FakeAllocator:
    """The statistics torch.cuda keeps, kept by hand for allocations the test makes."""

    def __init__(self) -> None:
        self.allocated = self.requested = self.reserved = 0
        self.peak = self.requested_peak = self.reserved_peak = 0
        self.workspace = False

    def malloc(self, nbytes: int) -> None:
        self.allocated += rounded(nbytes)
        self.requested += nbytes
        self.reserved = max(self.reserved, self.allocated)
        self.peak = max(self.peak, self.allocated)
        self.requested_peak = max(self.requested_peak, self.requested)
        self.reserved_peak = max(self.reserved_peak, self.reserved)

    def free(self, nbytes: int) -> None:
        self.allocated -= rounded(nbytes)
        self.requested -= nbytes

    # the slice of torch.cuda that CudaMeter reads
    def memory_allocated(self, device):
        return self.allocated

    def memory_stats(self, device):
        return {"requested_bytes.all.current": self.requested, "requested_bytes.all.peak": self.requested_peak}

    def reset_peak_memory_stats(self, device):
        self.peak, self.requested_peak, self.reserved_peak = self.allocated, self.requested, self.reserved

    def max_memory_allocated(self, device):
        return self.peak

    def max_memory_reserved(self, device):
        return self.reserved_peak

    def empty_cache(self):
        self.reserved = self.allocated


class Net(nn.Module):
    """Each forward allocates ``step_bytes`` for the step and frees them; the first forward
    in the process also leaves a library workspace allocated for good."""

    def __init__(self, allocator: FakeAllocator, step_bytes: int, in_channels=1, num_classes=3) -> None:
        super().__init__()
        self.allocator, self.step_bytes = allocator, step_bytes
        self.head = nn.Linear(in_channels * 64, num_classes)

    def forward(self, x):
        if not x.is_meta:
            if not self.allocator.workspace:
                self.allocator.malloc(WORKSPACE)
                self.allocator.workspace = True
            self.allocator.malloc(self.step_bytes)
            self.allocator.free(self.step_bytes)
        return self.head(x.flatten(1))


@pytest.fixture
def fake_cuda(monkeypatch):
    """A fresh fake allocator (a fresh process) behind the runner's meter, models ``small-net``
    (1,000 bytes a step) and ``large-net`` (5,000) on it, and an optimizer whose state
    tensors are allocated on it when its first update creates them (plus ``extra`` bytes)."""
    holder = {"allocator": FakeAllocator(), "extra": 0}
    for name, step_bytes in (("small-net", 1_000), ("large-net", 5_000)):

        def builder(in_channels=1, num_classes=3, step_bytes=step_bytes):
            return Net(holder["allocator"], step_bytes, in_channels, num_classes)

        monkeypatch.setitem(_REGISTRY, name, ModelSpec(name, builder, (1, 8, 8), 3, "test"))
    monkeypatch.setattr(runner, "instruments_for", lambda device: (HostClock(), CudaMeter(device, holder["allocator"])))
    real_build = optimizers.build

    def build_on_fake(name, params, **kwargs):
        optimizer = real_build(name, params, **kwargs)
        step = optimizer.step

        def allocating_step(*args, **kw):
            creating = not optimizer.state
            result = step(*args, **kw)
            if creating:
                for state in optimizer.state.values():
                    for tensor in state.values():
                        if torch.is_tensor(tensor):
                            holder["allocator"].malloc(tensor.nbytes)
                if holder["extra"]:
                    holder["allocator"].malloc(holder["extra"])
            return result

        optimizer.step = allocating_step
        return optimizer

    monkeypatch.setattr(optimizers, "build", build_on_fake)
    return holder


def case(model: str) -> Case:
    return Case(model, "adam", 2, "fp32", False, False, "synthetic", (1, 8, 8), 3, 2, 1, 1, False)


def test_the_memory_split_does_not_depend_on_case_order(fake_cuda):
    figures = {}
    for order in (["small-net", "large-net"], ["large-net", "small-net"]):
        fake_cuda["allocator"] = FakeAllocator()  # each sweep is a new process
        for model in order:
            record = run_case(case(model), CONTEXT)
            assert record.status == "ok", record.error
            figures.setdefault(model, []).append(
                (record.activation_bytes, record.peak_memory_requested_bytes - record.static_memory_requested_bytes)
            )
    # The step's own memory, whichever case paid for the workspace: allocated and requested.
    assert figures == {"small-net": [(1_024, 1_000)] * 2, "large-net": [(5_120, 5_000)] * 2}


def test_state_the_allocator_saw_is_checked_against_the_state_tensors(fake_cuda):
    record = run_case(case("small-net"), CONTEXT)
    params = 3 * 64 + 3  # Linear(64, 3)
    assert record.params == params
    # Adam's m and v: two tensors per parameter tensor (weight 192, bias 3 floats), each rounded.
    assert record.optimizer_state_allocated_bytes == 2 * (rounded(4 * 192) + rounded(4 * 3))
    assert record.optimizer_state_requested_bytes == record.optimizer_state_bytes == 8 * params
    assert record.optimizer_state_mismatch is False
    assert record.peak_memory_reserved_bytes >= record.peak_memory_bytes

    fake_cuda["allocator"], fake_cuda["extra"] = FakeAllocator(), WORKSPACE  # something else stayed
    record = run_case(case("small-net"), CONTEXT)
    assert record.optimizer_state_allocated_bytes == 2 * (rounded(4 * 192) + rounded(4 * 3)) + WORKSPACE
    assert record.optimizer_state_mismatch is True
