"""The bytes an optimizer step moves: the derived table against the operators each eager
implementation really dispatches, and the compulsory bytes against the state each keeps."""

import pytest
import torch

import optimizers
from bench.kinds.optimizer_step.runner import count_traffic
from optimizers.traffic import TRAFFIC_ELEMENTS, compulsory_bytes_per_param, traffic_bytes_per_param

SHAPES = [(16, 8, 3, 3), (16,), (10, 16), (10,)]
EAGER = [n for n in optimizers.available() if optimizers.spec(n).implementation in ("for-loop", "foreach")]


def _stepped(name: str, dtype: torch.dtype) -> tuple[torch.optim.Optimizer, int]:
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(shape, dtype=dtype)) for shape in SHAPES]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    optimizer = optimizers.build(name, params)
    optimizer.step()  # the state exists; the counted step is a steady-state one
    return optimizer, sum(p.numel() for p in params)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", EAGER)
def test_derived_traffic_equals_the_dispatched_operators(name, dtype):
    spec = optimizers.spec(name)
    optimizer, params = _stepped(name, dtype)
    read, written = count_traffic(optimizer.step)
    derived = traffic_bytes_per_param(spec.source, spec.algorithm, spec.implementation, dtype)
    # torch.optim's 0-d step counters add a few bytes per tensor, nothing per element
    assert (read + written) / params == pytest.approx(derived, abs=0.5)


def test_every_registry_optimizer_has_a_derived_traffic():
    for name in optimizers.available():
        spec = optimizers.spec(name)
        assert (spec.source, spec.algorithm, spec.implementation) in TRAFFIC_ELEMENTS, name


@pytest.mark.parametrize("name", ["adam", "sgdm"])
def test_compulsory_bytes_are_params_grads_and_state_read_and_written_once(name):
    # read p, g and every state buffer; write p and every state buffer
    buffers = optimizers.state_buffers(name)
    for dtype, size in ((torch.float32, 4), (torch.bfloat16, 2), (torch.float16, 2)):
        assert compulsory_bytes_per_param(name, dtype) == (2 + buffers + 1 + buffers) * size
    assert compulsory_bytes_per_param("adam") == 28 and compulsory_bytes_per_param("sgdm") == 20


@pytest.mark.parametrize("name", ["torch-adam-fused", "torch-sgdm-fused"])
def test_fused_implementations_move_no_more_than_the_compulsory_bytes(name):
    spec = optimizers.spec(name)
    assert traffic_bytes_per_param(spec.source, spec.algorithm, "fused", torch.float32) == compulsory_bytes_per_param(
        spec.algorithm
    )


def test_counting_sees_reads_and_writes_of_one_kernel():
    a, b = torch.ones(100), torch.ones(100)
    assert count_traffic(lambda: a.add_(b)) == (800, 400)  # read a and b, write a
    assert count_traffic(lambda: a.mul(2.0)) == (400, 400)  # read a, write a new tensor
    assert count_traffic(lambda: a.addcmul_(b, b)) == (800, 400)  # b is read once
