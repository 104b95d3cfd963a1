"""Set-up shared between cases: the same models, predictions and records as without it."""

import dataclasses
import gc
import weakref

import pytest
import torch
from torch._subclasses.fake_tensor import is_fake

import models
from bench.kinds.step import memory_pass, runner, setup_cache
from bench.kinds.step.runner import RunContext, run_case
from tests.bench.test_runner import case

CPU = torch.device("cpu")
#: Record fields that are clock or resident-set readings: they differ between any two runs of a case.
READINGS = {
    "timestamp",
    "step_time_samples_ms",
    "step_time_ms",
    "step_time_iqr_ms",
    "step_time_min_ms",
    "throughput",
    "achieved_tflops",
    "mfu",
    "host_time_ms",
    "steps_s",
    "case_wall_s",
    "prediction_s",
    "load_average_1m",
    "other_cpu_fraction",
    "static_memory_bytes",
    "peak_memory_bytes",
    "rss_activation_bytes",
    "energy_per_step_j",
    "samples_per_joule",
}


@pytest.fixture(autouse=True)
def empty_caches():
    setup_cache.clear()
    yield
    setup_cache.clear()


@pytest.fixture
def builds(monkeypatch):
    """Names of the models the registry built with real weights (not on fake tensors or the meta device)."""
    calls = []
    build = models.build

    def counted(name, **kwargs):
        built = build(name, **kwargs)
        if not any(is_fake(p) or p.is_meta for p in built.parameters()):
            calls.append(name)
        return built

    monkeypatch.setattr(models, "build", counted)
    return calls


def fresh_build(seed: int, model: str = "resnet20"):
    """The model and the generator state after it, built as a case with nothing shared."""
    torch.manual_seed(seed)
    built = models.build(model, in_channels=3, num_classes=10)
    return built, torch.get_rng_state()


def assert_same_tensors(built, expected):
    got, want = built.state_dict(), expected.state_dict()
    assert list(got) == list(want)
    for name in want:
        assert got[name].dtype == want[name].dtype and got[name].stride() == want[name].stride(), name
        assert torch.equal(got[name], want[name]), name


def test_a_reused_model_is_a_fresh_build_bit_for_bit_and_leaves_the_generator_as_one(builds):
    expected, generator_after = fresh_build(0)
    builds.clear()
    shared = case("resnet20")
    torch.manual_seed(0)
    first = runner.build_model(shared, reuse=True)
    with torch.no_grad():  # the first case trains its model: the kept copy must not change
        for parameter in first.parameters():
            parameter.add_(1.0)
    torch.manual_seed(0)
    second = runner.build_model(shared, reuse=True)
    assert builds == ["resnet20"]  # the second came from the cache
    assert second is not first
    assert_same_tensors(second, expected)
    assert torch.equal(torch.get_rng_state(), generator_after)
    assert torch.equal(torch.rand(3), (torch.set_rng_state(generator_after), torch.rand(3))[1])


def test_another_generator_state_builds_another_model(builds):
    shared = case("resnet20")
    torch.manual_seed(0)
    runner.build_model(shared, reuse=True)
    torch.manual_seed(1)
    other = runner.build_model(shared, reuse=True)
    assert builds == ["resnet20", "resnet20"]
    assert_same_tensors(other, fresh_build(1)[0])


def test_a_name_registered_again_is_built_by_its_new_builder(monkeypatch):
    from models.registry import _REGISTRY, ModelSpec

    def make(width):
        return lambda in_channels=1, num_classes=3: torch.nn.Linear(width, num_classes)

    monkeypatch.setitem(_REGISTRY, "twin", ModelSpec("twin", make(4), (1, 2, 2), 3, "test"))
    twin = dataclasses.replace(case("cnn"), model="twin", input_shape=(1, 2, 2), num_classes=3)
    torch.manual_seed(0)
    assert runner.build_model(twin, reuse=True).in_features == 4
    monkeypatch.setitem(_REGISTRY, "twin", ModelSpec("twin", make(5), (1, 2, 2), 3, "test"))
    torch.manual_seed(0)
    assert runner.build_model(twin, reuse=True).in_features == 5


def records(cases, reuse: bool) -> list[dict]:
    context = RunContext(run_id="r", suite="test", device=CPU, env={"hostname": "h"}, reuse=reuse)
    return [run_case(c, context).to_dict() for c in cases]


@pytest.mark.slow
def test_cases_that_share_set_up_record_what_cases_that_do_not_record(builds):
    cases = [case("cnn", "adam"), case("cnn", "sgdm")]
    alone = records(cases, reuse=False)
    fresh_builds = len(builds)
    builds.clear()
    shared = records(cases, reuse=True)
    assert (fresh_builds, len(builds)) == (4, 1)  # timed pass and memory pass of each case, or once
    for without, with_ in zip(alone, shared, strict=True):
        assert with_["status"] == "ok"
        differing = {name for name in without if name not in READINGS and without[name] != with_[name]}
        assert not differing, {name: (without[name], with_[name]) for name in differing}
        assert with_["final_loss"] == without["final_loss"]  # same weights and batch, bit for bit


def test_fp32_and_tf32_share_one_prediction_and_it_is_tf32s_own():
    cuda = torch.device("cuda")  # predicted on the CPU stand-in where there is no GPU
    fp32, tf32, sgdm = case("cnn"), case("cnn", precision="tf32"), case("cnn", "sgdm", precision="tf32")
    first = setup_cache.prediction(fp32, cuda, memory_pass.predict)
    assert setup_cache.prediction(tf32, cuda, memory_pass.predict) is first
    assert memory_pass.predict(tf32, cuda).breakdown == first.breakdown
    other = setup_cache.prediction(sgdm, cuda, memory_pass.predict)
    assert other.breakdown == memory_pass.predict(sgdm, cuda).breakdown != first.breakdown


@pytest.mark.parametrize(
    "change",
    [
        {"optimizer": "sgdm"},
        {"precision": "bf16"},
        {"batch_size": 8},
        {"channels_last": True},
        {"hyperparameters": {"lr": 0.1}},
        {"model_kwargs": {"width": 8}},
    ],
)
def test_a_prediction_is_never_shared_across_what_can_change_it(change):
    base = case("resnet20")
    assert setup_cache.prediction_key(base, CPU) != setup_cache.prediction_key(dataclasses.replace(base, **change), CPU)


def test_a_case_made_after_the_freeze_is_still_collected():
    setup_cache.freeze_survivors()
    assert gc.get_freeze_count() > 0
    cycle = [torch.zeros(1000)]
    cycle.append(cycle)
    tensor = weakref.ref(cycle[0])
    del cycle
    gc.collect()
    assert tensor() is None
