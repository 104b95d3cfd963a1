"""cuDNN's autotuning pass before the warm-up: once per shape, and nothing a step reads changes."""

import dataclasses

import pytest
import torch
from torch import nn

from bench.kinds.step import autotune, runner, setup_cache
from bench.kinds.step.runner import RunContext, run_case
from tests.bench.test_runner import case
from tests.bench.test_setup_cache import READINGS

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def fresh_process_state():
    autotune.clear()
    setup_cache.clear()
    yield
    autotune.clear()
    setup_cache.clear()


@pytest.fixture
def tuning(monkeypatch):
    """The CPU treated as a device that autotunes (CUDA with cudnn.benchmark on); the rest of
    the pass runs as on the CPU."""
    monkeypatch.setattr(autotune, "tunes", lambda device, backends=torch.backends: True)


@pytest.fixture
def noisy_net(monkeypatch):
    """A registered model whose step changes running statistics and draws random numbers."""
    from models.registry import _REGISTRY, ModelSpec

    def builder(in_channels=1, num_classes=3):
        return nn.Sequential(
            nn.Conv2d(in_channels, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Flatten(),
            nn.Linear(4 * 6 * 6, num_classes),
        )

    monkeypatch.setitem(_REGISTRY, "noisy-net", ModelSpec("noisy-net", builder, (1, 6, 6), 3, "test"))
    return "noisy-net"


def records(cases) -> list[dict]:
    context = RunContext(run_id="r", suite="test", device=CPU, env={"hostname": "h"})
    return [run_case(c, context).to_dict() for c in cases]


def test_the_cpu_and_cuda_without_benchmark_do_not_autotune():
    class Backends:
        class cudnn:
            benchmark = False

    assert not autotune.tunes(CPU)
    assert not autotune.tunes(torch.device("cuda"), Backends)
    Backends.cudnn.benchmark = True
    assert autotune.tunes(torch.device("cuda", 1), Backends)
    assert records([case("cnn")])[0]["autotune_s"] is None


def test_a_rehearsal_leaves_model_gradients_optimizer_batches_and_generator_as_they_were(noisy_net):
    torch.manual_seed(0)
    model, optimizer, trainer = runner.build(case(noisy_net, batch_size=4), RunContext("r", "t", CPU), {})
    forwards = []
    model.register_forward_hook(lambda *_: forwards.append(1))
    buffers = {name: buffer.clone() for name, buffer in model.named_buffers()}
    generator = torch.get_rng_state()
    autotune.rehearse(trainer, CPU)
    assert forwards == [1]  # it did run the model
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, buffers[name]), name
    assert all(parameter.grad is None for parameter in model.parameters())
    assert optimizer.state == {}
    assert torch.equal(torch.get_rng_state(), generator)
    images, labels = next(trainer.batches)
    assert images is trainer.first_batch[0] and labels is trainer.first_batch[1]
    assert trainer.losses == []


def test_a_rehearsal_puts_back_gradients_a_model_already_had(noisy_net):
    torch.manual_seed(0)
    model, _, trainer = runner.build(case(noisy_net, batch_size=4), RunContext("r", "t", CPU), {})
    trainer.step()
    gradients = [parameter.grad for parameter in model.parameters()]
    values = [gradient.clone() for gradient in gradients]
    autotune.rehearse(trainer, CPU)
    for parameter, gradient, value in zip(model.parameters(), gradients, values, strict=True):
        assert parameter.grad is gradient and torch.equal(gradient, value)


def test_cases_autotuned_first_record_what_they_record_without_it(noisy_net, monkeypatch):
    cases = [case(noisy_net, "adam"), case(noisy_net, "sgdm"), case(noisy_net, "sgdm", batch_size=2)]
    plain = records(cases)
    monkeypatch.setattr(autotune, "tunes", lambda device, backends=torch.backends: True)
    autotuned = records(cases)
    assert [r["autotune_s"] for r in plain] == [None, None, None]
    first, twin, other_batch = (r["autotune_s"] for r in autotuned)
    assert first > 0 and twin == 0.0 and other_batch > 0  # an optimizer twin shares the shapes, a batch does not
    for without, with_ in zip(plain, autotuned, strict=True):
        assert with_["status"] == "ok"
        differing = {n for n in without if n not in {*READINGS, "autotune_s"} and without[n] != with_[n]}
        assert not differing, {n: (without[n], with_[n]) for n in differing}
        assert with_["final_loss"] == without["final_loss"]  # same weights, batches, dropout masks: bit for bit


def test_compiled_and_data_parallel_cases_autotune_in_their_warm_up(tuning):
    assert autotune.autotune_pass(case("cnn", compile=True), None, CPU) is None
    assert autotune.autotune_pass(case("cnn"), None, CPU, data_parallel=True) is None


@pytest.mark.parametrize(
    "change",
    [{"batch_size": 8}, {"precision": "tf32"}, {"channels_last": True}, {"model_kwargs": {"width": 8}}, {"model": "x"}],
)
def test_what_changes_a_convolution_shape_or_its_algorithms_is_tuned_again(change):
    base = case("resnet20")
    assert autotune.key(base, CPU) != autotune.key(dataclasses.replace(base, **change), CPU)
    assert autotune.key(base, CPU) == autotune.key(dataclasses.replace(base, optimizer="sgdm"), CPU)
