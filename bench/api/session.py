"""The life of a measuring run, the same for every kind: check where it goes, open the run
folder, take stop signals, watch the machine's load around each case, close the folder,
add it to the history, print the summary, write the report, and say how it ended.

``RunSession`` is that lifecycle as a context manager; ``run``, ``optim`` and ``train``
(bench.api) differ only in what happens inside it::

    with RunSession("run", destinations, suite, suite_toml, env, cases, machine) as session:
        for case in cases:
            session.record(case.case_id, lambda: run_case(case))
    session.exit_status   # 0, 1, 130, 143: see EXIT_* below

Messages go through a ``Console`` (standard error, prefixed ``convbench COMMAND:``); the
summary table goes to standard output only where the caller asks for it (the command line
does, ``bench.run_suite`` does not).
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import sqlite3
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from bench.api.options import Destinations
    from bench.measure.stopping import StopSignals
    from bench.record import Record
    from bench.storage.store import RunWriter

#: Exit statuses of the measuring commands (``run``, ``optim``, ``train``).
EXIT_OK = 0  # every case has a record; oom and diverged are results, not failures of the run
EXIT_CASE_ERROR = 1  # a case ended "error", or a section, the report, the history or a write failed
EXIT_BAD_INPUT = 2  # nothing ran: unknown name, bad suite, missing device or dataset, unusable paths
EXIT_INTERRUPTED = 128 + signal.SIGINT  # Ctrl-C: the run folder is kept, marked for what it is
EXIT_TERMINATED = 128 + signal.SIGTERM  # SIGTERM: likewise
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE  # whoever read the output stopped reading (any command)


@dataclasses.dataclass(frozen=True)
class Console:
    """Where a command's messages go: ``say(text)`` prints ``convbench COMMAND: text`` on
    standard error; ``tables`` says whether summaries are printed on standard output."""

    command: str
    tables: bool = True

    def say(self, text: str) -> None:
        print(f"convbench {self.command}: {text}", file=sys.stderr, flush=True)

    def warn(self, text: str) -> None:
        self.say(f"warning: {text}")


@dataclasses.dataclass
class Measuring:
    """How the measuring part of a run is ending: ``code``, the exit status so far, and
    ``stopped_by``, what cut it short (None: it ran to its end)."""

    code: int = EXIT_OK
    stopped_by: str | None = None


def check_destinations(destinations: Destinations) -> Path:
    """Check where a run will go before it starts: the results root is a folder or can be
    made, and the history (default inside the results root) can take the run. Returns the
    history's path. Raises RunFolderError or HistoryError."""
    from bench.storage import history

    return history.check_destinations(destinations.results, destinations.history)


