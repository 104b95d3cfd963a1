"""The compiled textbook optimizers: the textbook equations through torch.compile, checked
against torch.optim on replayed gradients; the same compiled graphs for every step and learning
rate, written over lists of tensors so that Inductor can fuse the parameters horizontally."""

import functools
import operator

import pytest
import torch
from torch._dynamo.utils import counters

import optimizers

SHAPES = [(8, 3, 3, 3), (10, 8)]  # few tensors: compiling takes seconds per tensor
REFERENCE = {"adam-compiled": ("torch-adam", dict(lr=1e-2)), "sgdm-compiled": ("torch-sgdm", dict(lr=0.05))}
#: Graphs a step compiles: Adam's per-parameter scalars and its update; SGDM's update.
GRAPHS = {"adam-compiled": 2, "sgdm-compiled": 1}


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
    assert counters["stats"]["unique_graphs"] == GRAPHS[name]
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


def _operators_per_step(monkeypatch, name: str, count: int) -> int:
    """Operators (list indexing aside) in the graphs Dynamo hands the compiler for one step of
    ``name`` over ``count`` parameters, captured by a backend that runs them eagerly."""
    graphs = []

    def capture(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend=capture))
    torch.compiler.reset()
    params = [torch.nn.Parameter(torch.randn(5)) for _ in range(count)]
    for p in params:
        p.grad = torch.randn_like(p)
    optimizers.build(name, params).step()
    torch.compiler.reset()
    nodes = [node for graph in graphs for node in graph.graph.nodes]
    return sum(node.op == "call_function" and node.target is not operator.getitem for node in nodes)


@pytest.mark.parametrize("name", list(REFERENCE))
def test_the_compiled_step_is_a_program_over_lists_whatever_the_number_of_parameters(monkeypatch, name):
    # A loop over the parameters would unroll into operators for each of them, which Inductor
    # turns into a kernel per parameter on a GPU; multi-tensor operators over the lists keep
    # the program the same size, so Inductor fuses the parameters into a few kernels.
    assert _operators_per_step(monkeypatch, name, 3) == _operators_per_step(monkeypatch, name, 12) > 0
