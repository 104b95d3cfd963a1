"""Memory from tensors (against the algorithms' theory) and from the process (against known allocations)."""

import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import models
import optimizers
from bench.measure import memory

#: The lab's theory: parameter-shaped buffers each algorithm keeps (Adam m and v; SGDM m).
THEORY = {"adam": 2, "sgdm": 1}


def stepped(model: nn.Module, optimizer_name: str, input_shape: tuple[int, ...]) -> torch.optim.Optimizer:
    """One training step of ``model`` on a batch of two, on the model's device."""
    device = next(model.parameters()).device
    optimizer = optimizers.build(optimizer_name, model.parameters())
    images = torch.zeros(2, *input_shape, device=device)
    F.cross_entropy(model(images), torch.zeros(2, dtype=torch.long, device=device)).backward()
    optimizer.step()
    return optimizer


def test_bytes_of_a_small_model_by_hand():
    model = nn.Linear(3, 4)  # 12 weights + 4 biases = 16 float32 = 64 bytes
    assert memory.param_bytes(model) == 64 and memory.grad_bytes(model) == 0
    model(torch.ones(1, 3)).sum().backward()
    assert memory.grad_bytes(model) == 64
    assert memory.param_bytes(model.to(torch.bfloat16)) == 32


@pytest.mark.parametrize("name,per_param", [("adam", 8), ("sgdm", 4), ("adam-foreach", 8), ("sgdm-foreach", 4)])
def test_fp32_state_bytes_per_parameter(name, per_param):
    torch.manual_seed(0)
    model = models.build("cnn")
    optimizer = stepped(model, name, (1, 28, 28))
    params = sum(p.numel() for p in model.parameters())
    assert memory.optimizer_state_bytes(optimizer) == per_param * params
    assert memory.optimizer_state_bytes(optimizer) / params == per_param


def test_torch_optim_step_counters_count_as_state_too():
    model = models.build("cnn")
    optimizer = stepped(model, "torch-adam", (1, 28, 28))
    tensors = list(model.parameters())
    params = sum(p.numel() for p in tensors)
    # exp_avg and exp_avg_sq (4 bytes each per element) plus one float32 step per tensor
    assert memory.optimizer_state_bytes(optimizer) == 8 * params + 4 * len(tensors)
    assert memory.state_buffers_per_param(optimizer) == 2


@pytest.mark.parametrize("name", ["torch-adam", "adam", "torch-sgdm", "sgdm"])
def test_step_counter_of_a_0d_parameter_is_not_a_buffer(name):
    # A 0-d parameter is shaped like torch.optim's 0-d step counter; the counter is no buffer.
    scale, weight = nn.Parameter(torch.tensor(1.5)), nn.Parameter(torch.ones(3))
    optimizer = optimizers.build(name, [scale, weight])
    (scale * weight.sum()).backward()
    optimizer.step()
    assert memory.state_buffers_per_param(optimizer) == THEORY[optimizers.spec(name).algorithm]


def test_parameters_without_state_lower_the_measured_buffers():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))  # 20 + 10 parameters
    model[1].requires_grad_(False)  # gets no gradient, so Adam keeps nothing for it
    optimizer = optimizers.build("adam", model.parameters())
    model(torch.ones(1, 4)).sum().backward()
    optimizer.step()
    assert memory.state_buffers_per_param(optimizer) == pytest.approx(2 * 20 / 30)


@pytest.mark.slow
@pytest.mark.parametrize("model_name", models.available())
def test_measured_state_buffers_equal_the_theory_for_every_model(model_name):
    # On the meta device: real shapes and real optimizer code, no memory and little time.
    spec = models.spec(model_name)
    with torch.device("meta"):
        model = models.build(model_name)
    first = stepped(model, "adam", spec.input_shape)
    assert memory.state_buffers_per_param(first) == 2
    for name in ("sgdm", "torch-adam", "torch-sgdm", "adam-foreach", "sgdm-foreach"):
        optimizer = optimizers.build(name, model.parameters())
        optimizer.step()  # a fresh optimizer on the same gradients creates its state
        assert memory.state_buffers_per_param(optimizer) == THEORY[optimizers.spec(name).algorithm], name


def test_process_meter_sees_a_short_lived_allocation():
    meter = memory.ProcessMeter()
    meter.reset_peak()
    before = meter.in_use()
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB, every page touched
    del block
    peak = meter.peak()
    meter.release()
    assert meter.source == "process_rss"
    assert peak - before >= 60 * 2**20


def test_process_meter_falls_back_to_sampling(monkeypatch, tmp_path):
    monkeypatch.setattr(memory, "PROC_CLEAR_REFS", tmp_path / "missing" / "clear_refs")
    meter = memory.ProcessMeter()
    meter.reset_peak()
    before = meter.in_use()
    block = torch.ones(64 * 2**20 // 4)
    time.sleep(20 * memory.SAMPLE_INTERVAL_S)  # held long enough to be sampled
    del block
    peak = meter.peak()
    assert meter.source == "process_rss_sampled"
    assert peak - before >= 60 * 2**20


def test_state_allocation_bounds_follow_the_cuda_allocators_rounding():
    model = nn.Linear(300, 1, bias=False)  # 300 float32 weights: 1,200 bytes
    model(torch.ones(1, 300)).sum().backward()
    optimizer = optimizers.build("adam", model.parameters())
    optimizer.step()  # m and v, 1,200 bytes each; the textbook step count is an int
    # 1,200 bytes take three 512-byte blocks (1,536); a power-of-two rounding takes 2,048.
    assert memory.state_allocation_bounds(optimizer, torch.device("cpu")) == (2 * 1_200, 2 * 1_536)
    assert memory.state_allocation_bounds(optimizer, torch.device("cpu"), "roundup_power2_divisions:4") == (
        2 * 1_200,
        2 * 2_048,
    )
    # Only state on the device in question counts (torch.optim keeps its step counters on the host).
    assert memory.state_allocation_bounds(optimizer, torch.device("cuda", 0)) == (0, 0)


def test_a_large_state_tensor_may_hold_up_to_a_mebibyte_more_than_its_blocks():
    """The allocator's large pool hands a request of more than 1 MiB a whole cached block when
    splitting it would leave 1 MiB or less (c10 ``should_split``), so each such tensor may hold
    up to 1 MiB beyond its 512-byte blocks; a tensor of 1 MiB or less never does."""
    model = nn.Linear(2**18 + 1, 1, bias=False)  # 1 MiB + 4 bytes of float32 weights
    model(torch.ones(1, 2**18 + 1)).sum().backward()
    optimizer = optimizers.build("adam", model.parameters())
    optimizer.step()
    size = 4 * (2**18 + 1)
    assert memory.state_allocation_bounds(optimizer, torch.device("cpu")) == (2 * size, 2 * (2**20 + 512 + 2**20))
    small = nn.Linear(2**18, 1, bias=False)  # exactly 1 MiB: the small pool, exact blocks
    small(torch.ones(1, 2**18)).sum().backward()
    optimizer = optimizers.build("adam", small.parameters())
    optimizer.step()
    assert memory.state_allocation_bounds(optimizer, torch.device("cpu")) == (2 * 2**20, 2 * 2**20)