class RunSession:
    """One measuring run from its folder to its report (see the module's docstring).

    Args:
        command: the command's name, for messages (``run``, ``optim``, ``train``).
        destinations: where the run goes; checked here, before the folder exists.
        suite, suite_toml: the suite's name and resolved TOML (written as ``suite.toml``).
        env: ``bench.measure.env.collect_env()``.
        case_ids: the cases the run will measure, in order.
        machine: the machine it is filed under (``bench.measure.machine``).
        sections: further parts of the run after the cases (e.g. ``["rf"]``), one progress
            step each.
        tags: labels of the run (``run.json``'s ``tags``; ``--baseline-tag`` selects on them).
        summary: records -> the summary table printed at the end (default: the report's).
        console: where messages go (default: standard error, tables on standard output).
        watch_load: record each case's ``load_average_1m`` and ``other_cpu_fraction``
            and warn when other processes took more than ``BUSY_FRACTION`` of the CPUs.

    Raises (on construction, before anything is written): RunFolderError, HistoryError.
    After the ``with`` block, ``exit_status`` holds the run's exit status.
    """

    def __init__(
        self,
        command: str,
        destinations: Destinations,
        suite: str,
        suite_toml: str,
        env: dict,
        case_ids: Sequence[str],
        machine: dict | None = None,
        *,
        sections: Sequence[str] = (),
        tags: Sequence[str] = (),
        summary: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
        console: Console | None = None,
        watch_load: bool = True,
    ) -> None:
        from bench.storage.store import check_run_id, last_run_died, new_run_id

        self.console = console or Console(command)
        self.run_id = check_run_id(new_run_id() if destinations.run_id is None else destinations.run_id)
        # A history that cannot take the run would otherwise be found only after the whole suite.
        self.history_path = check_destinations(destinations)
        died = last_run_died(destinations.results, suite, list(case_ids))
        if died:
            self.console.warn(died)
        self._opening = (Path(destinations.results), suite, suite_toml, env, len(case_ids), machine, list(sections))
        self._tags = list(tags)
        self._summary = summary
        self._watch_load = watch_load
        self.exit_status: int | None = None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> RunSession:
        from bench.measure.load import busy_warning
        from bench.measure.stopping import stop_signals
        from bench.reporting.progress import ProgressBar
        from bench.storage.store import RunWriter

        results, suite, suite_toml, env, cases, machine, sections = self._opening
        self.signals: StopSignals = self._stack.enter_context(stop_signals())
        try:
            self.writer: RunWriter = RunWriter(
                results, self.run_id, suite, suite_toml, env, cases, machine=machine, sections=sections, tags=self._tags
            )
        except BaseException:  # no run folder: the signal handlers go back as they were
            self._stack.close()
            raise
        import torch

        busy = busy_warning(self.writer.manifest["load_average_start"], threads=torch.get_num_threads())
        if busy:
            self.console.warn(busy)
        self.progress = ProgressBar(cases + len(sections))
        self._measuring = measuring(self.console, self.writer, self.signals, self.progress)
        self.outcome = self._measuring.__enter__()
        return self

    @property
    def path(self) -> Path:
        """The run folder."""
        return self.writer.path

    def record(self, label: str, measure: Callable[[], Record]) -> Record:
        """Measure one case (``measure()`` returns its Record), with the machine's other load
        while it ran in the record where the session watches load, and append the record to
        ``records.jsonl``; the progress bar follows. Returns the record."""
        from bench.measure.load import OtherLoad, case_busy_warning
        from bench.measure.memguard import mark_out_of_memory

        self.progress.start(label)
        other = OtherLoad().start() if self._watch_load else None
        record = mark_out_of_memory(measure())
        if other is not None:
            from bench.record import Load

            other.stop()
            record.load = Load(load_average_1m=other.load_average_start, other_cpu_fraction=other.other_cpu_fraction)
            busy = case_busy_warning(other.other_cpu_fraction, threads=record.provenance.threads)
            if busy:
                self.console.warn(f"{label}: {busy}")
        self.writer.append(record)
        self.progress.finish(label, record.status)
        return record

    def section(self, name: str, label: str, work: Callable[[Path], object]) -> None:
        """A further part of the run after its cases (e.g. the receptive fields): ``work(run
        folder)``; its outcome goes in the manifest, and a failure is said and makes the exit
        status 1 without losing the cases' records."""
        self.progress.start(label)
        try:
            work(self.writer.path)
        except Exception as error:  # the cases' records stand; say what broke
            self.progress.finish(label, "error")
            self.writer.section_done(name, "error")
            self.console.say(f"{label} failed: {type(error).__name__}: {error}")
            self.outcome.code = self.outcome.code or EXIT_CASE_ERROR
            return
        self.progress.finish(label, "ok")
        self.writer.section_done(name, "ok")

    def __exit__(self, kind: type | None, error: BaseException | None, traceback: object) -> bool:
        try:
            handled = self._measuring.__exit__(kind, error, traceback)
            if kind is not None and not handled:
                return False
            self.exit_status = close_run(
                self.console,
                self.writer,
                self.history_path,
                self.signals,
                self.outcome.stopped_by,
                self.outcome.code,
                self._summary,
            )
            return True
        finally:
            self._stack.close()


