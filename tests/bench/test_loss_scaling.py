"""fp16 loss scaling: updates GradScaler skips are counted, in warm-up and in the timed steps,
and no memory or buffer figure comes from an optimizer that has not stepped."""

import pytest
import torch
from torch import nn

import models
import optimizers
from bench.kinds.step import runner
from bench.kinds.step.runner import run_case
from bench.kinds.step.suite import Case
from models.registry import _REGISTRY, ModelSpec
from tests.bench.test_runner import CONTEXT
from tests.bench.test_runner import case as runner_case


class _InfGradient(torch.autograd.Function):
    """Identity forward; an infinite gradient backward, as an fp16 overflow gives GradScaler."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


class Overflowing(nn.Module):
    """A small conv net whose backward overflows on the forward calls in ``overflow_at``
    (1-based), and only there: the loss stays finite."""

    def __init__(self, overflow_at, in_channels: int = 1, num_classes: int = 3) -> None:
        super().__init__()
        self.overflow_at, self.calls = overflow_at, 0
        self.conv = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.head = nn.Linear(4, num_classes)

    def forward(self, x):
        features = self.conv(x)
        if not x.is_meta:
            self.calls += 1
            if self.overflow_at(self.calls):
                features = _InfGradient.apply(features)
        return self.head(features.mean((2, 3)))


@pytest.fixture
def overflow_net(monkeypatch):
    """Registers ``overflow-net``, whose backward overflows on the calls ``set_calls`` names,
    and counts the updates that really happen (GradScaler skips the step) of the case's own
    optimizer, the first one built (the memory pass builds its own afterwards)."""
    state = {"overflow_at": lambda call: False, "updates": 0, "built": 0}

    def builder(in_channels=1, num_classes=3):
        return Overflowing(lambda call: state["overflow_at"](call), in_channels, num_classes)

    monkeypatch.setitem(_REGISTRY, "overflow-net", ModelSpec("overflow-net", builder, (1, 8, 8), 3, "test"))
    real_build = optimizers.build

    def counting_build(name, params, **kwargs):
        optimizer = real_build(name, params, **kwargs)
        state["built"] += 1
        if state["built"] > 1:
            return optimizer
        step = optimizer.step

        def counted(*args, **kw):
            state["updates"] += 1
            return step(*args, **kw)

        optimizer.step = counted
        return optimizer

    monkeypatch.setattr(optimizers, "build", counting_build)
    return state


def case(**changes) -> Case:
    """An fp16 case of ``overflow-net``: 2 warm-up steps, then 2 repeats of 3 timed steps."""
    return runner_case(**{"model": "overflow-net", "precision": "fp16", "warmup": 2, **changes})


def test_skipped_warm_up_updates_extend_the_warm_up_until_the_state_exists(overflow_net):
    # The first five updates overflow (a fresh torchvision resnet50 in fp16 skips its first five).
    overflow_net["overflow_at"] = lambda call: call <= 5
    record = run_case(case(warmup=2), CONTEXT)
    assert record.status == "ok", record.error
    assert (record.warmup_steps_run, record.skipped_steps_warmup, record.skipped_steps_timed) == (6, 5, 0)
    # The optimizer's own calls: the one real warm-up update, the six timed ones, and the
    # untimed step after them that counts host syncs (bench.measure.host).
    assert overflow_net["updates"] == 1 + 6 + 1
    # Adam's two fp32 buffers per parameter, as theory says, not the 0 of an optimizer that never stepped.
    params = models.build("overflow-net").parameters()
    n = sum(p.numel() for p in params)
    assert record.params == n
    assert (record.state_buffers_per_param, record.state_buffers_theory) == (2.0, 2)
    assert record.optimizer_state_bytes == 8 * n
    # Five halvings of GradScaler's default scale 2**16, and no growth in so few steps.
    assert record.loss_scale == 2.0**16 / 2**5


def test_skips_in_the_timed_steps_are_counted(overflow_net):
    # Warm-up is calls 1-2; the timed steps are calls 3-8. Overflow on the 2nd and 5th timed step.
    overflow_net["overflow_at"] = lambda call: call in (4, 7)
    record = run_case(case(), CONTEXT)
    assert record.status == "ok", record.error
    assert (record.warmup_steps_run, record.skipped_steps_warmup, record.skipped_steps_timed) == (2, 0, 2)
    assert overflow_net["updates"] == 2 + 6 - 2 + 1  # and the untimed step that counts host syncs
    assert record.loss_scale == 2.0**16 / 2**2


def test_an_optimizer_that_never_steps_gives_no_memory_figures(overflow_net, monkeypatch):
    overflow_net["overflow_at"] = lambda call: True
    monkeypatch.setattr(runner, "EXTRA_WARMUP_LIMIT", 3)  # the real limit, 64, takes long on a CPU
    record = run_case(case(warmup=1), CONTEXT)
    assert record.status == "diverged"
    assert "never stepped" in record.error and "all 4 warm-up updates" in record.error
    assert record.warmup_steps_run == record.skipped_steps_warmup == 1 + 3
    assert overflow_net["updates"] == 0
    for figure in ("optimizer_state_bytes", "state_buffers_per_param", "state_bytes_per_param", "grad_bytes"):
        assert getattr(record, figure) is None, figure
    assert record.step_time_ms is None


def test_other_precisions_record_no_loss_scaling(overflow_net):
    record = run_case(case(precision="fp32"), CONTEXT)
    assert record.status == "ok", record.error
    assert record.warmup_steps_run == 2
    assert (record.skipped_steps_warmup, record.skipped_steps_timed, record.loss_scale) == (None, None, None)
