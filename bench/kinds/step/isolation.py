"""Cases in processes of their own, so that one case's fatal fault cannot take the others.

A sticky CUDA error (``bench.measure.faults.poisons_process``) leaves the process's CUDA context
unusable: every case after it would fail the same way. With isolation each case runs in a
new process, which sends its Record back through a pipe; the parent hands the Record on as
soon as it arrives, so records are still written case by case. A child that dies without a
Record (a crash in a library, ``os._exit``, a signal) gives an ``error`` Record saying how
it ended, and the sweep goes on.

The children come from ``multiprocessing``'s *forkserver*: one server process, started on
first use, imports torch and the harness once and never touches CUDA, and each case is a
fork of it, so a case costs a fork rather than a torch import, and its CUDA context is its
own. (A child forked from the parent itself could not use CUDA once the parent had.) Where
there is no forkserver, *spawn* starts each child from scratch. Either way the child creates
its own CUDA context and cuDNN autotuning cache, which the warm-up pays for.

``CaseRunner`` runs cases in this process until one of them poisons it, and from then on
each in its own process, so the rest of the sweep is measured rather than lost.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Callable
from multiprocessing.connection import Connection

from bench.kinds.step import runner
from bench.kinds.step.suite import Case
from bench.measure import faults
from bench.record import Record


def _child(case: Case, context: runner.RunContext, initializer: Callable[[], None] | None, pipe: Connection) -> None:
    try:
        if initializer is not None:
            initializer()
        record = runner.run_case(case, context)
        record.provenance.isolated = True
        pipe.send(record)
    except KeyboardInterrupt:
        pass  # Ctrl-C reaches the whole process group; the parent ends the sweep
    finally:
        pipe.close()


def _how_it_ended(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        return f"killed by signal {signal.Signals(-exitcode).name}"
    return f"exit status {exitcode}"


def _start_method() -> multiprocessing.context.BaseContext:
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["bench.kinds.step.runner"])  # torch, models, optimizers: imported once
        return context
    return multiprocessing.get_context("spawn")


def run_isolated(case: Case, context: runner.RunContext, initializer: Callable[[], None] | None = None) -> Record:
    """Run ``case`` in a new process and return its Record (``isolated`` set), or an
    ``error`` Record if the process ended without one. ``initializer``: a picklable callable
    run in the child first, e.g. to register models that only exist in this process."""
    start = _start_method()
    receiving, sending = start.Pipe(duplex=False)
    process = start.Process(target=_child, args=(case, context, initializer, sending), name=f"convbench {case.case_id}")
    process.start()
    sending.close()  # the child holds the only sending end, so its death ends recv()
    try:
        try:
            record = receiving.recv()
        except EOFError:
            record = None
        process.join()
    finally:
        if process.is_alive():  # interrupted while waiting: the case in flight goes too
            process.terminate()
            process.join()
        receiving.close()
    if record is None:
        error = f"the case's process ended without a record ({_how_it_ended(process.exitcode)})"
        record = runner.case_record(case, context, "error", error, {"isolated": True})
    return record


class CaseRunner:
    """Runs cases one at a time: each in its own process when ``isolate``, else in this
    process until a case ends with a sticky CUDA error, after which every later case runs in
    its own process and ``warn`` is told why (once)."""

    def __init__(
        self,
        isolate: bool,
        warn: Callable[[str], None],
        initializer: Callable[[], None] | None = None,
    ) -> None:
        self.isolate, self.warn, self.initializer = isolate, warn, initializer

    def __call__(self, case: Case, context: runner.RunContext) -> Record:
        if self.isolate:
            return run_isolated(case, context, self.initializer)
        record = runner.run_case(case, context)
        if faults.poisons_process(record.error):
            self.isolate = True
            self.warn(
                f"{case.case_id} hit a fatal CUDA error, after which this process can run no more CUDA "
                "work; every later case runs in a process of its own (as with --isolate)"
            )
        return record
