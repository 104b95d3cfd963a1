"""Textbook Adam and SGDM against torch.optim, their state, and the registry."""

import pytest
import torch
import torch.nn.functional as F

import models
import optimizers
from optimizers import SGDM, Adam

REFERENCE = {"adam": "torch-adam", "sgdm": "torch-sgdm"}


def replay(reference: str, candidates: list[str], steps: int, **hyperparameters) -> dict[str, float]:
    """Train resnet20 with the torch.optim ``reference``; feed every step's gradients to each
    candidate on its own copy of the initial weights; compare weights after every step.

    The candidates see the reference's gradients rather than their own, so a difference can
    only come from the update rule, not from training's sensitivity to rounding.
    """
    torch.manual_seed(0)
    model = models.build("resnet20")
    params = list(model.parameters())
    copies = {name: [p.detach().clone() for p in params] for name in candidates}
    built = {name: optimizers.build(name, copies[name], **hyperparameters) for name in candidates}
    reference_optimizer = optimizers.build(reference, params, **hyperparameters)
    data = torch.Generator().manual_seed(1)
    worst = dict.fromkeys(candidates, 0.0)
    for _ in range(steps):
        x = torch.randn(8, 3, 32, 32, generator=data)
        y = torch.randint(0, 10, (8,), generator=data)
        reference_optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        for name in candidates:
            for p, q in zip(params, copies[name], strict=True):
                q.grad = p.grad.clone()
            built[name].step()
        reference_optimizer.step()
        for name in candidates:
            for p, q in zip(params, copies[name], strict=True):
                torch.testing.assert_close(q, p.detach(), msg=lambda m, n=name: f"{n}: {m}")
                worst[name] = max(worst[name], (q - p).abs().max().item())
    return worst


@pytest.mark.slow
def test_adam_follows_torch_adam_on_resnet20():
    worst = replay("torch-adam", ["adam", "adam-foreach", "torch-adam-foreach", "torch-adam-fused"], steps=100, lr=1e-3)
    assert all(w < 1e-6 for w in worst.values()), worst


@pytest.mark.slow
def test_sgdm_follows_torch_sgd_on_resnet20():
    worst = replay(
        "torch-sgdm",
        ["sgdm", "sgdm-foreach", "torch-sgdm-foreach", "torch-sgdm-fused"],
        steps=100,
        lr=0.05,
        momentum=0.9,
    )
    assert all(w < 1e-6 for w in worst.values()), worst


@pytest.mark.parametrize(
    "name,reference", [("adam", "torch-adam"), ("adam-foreach", "torch-adam"), ("sgdm", "torch-sgdm")]
)
def test_complex_parameters_follow_torch_optim(name, reference):
    # torch.optim.Adam treats a complex parameter as (real, imaginary) pairs: the second
    # moment holds re(g)^2 and im(g)^2. The complex square g * g would differ after one step.
    generator = torch.Generator().manual_seed(0)
    start = torch.randn(4, 3, dtype=torch.complex128, generator=generator)
    mixed = [torch.nn.Parameter(start.clone()), torch.nn.Parameter(torch.ones(2, dtype=torch.float64))]
    expected = [torch.nn.Parameter(p.detach().clone()) for p in mixed]
    optimizer = optimizers.build(name, mixed, lr=0.1)
    reference_optimizer = optimizers.build(reference, expected, lr=0.1)
    for _ in range(5):
        for p, q in zip(mixed, expected, strict=True):
            p.grad = torch.randn(p.shape, dtype=p.dtype, generator=generator)
            q.grad = p.grad.clone()
        optimizer.step()
        reference_optimizer.step()
    for p, q in zip(mixed, expected, strict=True):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-12, atol=1e-12)
    if name.startswith("adam"):
        v = optimizer.state[mixed[0]]["v"]
        assert v.shape == start.shape and v.is_complex()
        assert (torch.view_as_real(v) > 0).all()


