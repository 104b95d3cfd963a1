"""The compiled textbook optimizers: the textbook equations through torch.compile, checked
against torch.optim on replayed gradients; one compiled graph for every step and learning rate."""

import pytest
import torch
from torch._dynamo.utils import counters

import optimizers

SHAPES = [(8, 3, 3, 3), (10, 8)]  # few tensors: compiling takes seconds per tensor
REFERENCE = {"adam-compiled": ("torch-adam", dict(lr=1e-2)), "sgdm-compiled": ("torch-sgdm", dict(lr=0.05))}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(REFERENCE))
def test_compiled_textbook_follows_torch_optim_without_recompiling(name):
    reference, hyperparameters = REFERENCE[name]
    torch.manual_seed(0)
    ours = [torch.nn.Parameter(torch.randn(shape)) for shape in SHAPES]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    candidate = optimizers.build(name, ours, **hyperparameters)
    baseline = optimizers.build(reference, theirs, **hyperparameters)
    torch.compiler.reset()
    counters.clear()
    for step in range(40):
        if step == 20:  # a schedule changes the learning rate: the same graph must serve
            for optimizer in (candidate, baseline):
                optimizer.param_groups[0]["lr"] /= 10
        for p, q in zip(ours, theirs, strict=True):
            p.grad = q.grad = torch.randn_like(p)
        candidate.step()
        baseline.step()
        for p, q in zip(ours, theirs, strict=True):
            torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-6)
    assert counters["stats"]["unique_graphs"] == 1
    assert not counters["recompiles"]
    buffers = {"adam": {"m", "v"}, "sgdm": {"m"}}[optimizers.spec(name).algorithm]
    for p in ours:
        state = candidate.state[p]
        assert set(state) == buffers | {"step"}
        assert all(state[b].shape == p.shape and state[b].dtype == p.dtype for b in buffers)
        assert state["step"].dim() == 0 and state["step"].item() == 40
    assert optimizers.state_buffers(name) == len(buffers)


def test_compiled_optimizers_are_registered_and_compile_nothing_until_stepped():
    params = [torch.nn.Parameter(torch.zeros(shape)) for shape in SHAPES]
    for name in REFERENCE:
        assert optimizers.spec(name).implementation == "compiled"
        assert optimizers.spec(name).source == "textbook"
        assert not optimizers.build(name, params).state
