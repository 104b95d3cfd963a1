"""Memory predictions made ahead of their cases, in a worker process.

A case's memory prediction (``bench.kinds.step.memory_pass.predict``: one step on fake
tensors) is host work only, 0.5 to 1.4 s a case on an H100's host, and the case waited for
it between its timed steps and its record. On CUDA the device runs the case while the
host's other cores idle, so ``predicting_ahead`` moves the prediction there: one worker
process (``multiprocessing``'s *spawn*: a fresh interpreter, no CUDA state inherited, torch
limited to one thread), started once for a run, predicts each case as the case before it
runs, and the case collects its prediction when its record is assembled. On the CPU the
worker would compete for the cores the measured steps run on, so there every prediction
stays in the case's own process, as before.

What a case records is the same either way: the worker runs the same ``predict`` on the
same case and device, and anything it cannot do the same way falls back to the case's own
process, which then records what it records without the worker (its error included):

- a case that cannot be pickled, or a model or optimizer name that the worker resolves to
  another builder (or cannot resolve: one registered only in this process);
- a prediction that raises in the worker (the case's own process tries again and records
  its error, as it would have);
- a worker that died, or that has not answered within ``WAIT_LIMIT_S`` (it is stopped; every
  later case predicts in its own process).

A prediction for CUDA runs on CUDA's fake tensors, whose backward pass touches the real
device, so the worker may hold a CUDA context of its own on the measured GPU (some hundreds of
MiB, none of the case's allocator figures): ``convbench run`` predicts in-process beside
``--find-max-batch``, whose search fits the device's memory.

The worker is a plain ``multiprocessing.Process`` on a pipe rather than a
``concurrent.futures.ProcessPoolExecutor``: a worker that hangs must be stopped, which the
executor cannot do before Python 3.14.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import pickle
import signal
import time
from collections.abc import Iterator, Sequence
from multiprocessing.connection import Connection, wait

import torch

import models
import optimizers
from bench.kinds.step import memory_pass, setup_cache
from bench.kinds.step.memory_pass import Prediction
from bench.kinds.step.suite import Case

#: Seconds a case waits for the worker's prediction before predicting itself. A prediction
#: takes seconds; this only guards a run against a worker that hangs.
WAIT_LIMIT_S = 300.0
#: Seconds the worker has to finish its prediction in flight when the run ends.
CLOSE_LIMIT_S = 10.0


class WorkerFailed(RuntimeError):
    """The worker cannot give this prediction (the message says why); predict in-process."""


def origin(case: Case) -> tuple[str, str]:
    """Where the builders of ``case``'s model and optimizer are defined (module and qualified
    name): the worker predicts only where its registry resolves both names to the same."""
    return tuple(
        f"{builder.__module__}.{builder.__qualname__}"
        for builder in (models.spec(case.model).builder, optimizers.spec(case.optimizer).builder)
    )


def _serve(requests: Connection) -> None:
    """The worker: answer ``(key, case, device, origin)`` requests in order with
    ``(key, Prediction)`` or ``(key, error message)`` until ``None`` arrives."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the run's to handle; it closes the worker
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    while True:
        try:
            request = requests.recv()
        except EOFError:  # the run's process is gone
            return
        if request is None:
            return
        key, case, device, expected_origin = request
        try:
            if origin(case) != expected_origin:
                raise WorkerFailed(f"{case.model!r} or {case.optimizer!r} is another builder in the worker")
            answer = memory_pass.predict(case, torch.device(device))
        except BaseException as error:  # noqa: BLE001  (any failure is the case's own process's to record)
            answer = f"{type(error).__name__}: {error}"
        requests.send((key, answer))