def test_first_adam_step_by_hand():
    w = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64, requires_grad=True)
    optimizer = Adam([w], lr=0.1, betas=(0.8, 0.9), eps=1e-3)
    g = torch.tensor([0.5, -4.0, 0.0], dtype=torch.float64)
    w.grad = g.clone()
    optimizer.step()
    # t = 1: m = 0.2 g, v = 0.1 g^2, so m^ = g and v^ = g^2: w -= 0.1 g / (|g| + 1e-3).
    expected = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64) - 0.1 * g / (g.abs() + 1e-3)
    torch.testing.assert_close(w.detach(), expected, rtol=1e-15, atol=1e-15)
    torch.testing.assert_close(optimizer.state[w]["m"], 0.2 * g)
    torch.testing.assert_close(optimizer.state[w]["v"], 0.1 * g * g)


def test_sgdm_two_steps_by_hand():
    w = torch.tensor([0.0, 1.0], dtype=torch.float64, requires_grad=True)
    optimizer = SGDM([w], lr=0.5, momentum=0.5)
    for g in ([1.0, 2.0], [3.0, -2.0]):
        w.grad = torch.tensor(g, dtype=torch.float64)
        optimizer.step()
    # m1 = g1 = [1, 2]; w1 = [-0.5, 0]; m2 = 0.5 m1 + g2 = [3.5, -1]; w2 = w1 - 0.5 m2.
    torch.testing.assert_close(w.detach(), torch.tensor([-2.25, 0.5], dtype=torch.float64))


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("cls,buffers", [(Adam, {"m", "v"}), (SGDM, {"m"})])
def test_state_is_the_buffers_and_a_step_count(cls, buffers, foreach):
    model = models.build("cnn")
    optimizer = cls(model.parameters(), foreach=foreach)
    for step in (1, 2, 3):
        model.zero_grad()
        model(torch.randn(2, 1, 28, 28)).sum().backward()
        optimizer.step()
        for p in model.parameters():
            state = optimizer.state[p]
            tensors = {k for k, v in state.items() if torch.is_tensor(v)}
            assert tensors == buffers
            assert all(state[k].shape == p.shape and state[k].dtype == p.dtype for k in buffers)
            assert set(state) == buffers | {"step"} and state["step"] == step


# The compiled optimizers' state is checked in test_compiled.py on a few tensors: compiling an
# update over resnet20's 65 tensors takes a minute.
EAGER = [name for name in optimizers.available() if optimizers.spec(name).implementation != "compiled"]


@pytest.mark.parametrize("name", EAGER)
def test_state_buffers_match_what_each_optimizer_keeps(name):
    model = models.build("resnet20")
    optimizer = optimizers.build(name, model.parameters())
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    optimizer.step()
    for p in model.parameters():
        shaped_like_p = [v for v in optimizer.state[p].values() if torch.is_tensor(v) and v.shape == p.shape]
        assert len(shaped_like_p) == optimizers.state_buffers(name)
    expected = 2 if optimizers.spec(name).algorithm == "adam" else 1
    assert optimizers.state_buffers(name) == expected


@pytest.mark.parametrize(
    "name,implementation",
    [
        ("torch-adam", (False, False)),
        ("torch-adam-foreach", (True, False)),
        ("torch-adam-fused", (False, True)),
        ("torch-sgdm", (False, False)),
        ("torch-sgdm-foreach", (True, False)),
        ("torch-sgdm-fused", (False, True)),
    ],
)
def test_torch_implementation_is_forced(name, implementation):
    optimizer = optimizers.build(name, [torch.nn.Parameter(torch.zeros(3))])
    group = optimizer.param_groups[0]
    assert (bool(group["foreach"]), bool(group["fused"])) == implementation
    if optimizers.spec(name).algorithm == "sgdm":
        assert (group["dampening"], group["nesterov"]) == (0, False)


def test_registry_names():
    assert set(optimizers.available()) >= {
        "adam",
        "sgdm",
        "torch-adam",
        "torch-adam-foreach",
        "torch-adam-fused",
        "torch-sgdm",
        "torch-sgdm-foreach",
        "torch-sgdm-fused",
    }
    assert isinstance(optimizers.build("adam", [torch.nn.Parameter(torch.zeros(1))]), Adam)
    assert isinstance(optimizers.build("sgdm-foreach", [torch.nn.Parameter(torch.zeros(1))]), SGDM)