@contextlib.contextmanager
def measuring(console: Console, writer: RunWriter, signals: StopSignals, progress: object) -> Iterator[Measuring]:
    """The measuring part of a run: stop signals may interrupt it (between two records), and
    a stop, an unwritable run folder or any other failure outside a case (such as the
    bandwidth measurement of ``convbench optim``) ends it without an exception, recorded in
    the yielded Measuring for ``close_run``, so the run folder is closed ``incomplete`` with
    its records; the progress bar is closed either way."""
    from bench.measure.stopping import Terminated

    outcome = Measuring()
    try:
        with signals.interruptible():
            yield outcome
    except KeyboardInterrupt:
        outcome.code, outcome.stopped_by = EXIT_INTERRUPTED, "SIGINT"
    except Terminated:
        outcome.code, outcome.stopped_by = EXIT_TERMINATED, "SIGTERM"
    except OSError as error:  # a full disk, a folder removed under the run: what is on disk stands
        outcome.code, outcome.stopped_by = EXIT_CASE_ERROR, f"{type(error).__name__}: {error}"
        in_run_folder = str(getattr(error, "filename", None) or "").startswith(str(writer.path))
        what = f"cannot write the run folder {writer.path}" if in_run_folder else type(error).__name__
        console.say(f"stopped: {what}: {error}")
    except Exception as error:  # noqa: BLE001  (outside any case: the run is still closed, its records kept)
        outcome.code, outcome.stopped_by = EXIT_CASE_ERROR, f"{type(error).__name__}: {error}"
        console.say(f"stopped: {type(error).__name__}: {error}")
    finally:
        progress.close()


def close_run(
    console: Console,
    writer: RunWriter,
    history_path: Path,
    signals: StopSignals,
    stopped_by: str | None,
    code: int,
    summary: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
) -> int:
    """After the last record, or a stop: close the run folder (``run.json``), add the run to
    the history, print the summary (``summary(records)``, by default the report's table)
    where the console prints tables, write the report (unless a stop signal says
    otherwise), and return the exit status: ``code``, EXIT_CASE_ERROR where closing, the
    history, the report or a case failed, or the stop signal's."""
    from bench import kinds
    from bench.reporting.output import stdout_gone
    from bench.reporting.tables import format_number, text_table
    from bench.storage import history
    from bench.storage.store import load_run

    try:
        status = writer.finish(stopped_by)
    except OSError as error:
        status = "not closed"
        console.say(f"cannot close the run folder {writer.path}: {error}")
        code = code or EXIT_CASE_ERROR
    records = load_run(writer.path).frame()
    # Tomorrow's compare reads the history: the row goes in before anything slower.
    try:
        history.record_run(writer.path, history_path)
    except (OSError, ValueError, sqlite3.Error) as error:
        console.say(f"not added to the history {history_path}: {error}")
        code = code or EXIT_CASE_ERROR
    if console.tables and not records.empty:
        try:
            print(text_table((summary or kinds.summary)(records), format_number), flush=True)
            for line in kinds.notes(records):
                print(line)
        except BrokenPipeError:  # a reader that went away must not cost the run its report
            stdout_gone()
    for line in kinds.failures(records):
        print(line, file=sys.stderr)
    code = _write_report(console, writer.path, signals, code)
    share = steps_share(writer.manifest)
    if share:
        console.say(share)
    page = writer.path / "report.html"
    print(f"run {status}: {writer.path}" + (f" (report: {page})" if page.exists() else ""), file=sys.stderr)
    if code == EXIT_OK and not records.empty and (records["status"] == "error").any():
        code = EXIT_CASE_ERROR
    return signals.exit_status or code


def steps_share(manifest: dict) -> str | None:
    """``time in steps: S s of W s (P%)``: the run's seconds inside warm-up and timed steps
    against its wall time, from its manifest; None where it has no steps (e.g. optim, train)
    or no wall time yet."""
    steps, wall = manifest.get("steps_s"), manifest.get("wall_s")
    if not steps or not wall:
        return None
    return f"time in steps: {steps:.1f} s of {wall:.1f} s ({steps / wall:.0%})"


def _write_report(console: Console, run_dir: Path, signals: StopSignals, code: int) -> int:
    """Write the run's report unless a stop signal came first; a stop signal while it is
    written ends it. Either way the message says how to write it later. Returns the exit
    status so far."""
    from bench import kinds
    from bench.measure.stopping import Terminated

    later = f"`convbench report {run_dir}` writes it"
    if signals.received:
        console.say(f"stopped before the report; {later}")
        return code
    try:
        with signals.interruptible():
            kinds.write_report(run_dir)
    except KeyboardInterrupt:
        console.say(f"the report was interrupted; {later}")
        code = EXIT_INTERRUPTED
    except Terminated:
        console.say(f"the report was interrupted; {later}")
        code = EXIT_TERMINATED
    except Exception as error:  # what a person reads comes after the records are safe
        console.say(f"the report failed: {type(error).__name__}: {error}; {later}")
        code = code or EXIT_CASE_ERROR
    return code