class PredictionWorker:
    """One spawned process predicting cases in the order they are submitted."""

    def __init__(self) -> None:
        start = multiprocessing.get_context("spawn")
        self._pipe, child_end = start.Pipe()
        self.process = start.Process(target=_serve, args=(child_end,), name="convbench memory predictions", daemon=True)
        self.process.start()
        child_end.close()  # the worker holds the only other end, so its death ends recv()
        self._answers: dict[tuple, Prediction | str] = {}
        self.failure: str | None = None  # why the worker is no longer used

    def submit(self, key: tuple, case: Case, device: torch.device) -> bool:
        """Ask for ``case``'s prediction under ``key``; False where it cannot be asked
        (the worker has failed, the case does not pickle, a name does not resolve here)."""
        if self.failure is not None:
            return False
        try:
            request = pickle.dumps((key, case, str(device), origin(case)))
        except Exception:  # noqa: BLE001  (a case the worker cannot take is predicted in-process)
            return False
        try:
            self._pipe.send_bytes(request)
        except OSError as error:
            self.failure = f"the worker could not be reached: {error}"
            return False
        return True

    def result(self, key: tuple, timeout_s: float = WAIT_LIMIT_S) -> Prediction:
        """The prediction submitted under ``key``, once the worker has made it. Raises
        WorkerFailed where the worker could not make it, died, or took over ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while key not in self._answers:
            if self.failure is not None:
                raise WorkerFailed(self.failure)
            left = deadline - time.monotonic()
            if not wait([self._pipe, self.process.sentinel], max(left, 0.0)):
                self._fail(f"no prediction within {timeout_s:g} s")
            elif self._pipe.poll():  # an answer sent just before dying is still read
                try:
                    answer_key, answer = self._pipe.recv()
                except (EOFError, OSError):
                    self._fail(f"the worker died ({self._how_it_ended()})")
                    continue
                self._answers[answer_key] = answer
            else:
                self._fail(f"the worker died ({self._how_it_ended()})")
        answer = self._answers.pop(key)
        if isinstance(answer, str):
            raise WorkerFailed(answer)
        return answer

    def _fail(self, why: str) -> None:
        self.failure = why
        self._stop(0.0)

    def _how_it_ended(self) -> str:
        self.process.join(1.0)
        code = self.process.exitcode
        return f"killed by signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit {code}"

    def close(self) -> None:
        """Let the worker finish what it is doing (at most ``CLOSE_LIMIT_S``), then end it."""
        with contextlib.suppress(OSError):
            self._pipe.send(None)
        self._stop(CLOSE_LIMIT_S)
        self._pipe.close()

    def _stop(self, grace_s: float) -> None:
        self.process.join(grace_s)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


class Lookahead:
    """The predictions of a run's cases, each asked of the worker as the case before it
    starts. ``share``: cases with the same ``setup_cache.prediction_key`` are predicted
    once (the run shares predictions, ``RunContext.reuse``)."""

    def __init__(self, cases: Sequence[Case], device: torch.device, share: bool, worker: PredictionWorker) -> None:
        self.cases, self.device, self.share, self.worker = list(cases), device, share, worker
        self.asked: set[tuple] = set()

    def key(self, case: Case) -> tuple:
        own = setup_cache.prediction_key(case, self.device)
        return own if self.share else (*own, case.case_id)

    def starting(self, case: Case) -> None:
        """``case`` starts: ask for its prediction (if not yet asked) and the next case's."""
        position = next((i for i, planned in enumerate(self.cases) if planned is case or planned == case), None)
        if position is None:
            return
        for upcoming in self.cases[position : position + 2]:
            key = self.key(upcoming)
            if key not in self.asked and memory_pass.eager_only(upcoming) is None:
                if self.worker.submit(key, upcoming, self.device):
                    self.asked.add(key)

    def predict(self, case: Case, device: torch.device) -> Prediction:
        """``memory_pass.predict(case, device)``: the worker's, where it was asked and could
        make it, else made here (so an error is this process's, as without the worker)."""
        key = self.key(case)
        if device == self.device and key in self.asked:
            self.asked.discard(key)  # a second request (a failed shared one tried again) predicts here
            try:
                return collect(self.worker, key)
            except WorkerFailed:
                pass
        return memory_pass.predict(case, device)


def collect(worker: PredictionWorker, key: tuple) -> Prediction:
    """The worker's prediction under ``key`` (a function of its own so that the wait is
    timed as a piece of a case, ``benchmarks.case_costs``)."""
    return worker.result(key)


_active: list[Lookahead] = []  # the run's Lookahead while predicting_ahead is in force


def wanted(device: torch.device) -> bool:
    """Whether a run on ``device`` predicts ahead in a worker: on CUDA only, where the
    worker's core is not one the measured steps need."""
    return device.type == "cuda"


@contextlib.contextmanager
def predicting_ahead(
    cases: Sequence[Case],
    device: torch.device,
    memory_pass_on: bool = True,
    share: bool = True,
    ahead: bool | None = None,
) -> Iterator[None]:
    """For the block (a run of ``cases`` in this process, in this order, on ``device``):
    predict each case's memory in a worker while the case before it runs. ``ahead``: whether
    to (default ``wanted(device)``; tests force the worker on the CPU); nothing happens
    without the memory pass (``memory_pass_on``) or with no cases. ``share`` as
    ``RunContext.reuse``."""
    if not (wanted(device) if ahead is None else ahead) or not memory_pass_on or not cases:
        yield
        return
    worker = PredictionWorker()
    _active.append(Lookahead(cases, device, share, worker))
    try:
        yield
    finally:
        _active.pop()
        worker.close()


def starting(case: Case) -> None:
    """Called as ``case`` starts: asks the worker for the predictions ahead, if there is one."""
    if _active:
        _active[-1].starting(case)


def predict(case: Case, device: torch.device) -> Prediction:
    """``memory_pass.predict``, from the worker where ``predicting_ahead`` made it there."""
    return _active[-1].predict(case, device) if _active else memory_pass.predict(case, device)
