"""The constant-gradient closed forms against the real optimizers, run in float64."""

import math

import pytest
import torch

import optimizers
from optimizers.theory import adam_constant_gradient, sgdm_constant_gradient

GRADIENTS = [1e-6, 3e-4, 0.1, 1.0, 42.0, 1e3, -1e-6, -7.5]
STEPS = 1000


def run_constant_gradient(name: str, cs: list[float], steps: int, keys: tuple[str, ...], **hp) -> list[dict]:
    """Hold every coordinate's gradient at its c and record weight and state after each step."""
    w = torch.zeros(len(cs), dtype=torch.float64, requires_grad=True)
    optimizer = optimizers.build(name, [w], **hp)
    g = torch.tensor(cs, dtype=torch.float64)
    history = []
    for _ in range(steps):
        w.grad = g.clone()
        optimizer.step()
        state = optimizer.state[w]
        history.append({"w": w.detach().clone(), **{k: state[k].clone() for k in keys}})
    return history


def relative_error(measured: float, exact: float) -> float:
    return abs(measured - exact) / abs(exact)


@pytest.mark.parametrize(
    "name,keys", [("sgdm", ("m",)), ("sgdm-foreach", ("m",)), ("torch-sgdm", ("momentum_buffer",))]
)
@pytest.mark.parametrize("beta", [0.5, 0.9, 0.99])
def test_sgdm_matches_closed_form(name, keys, beta):
    lr = 0.01
    history = run_constant_gradient(name, GRADIENTS, STEPS, keys, lr=lr, momentum=beta)
    for t, row in enumerate(history, start=1):
        for i, c in enumerate(GRADIENTS):
            exact = sgdm_constant_gradient(t, c, lr, beta)
            assert relative_error(row["w"][i].item(), exact["w"]) <= 1e-6
            assert relative_error(row[keys[0]][i].item(), exact["m"]) <= 1e-6


@pytest.mark.parametrize(
    "name,keys", [("adam", ("m", "v")), ("adam-foreach", ("m", "v")), ("torch-adam", ("exp_avg", "exp_avg_sq"))]
)
@pytest.mark.parametrize("beta1,beta2", [(0.9, 0.999), (0.5, 0.9), (0.99, 0.9999)])
@pytest.mark.parametrize("eps", [0.0, 1e-8])
def test_adam_matches_closed_form(name, keys, beta1, beta2, eps):
    lr = 1e-3
    history = run_constant_gradient(name, GRADIENTS, STEPS, keys, lr=lr, betas=(beta1, beta2), eps=eps)
    for t, row in enumerate(history, start=1):
        for i, c in enumerate(GRADIENTS):
            exact = adam_constant_gradient(t, c, lr, beta1, beta2, eps)
            assert relative_error(row["w"][i].item(), exact["w"]) <= 1e-6
            assert relative_error(row[keys[0]][i].item(), exact["m"]) <= 1e-6
            assert relative_error(row[keys[1]][i].item(), exact["v"]) <= 1e-6


def test_closed_forms_against_the_recurrences():
    """Independent of any optimizer: iterate the defining recurrences in plain Python."""
    c, lr, beta, beta1, beta2 = 0.37, 0.05, 0.9, 0.8, 0.95
    m = w = 0.0
    am = av = aw = 0.0
    for t in range(1, 301):
        m = beta * m + c
        w -= lr * m
        am = beta1 * am + (1 - beta1) * c
        av = beta2 * av + (1 - beta2) * c * c
        m_hat, v_hat = am / (1 - beta1**t), av / (1 - beta2**t)
        aw -= lr * m_hat / math.sqrt(v_hat)
        sgdm = sgdm_constant_gradient(t, c, lr, beta)
        adam = adam_constant_gradient(t, c, lr, beta1, beta2)
        assert sgdm["m"] == pytest.approx(m, rel=1e-12) and sgdm["w"] == pytest.approx(w, rel=1e-12)
        for key, value in {"m": am, "v": av, "m_hat": m_hat, "v_hat": v_hat, "w": aw}.items():
            assert adam[key] == pytest.approx(value, rel=1e-12)


@pytest.mark.parametrize("name", ["adam", "adam-foreach", "torch-adam"])
def test_adam_weight_does_not_depend_on_c_without_eps(name):
    positive = [1e-6, 1e-3, 1.0, 1e3]
    history = run_constant_gradient(name, positive, 200, (), lr=0.01, betas=(0.9, 0.999), eps=0.0)
    for t, row in enumerate(history, start=1):
        assert torch.allclose(row["w"], torch.full_like(row["w"], -0.01 * t), rtol=1e-9, atol=0)


@pytest.mark.parametrize("name", ["sgdm", "sgdm-foreach", "torch-sgdm"])
def test_sgdm_weight_is_linear_in_c(name):
    cs = [1e-6, 1e-3, 1.0, 1e3]
    history = run_constant_gradient(name, cs, 200, (), lr=0.01, momentum=0.9)
    for row in history:
        per_unit = row["w"] / torch.tensor(cs, dtype=torch.float64)
        assert torch.allclose(per_unit, per_unit[2].expand_as(per_unit), rtol=1e-9, atol=0)
    assert history[-1]["w"][3] / history[-1]["w"][0] == pytest.approx(1e9, rel=1e-9)


def test_adam_zero_gradient_without_eps_is_an_error():
    with pytest.raises(ValueError, match="eps"):
        adam_constant_gradient(5, 0.0, 1e-3, 0.9, 0.999, eps=0.0)
    assert adam_constant_gradient(5, 0.0, 1e-3, 0.9, 0.999, eps=1e-8)["w"] == 0.0


@pytest.mark.parametrize(
    "call,name",
    [
        (lambda: sgdm_constant_gradient(0, 1.0, 0.1, 0.9), "t"),
        (lambda: sgdm_constant_gradient(1, 1.0, -0.1, 0.9), "lr"),
        (lambda: sgdm_constant_gradient(1, 1.0, 0.1, 1.0), "beta"),
        (lambda: adam_constant_gradient(1, 1.0, 0.1, 0.0, 0.9), "beta1"),
        (lambda: adam_constant_gradient(1, 1.0, 0.1, 0.9, 1.2), "beta2"),
        (lambda: adam_constant_gradient(1, 1.0, 0.1, 0.9, 0.9, eps=-1.0), "eps"),
    ],
)
def test_invalid_arguments_are_named(call, name):
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        call()