@pytest.mark.parametrize("name", optimizers.available())
@pytest.mark.parametrize("beta", [0.0, 1.0, -0.1, 1.5])
def test_beta_outside_open_unit_interval_is_refused_by_name(name, beta):
    params = [torch.nn.Parameter(torch.zeros(1))]
    if optimizers.spec(name).algorithm == "adam":
        with pytest.raises(ValueError, match=r"betas\[0\]"):
            optimizers.build(name, params, betas=(beta, 0.999))
        with pytest.raises(ValueError, match=r"betas\[1\]"):
            optimizers.build(name, params, betas=(0.9, beta))
    else:
        with pytest.raises(ValueError, match="momentum"):
            optimizers.build(name, params, momentum=beta)


@pytest.mark.parametrize("name", optimizers.available())
def test_negative_lr_and_eps_are_refused_by_name(name):
    params = [torch.nn.Parameter(torch.zeros(1))]
    with pytest.raises(ValueError, match="lr"):
        optimizers.build(name, params, lr=-1e-3)
    if optimizers.spec(name).algorithm == "adam":
        with pytest.raises(ValueError, match="eps"):
            optimizers.build(name, params, eps=-1e-8)


def test_unknown_optimizer_lists_the_valid_names():
    with pytest.raises(ValueError, match="unknown optimizer 'adamw'.*torch-sgdm-fused"):
        optimizers.build("adamw", [])


@pytest.mark.parametrize(
    ("reference", "candidates", "hyperparameters"),
    [
        ("torch-adam", ["adam", "adam-foreach"], dict(lr=1e-2, weight_decay=5e-2)),
        ("torch-sgdm", ["sgdm", "sgdm-foreach"], dict(lr=0.1, momentum=0.9, weight_decay=5e-4)),
    ],
)
def test_weight_decay_is_torch_optims_l2_on_the_gradient(reference, candidates, hyperparameters):
    """Same gradients into torch.optim and the textbook optimizers with weight decay: same
    weights after every step, and the gradients are left as backward wrote them."""
    generator = torch.Generator().manual_seed(0)
    shapes = [(16, 8), (16,), (3, 3, 5, 5)]
    start = [torch.randn(shape, generator=generator) for shape in shapes]
    params = {name: [w.clone() for w in start] for name in [reference, *candidates]}
    built = {name: optimizers.build(name, params[name], **hyperparameters) for name in params}
    for _ in range(20):
        grads = [torch.randn(shape, generator=generator) for shape in shapes]
        for name, group in params.items():
            for p, g in zip(group, grads, strict=True):
                p.grad = g.clone()
            built[name].step()
            for p, g in zip(group, grads, strict=True):
                assert torch.equal(p.grad, g)
        for name in candidates:
            for p, q in zip(params[reference], params[name], strict=True):
                torch.testing.assert_close(q, p, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["adam", "sgdm", "torch-adam", "torch-sgdm"])
def test_negative_weight_decay_is_refused_by_name(name):
    with pytest.raises(ValueError, match="weight_decay"):
        optimizers.build(name, [torch.zeros(1, requires_grad=True)], weight_decay=-1e-4)


def test_cpu_foreach_buckets_keep_order_and_size(monkeypatch):
    from optimizers import textbook

    monkeypatch.setattr(textbook, "CPU_FOREACH_BUCKET_BYTES", 400)
    params = [torch.zeros(n) for n in (30, 60, 200, 10, 10)]  # 120, 240, 800, 40, 40 bytes
    buckets = [params[part] for part in textbook.foreach_buckets(params)]
    assert [[p.numel() for p in b] for b in buckets] == [[30, 60], [200], [10, 10]]
    assert [p for b in buckets for p in b] == params


@pytest.mark.parametrize("name", ["adam-foreach", "sgdm-foreach"])
def test_cpu_foreach_buckets_change_no_arithmetic(monkeypatch, name):
    """Bucketed and whole-group foreach calls give the same bits: the split is only where the
    calls start, never in what they compute."""
    from optimizers import textbook

    results = []
    for bucket_bytes in (256, 2**40):
        monkeypatch.setattr(textbook, "CPU_FOREACH_BUCKET_BYTES", bucket_bytes)
        torch.manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(n)) for n in (7, 50, 3, 90)]
        optimizer = optimizers.build(name, params)
        for _ in range(5):
            for p in params:
                p.grad = torch.randn_like(p)
            optimizer.step()
        results.append([p.detach().clone() for p in params])
    assert all(torch.equal(a, b) for a, b in zip(*results, strict=True))
