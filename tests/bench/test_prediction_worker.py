"""Memory predictions made ahead in a worker process: the same records as made in-process,
and every way the worker can fail falls back to the case's own process."""

import dataclasses

import pytest
import torch
from torch import nn

from bench.kinds.step import memory_pass, prediction_worker, setup_cache
from bench.kinds.step.runner import RunContext, run_case
from tests.bench.test_runner import case
from tests.bench.test_setup_cache import READINGS

CPU = torch.device("cpu")


class DataDependent(nn.Module):
    """Scales its input by a value read from it: a real step runs, a fake one cannot read it."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_channels * 4 * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1) / float(x.abs().max()))


def data_dependent_net(in_channels: int = 1, num_classes: int = 3) -> nn.Module:
    return DataDependent(in_channels, num_classes)


data_dependent_net.input_shape = (1, 4, 4)


@pytest.fixture(autouse=True)
def empty_caches():
    setup_cache.clear()
    yield
    setup_cache.clear()


@pytest.fixture(scope="module")
def worker():
    """One worker for the tests that leave it running (a spawned worker takes seconds to start)."""
    started = prediction_worker.PredictionWorker()
    yield started
    started.close()


@pytest.fixture
def predicted_here(monkeypatch):
    """The cases this process predicted itself."""
    calls = []
    predict = memory_pass.predict

    def counted(case, device):
        calls.append(case.case_id)
        return predict(case, device)

    monkeypatch.setattr(memory_pass, "predict", counted)
    return calls


def run(cases, lookahead=None) -> list[dict]:
    """The records of ``cases`` run in order, with ``lookahead`` as the run's predictions ahead."""
    context = RunContext(run_id="r", suite="test", device=CPU, env={"hostname": "h"})
    if lookahead is not None:
        prediction_worker._active.append(lookahead)
    try:
        return [run_case(c, context).to_dict() for c in cases]
    finally:
        if lookahead is not None:
            prediction_worker._active.pop()


def assert_same_records(here, ahead):
    for without, with_ in zip(here, ahead, strict=True):
        differing = {name for name in without if name not in READINGS and without[name] != with_[name]}
        assert not differing, {name: (without[name], with_[name]) for name in differing}


def test_a_run_on_the_cpu_predicts_in_its_own_process_and_on_cuda_ahead():
    assert not prediction_worker.wanted(CPU)
    assert prediction_worker.wanted(torch.device("cuda", 1))
    with prediction_worker.predicting_ahead([case("cnn")], CPU):
        assert prediction_worker._active == []  # no worker competes with the steps for the cores
    with prediction_worker.predicting_ahead([case("cnn")], CPU, memory_pass_on=False, ahead=True):
        assert prediction_worker._active == []  # nothing to predict


@pytest.mark.slow
def test_cases_predicted_ahead_record_what_cases_predicted_in_process(worker, predicted_here):
    cases = [case("cnn", "adam"), case("cnn", "sgdm", batch_size=2)]
    here = run(cases)
    assert predicted_here == [c.case_id for c in cases]
    predicted_here.clear()
    ahead = run(cases, prediction_worker.Lookahead(cases, CPU, share=True, worker=worker))
    assert predicted_here == []  # the worker made every prediction
    assert all(record["status"] == "ok" and record["predicted_peak_bytes"] for record in ahead)
    assert_same_records(here, ahead)


def test_a_model_registered_only_here_is_predicted_here(worker, predicted_here, monkeypatch):
    from models.registry import _REGISTRY

    monkeypatch.setitem(_REGISTRY, "here-only", dataclasses.replace(_REGISTRY["cnn"], name="here-only"))
    local = case("here-only")
    lookahead = prediction_worker.Lookahead([local], CPU, share=False, worker=worker)
    lookahead.starting(local)
    expected = memory_pass.predict(local, CPU)
    predicted_here.clear()
    assert lookahead.predict(local, CPU).breakdown == expected.breakdown
    assert predicted_here == [local.case_id]
    # A name the worker knows, but as another builder here: predicted here too.
    cnn = _REGISTRY["cnn"].builder

    def another_cnn(**kwargs):
        return cnn(**kwargs)

    monkeypatch.setitem(_REGISTRY, "cnn", dataclasses.replace(_REGISTRY["cnn"], builder=another_cnn))
    other = case("cnn")
    assert worker.submit(("other",), other, CPU)
    with pytest.raises(prediction_worker.WorkerFailed, match="another builder"):
        worker.result(("other",))
    lookahead = prediction_worker.Lookahead([other], CPU, share=False, worker=worker)
    lookahead.starting(other)
    predicted_here.clear()
    assert lookahead.predict(other, CPU).breakdown == expected.breakdown
    assert predicted_here == [other.case_id]


def test_a_case_that_does_not_pickle_is_predicted_here(worker, predicted_here):
    unpicklable = case("cnn", model_kwargs={"width": lambda: 1})
    assert not worker.submit(("k",), unpicklable, CPU)
    assert worker.failure is None  # the worker goes on for the cases that do pickle


def test_a_prediction_that_fails_in_the_worker_records_the_error_it_records_in_process(worker):
    unpredictable = case(f"{__name__}:data_dependent_net")  # the worker imports it by this reference
    [here] = run([unpredictable])
    [ahead] = run([unpredictable], prediction_worker.Lookahead([unpredictable], CPU, share=True, worker=worker))
    assert here["status"] == "ok" and here["tracked_peak_bytes"]
    assert "prediction:" in here["memory_pass_error"]
    assert worker.submit(("unpredictable",), unpredictable, CPU)  # the worker tries and fails too
    with pytest.raises(prediction_worker.WorkerFailed, match="DataDependent"):
        worker.result(("unpredictable",))
    assert ahead["memory_pass_error"] == here["memory_pass_error"]


@pytest.mark.slow
def test_a_worker_that_dies_or_hangs_is_stopped_and_the_cases_predict_here(predicted_here):
    first, second = case("cnn", "adam"), case("cnn", "sgdm")
    dying = prediction_worker.PredictionWorker()
    lookahead = prediction_worker.Lookahead([first, second], CPU, share=True, worker=dying)
    lookahead.starting(first)
    dying.process.kill()
    assert lookahead.predict(first, CPU).breakdown == memory_pass.predict(first, CPU).breakdown
    assert "died (killed by signal SIGKILL)" in dying.failure
    assert not dying.submit(("k",), second, CPU)
    dying.close()

    hanging = prediction_worker.PredictionWorker()
    assert hanging.submit(("k",), first, CPU)
    with pytest.raises(prediction_worker.WorkerFailed, match="no prediction within 0 s"):
        hanging.result(("k",), timeout_s=0.0)  # a fresh interpreter cannot have answered yet
    assert not hanging.process.is_alive()
    hanging.close()
