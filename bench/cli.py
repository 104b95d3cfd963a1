"""The ``convbench`` command line (also ``python -m bench``)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import signal
import sqlite3
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from bench.reporting.output import add_output_options, results_only_on_stdout, stdout_gone
from bench.reporting.tables import format_number, text_table

if TYPE_CHECKING:  # imported where used, so that --help answers without loading torch
    import pandas as pd
    import torch

    from bench.kinds.step.runner import RunContext
    from bench.kinds.step.suite import Case
    from bench.measure.stopping import StopSignals
    from bench.receptive.section import RfSection
    from bench.record import Record
    from bench.reporting.progress import ProgressBar
    from bench.storage.store import RunWriter

Handler = Callable[[argparse.Namespace], int]

DEFAULT_HISTORY = Path("results") / "history.sqlite"
DEFAULT_THRESHOLD_PERCENT = 5.0
DEFAULT_MEMORY_PERCENT = 10.0


#: Switches several commands share, by flag: what each says in --help.
SHARED_SWITCHES = {
    "--no-model-code": "refuse package.module:function model references, which import and call the code they name "
    "(also CONVBENCH_NO_MODEL_CODE=1): for jobs that run suites they did not write",
    "--no-limits": "lift the bounds on a suite's work (10,000 cases, 1,000,000 timed steps a case, 10,000 warm-up "
    "steps; training: 10,000 runs, 10,000 epochs, 100,000,000 steps)",
}


def add_switches(sub: argparse.ArgumentParser, *flags: str) -> None:
    """Add the SHARED_SWITCHES named by ``flags`` to a command."""
    for flag in flags:
        sub.add_argument(flag, action="store_true", help=SHARED_SWITCHES[flag])


def grid_progress(command: str) -> Callable[[int, int], None]:
    """What prints ``convbench COMMAND: expanding the grid: N of M cases`` on stderr."""

    def report(made: int, total: int) -> None:
        print(f"convbench {command}: expanding the grid: {made:,} of {total:,} cases", file=sys.stderr, flush=True)

    return report


def add_threshold(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--threshold",
        type=_percent,
        default=DEFAULT_THRESHOLD_PERCENT,
        metavar="PERCENT",
        help=f"step-time change that counts, if significant (default {DEFAULT_THRESHOLD_PERCENT:g})",
    )


def add_baseline_runs(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--baseline-runs",
        type=_positive,
        default=1,
        metavar="N",
        help="judge step time against the baseline run and the N-1 complete runs before it (same suite and "
        "machine) with a between-run test; needs N >= 3 (default 1: the baseline's repeats, Welch's test)",
    )
    sub.add_argument(
        "--include-incomplete",
        action="store_true",
        help="let interrupted and killed runs with records be baselines (default: complete runs only)",
    )


def cmd_models(args: argparse.Namespace) -> int:
    """Print the model registry: name, family, parameter count, input shape, classes."""
    import pandas as pd
    import torch

    import models

    rows = []
    for name in args.names or models.available():
        entry = models.spec(name)
        with torch.device("meta"):
            model = models.build(name)
        rows.append(
            {
                "model": name,
                "family": entry.family,
                "params": sum(p.numel() for p in model.parameters()),
                "input (C, H, W)": "x".join(map(str, entry.input_shape)) if entry.input_shape else None,
                "classes": entry.num_classes,
            }
        )
    _print_output(pd.DataFrame(rows), args)
    return 0


def cmd_optimizers(args: argparse.Namespace) -> int:
    """Print the optimizer registry with the state each algorithm keeps per parameter."""
    import pandas as pd

    import optimizers

    rows = []
    for name in args.names or optimizers.available():
        entry = optimizers.spec(name)
        rows.append(
            {
                "optimizer": name,
                "algorithm": entry.algorithm,
                "implementation": entry.implementation,
                "source": entry.source,
                "state buffers / param": optimizers.state_buffers(name),
            }
        )
    _print_output(pd.DataFrame(rows), args)
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    """Print the machine and software description as JSON."""
    from bench.measure.env import collect_env

    print(json.dumps(collect_env(), indent=2))
    return 0


def cmd_rf(args: argparse.Namespace) -> int:
    """Print every layer's receptive field: analytic, gradient-mask probe and effective field."""
    import models
    from bench.receptive import ReceptiveFieldError, build_seeded, measure

    entry = models.spec(args.model)
    if entry.input_shape is None:
        raise models.ModelReferenceError(
            args.model,
            "does not say its input shape, and rf needs its channels (--input-size sets only the height and "
            "width): set the function's input_shape = (C, H, W)",
        )
    channels, height, width = entry.input_shape
    shape = (channels, height, width) if args.input_size is None else (channels, args.input_size, args.input_size)

    def progress(message: str) -> None:
        print(f"convbench rf: {message}", file=sys.stderr, flush=True)

    try:
        model = build_seeded(args.model, weights=args.erf_samples > 0)
        report = measure(model, shape, args.layers, args.erf_samples, progress=progress)
    except ReceptiveFieldError as error:
        print(f"convbench rf: error: model {args.model!r}: {error}", file=sys.stderr)
        return 2
    except (RuntimeError, ValueError, TypeError) as error:  # a model that cannot take the input
        print(
            f"convbench rf: error: model {args.model!r} fails on input {shape}: {type(error).__name__}: {error}",
            file=sys.stderr,
        )
        return 2
    _print_output(report.frame(), args)
    for note in report.analysis.notes:
        print(f"convbench rf: note: {note}", file=sys.stderr)
    return 0


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _positive(text: str) -> int:
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _percent(text: str) -> float:
    """A threshold in percent: a finite number of zero or more."""
    return _finite(text, "percentage")


def _finite(text: str, unit: str) -> float:
    """A finite number of zero or more (of ``unit``, as the message says)."""
    value = _non_negative_float(text)
    if value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite {unit}, got {text}")
    return value


def _real(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _non_negative_float(text: str) -> float:
    value = _real(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be zero or more, got {text}")
    return value


def _bytes(text: str) -> int:
    from bench.kinds.step.max_batch import parse_bytes

    try:
        return parse_bytes(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def max_batch_gpus() -> list[str]:
    from bench.kinds.step.max_batch import GPU_MEMORY_BYTES

    return list(GPU_MEMORY_BYTES)


def _count(text: str) -> int:
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be zero or more, got {text}")
    return value


#: Exit statuses of ``convbench run``.
EXIT_OK = 0  # every case has a record; oom and diverged are results, not failures of the run
EXIT_CASE_ERROR = 1  # a case ended "error", or a section, the report, the history or a write failed
EXIT_BAD_INPUT = 2  # nothing ran: unknown name, bad suite, missing device or dataset, unusable paths
EXIT_INTERRUPTED = 128 + signal.SIGINT  # Ctrl-C: the run folder is kept, marked for what it is
EXIT_TERMINATED = 128 + signal.SIGTERM  # SIGTERM: likewise
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE  # whoever read the output stopped reading (any command)

#: Flags that override the suite, by the suite key they replace.
OVERRIDES = ("device", "models", "optimizers", "batch_sizes", "precision", "dataset", "steps", "warmup", "repeats")


def cmd_run(args: argparse.Namespace) -> int:
    """Run a suite; write records, environment, resolved suite, receptive fields (if the suite
    has an [rf] section), tables, figures and reports; add the run to the history.

    Stop signals (Ctrl-C, SIGTERM) end the measuring between two records; closing the run
    (manifest, history row) is never cut short, and the report, which ``convbench report``
    can write again, is skipped or stopped with a message saying so."""
    import torch

    from bench.analyse.fairness import sharing_warnings
    from bench.kinds.parallel import launch
    from bench.kinds.step import isolation, runner
    from bench.kinds.step.suite import load_suite
    from bench.measure import data, setup
    from bench.measure.env import collect_env
    from bench.measure.machine import machine_identity
    from bench.measure.stopping import stop_signals
    from bench.reporting.progress import ProgressBar
    from bench.storage.store import RunWriter, check_run_id, new_run_id

    # Everything that can be wrong with the input is found before the run folder exists.
    suite = load_suite(args.suite or ("nightly" if torch.cuda.is_available() else "smoke"))
    suite = suite.override(**{key: getattr(args, key) for key in OVERRIDES if getattr(args, key) is not None})
    if args.detailed:
        suite = suite.override(detailed=True)
    if args.isolate:
        suite = suite.override(isolate=True)
    suite, ranks = launch.plan(args, suite)
    device = setup.resolve_device(suite.device)
    suite = apply_switches(suite.override(device=str(device)), args, device)
    launch.check_device(suite, device)
    cases = suite.cases(limits=not args.no_limits, progress=grid_progress("run"))
    setup.check_cases(cases, device)
    data_root = args.data_root or data.DEFAULT_ROOT
    if suite.dataset != data.SYNTHETIC:
        data.open_dataset(suite.dataset, data_root, args.download)
    rf = suite.sections.get("rf")
    if ranks is not None and not launch.world.launched():
        return launch.relaunch(args, args.argv)  # the workers come back here, launched

    run_id = check_run_id(new_run_id() if args.run_id is None else args.run_id)
    env = collect_env()
    if device.type == "cuda":
        for warning in sharing_warnings(env, device.index):
            print(f"convbench run: warning: {warning}", file=sys.stderr)
    machine = machine_identity(device, env, args.machine)
    run_case: Callable[[Case, RunContext], Record] = runner.run_case
    if ranks is not None:
        device = launch.rank_device(device)
        joined = launch.world.join(device, args.collective_timeout)
        run_id = joined.share("convbench/run_id", run_id)
        from bench.kinds.parallel.cases import DistributedRunner

        run_case = DistributedRunner(joined)
    context = runner.RunContext(
        run_id,
        suite.name,
        device,
        env,
        data_root,
        args.download,
        peak_tflops=args.peak_tflops,
        find_max_batch=args.find_max_batch,
        memory_pass=not args.no_memory_pass,
        memory_cap_bytes=args.memory_cap,
    )
    if ranks is not None and joined.rank != 0:
        return launch.follow(cases, context, run_case)  # rank 0 alone writes the run
    if ranks is None:  # data-parallel ranks run their cases in turn (isolation is refused for them)
        run_case = isolation.CaseRunner(
            suite.isolate, lambda message: print(f"convbench run: {message}", file=sys.stderr)
        )
    # Where the results go is checked too: a history that cannot take the run would
    # otherwise be found only after the whole suite has run.
    history_path = run_destinations(args)
    warn_if_last_run_died("run", args.results, suite.name, cases)

    with stop_signals() as signals:
        writer = RunWriter(
            Path(args.results),
            run_id,
            suite.name,
            suite.to_toml(),
            env,
            len(cases),
            machine=machine,
            sections=["rf"] if rf is not None else [],
        )
        warn_if_busy("run", writer)
        progress = ProgressBar(len(cases) + (rf is not None))
        try:
            with measuring("run", writer, signals, progress) as outcome, _memory_guard(device, args.memory_limit):
                for case in cases:
                    progress.start(case.case_id)
                    record = _run_case_watched(run_case, case, context)
                    writer.append(record)
                    progress.finish(case.case_id, record.status)
                if rf is not None:
                    outcome.code = _run_rf(rf, writer, progress)
        finally:
            launch.world.leave()
        return close_run("run", writer, history_path, signals, outcome.stopped_by, outcome.code)


@contextlib.contextmanager
def _memory_guard(device: torch.device, limit_gib: float | None) -> Iterator[None]:
    """On the CPU, the address-space cap of bench.measure.memguard while the cases run (``limit_gib``
    GiB of headroom, or the default); on CUDA nothing."""
    from bench.measure.memguard import address_space_limit, headroom_for

    if device.type != "cpu" or limit_gib == 0:
        yield
        return
    with address_space_limit(headroom_for(limit_gib)):
        yield


def _run_case_watched(run_case: Callable[[Case, RunContext], Record], case: Case, context: RunContext) -> Record:
    """``run_case(case, context)`` with the machine's other load while it ran in the record (and
    a warning on stderr when other processes took more than ``BUSY_FRACTION`` of the CPUs)."""
    from bench.measure.load import BUSY_FRACTION, OtherLoad
    from bench.measure.memguard import mark_out_of_memory
    from bench.record import Load

    other = OtherLoad().start()
    record = mark_out_of_memory(run_case(case, context))
    other.stop()
    record.load = Load(load_average_1m=other.load_average_start, other_cpu_fraction=other.other_cpu_fraction)
    if (record.load.other_cpu_fraction or 0.0) > BUSY_FRACTION:
        busy = f"other processes used {record.load.other_cpu_fraction:.0%} of the CPUs"
        print(f"convbench run: warning: {case.case_id}: {busy}; its step times are not the machine's", file=sys.stderr)
    return record


def _run_rf(rf: RfSection, writer: RunWriter, progress: ProgressBar) -> int:
    """The suite's [rf] section after the cases; its outcome goes in the manifest."""
    from bench.receptive.section import run_rf_section

    label = f"receptive fields of {', '.join(rf.models)}"
    progress.start(label)
    try:
        run_rf_section(rf, writer.path)
    except Exception as error:  # the cases' records stand; say what broke
        progress.finish(label, "error")
        writer.section_done("rf", "error")
        print(f"convbench run: receptive fields failed: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_CASE_ERROR
    progress.finish(label, "ok")
    writer.section_done("rf", "ok")
    return EXIT_OK


def run_destinations(args: argparse.Namespace) -> Path:
    """Check where a run will go before it starts: the results root (``--results``) is a
    folder or can be made, and the history (``--history``, default inside the results root)
    can take the run. Returns the history's path. Raises RunFolderError or HistoryError."""
    from bench.storage import history

    return history.check_destinations(args.results, args.history)


def warn_if_last_run_died(command: str, results: str | Path, suite: str, cases: Sequence[Case]) -> None:
    """Warn on stderr when the last run of ``suite`` here died without closing its folder
    (``bench.storage.store.last_run_died``), suggesting --isolate."""
    from bench.storage.store import last_run_died

    died = last_run_died(results, suite, [case.case_id for case in cases])
    if died:
        print(f"convbench {command}: warning: {died}", file=sys.stderr)


def warn_if_busy(command: str, writer: RunWriter) -> None:
    """Warn on stderr when the machine was busy as the run started (``bench.measure.load``):
    step times will be slower and noisier than on an idle machine."""
    from bench.measure.load import busy_warning

    busy = busy_warning(writer.manifest["load_average_start"])
    if busy:
        print(f"convbench {command}: warning: {busy}", file=sys.stderr)


@dataclasses.dataclass
class Measuring:
    """How the measuring part of a run is ending: ``code``, the exit status so far, and
    ``stopped_by``, what cut it short (None: it ran to its end)."""

    code: int = EXIT_OK
    stopped_by: str | None = None


@contextlib.contextmanager
def measuring(command: str, writer: RunWriter, signals: StopSignals, progress: ProgressBar) -> Iterator[Measuring]:
    """The measuring part of ``convbench COMMAND``: stop signals may interrupt it (between two
    records), and a stop, an unwritable run folder or any other failure outside a case (such
    as the bandwidth measurement of ``convbench optim``) ends it without an exception,
    recorded in the yielded Measuring for ``close_run``, so the run folder is closed
    ``incomplete`` with its records; the progress bar is closed either way."""
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
        print(f"convbench {command}: stopped: {what}: {error}", file=sys.stderr)
    except Exception as error:  # noqa: BLE001  (outside any case: the run is still closed, its records kept)
        outcome.code, outcome.stopped_by = EXIT_CASE_ERROR, f"{type(error).__name__}: {error}"
        print(f"convbench {command}: stopped: {type(error).__name__}: {error}", file=sys.stderr)
    finally:
        progress.close()


def close_run(
    command: str,
    writer: RunWriter,
    history_path: Path,
    signals: StopSignals,
    stopped_by: str | None,
    code: int,
    summary: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
) -> int:
    """After the last record, or a stop: close the run folder (``run.json``), add the run to
    the history, print the summary (``summary(records)``, by default the report's table),
    write the report (unless a stop signal says otherwise), and return the exit status:
    ``code``, EXIT_CASE_ERROR where closing, the history, the report or a case failed, or the
    stop signal's."""
    from bench.reporting import report
    from bench.storage import history
    from bench.storage.store import load_run

    summary = summary or (lambda records: report.readable(report.summary_frame(records)))

    try:
        status = writer.finish(stopped_by)
    except OSError as error:
        status = "not closed"
        print(f"convbench {command}: cannot close the run folder {writer.path}: {error}", file=sys.stderr)
        code = code or EXIT_CASE_ERROR
    records = load_run(writer.path).frame()
    # Tomorrow's compare reads the history: the row goes in before anything slower.
    try:
        history.record_run(writer.path, history_path)
    except (OSError, ValueError, sqlite3.Error) as error:
        print(f"convbench {command}: not added to the history {history_path}: {error}", file=sys.stderr)
        code = code or EXIT_CASE_ERROR
    try:
        if not records.empty:
            print(text_table(summary(records), format_number), flush=True)
    except BrokenPipeError:  # a reader that went away must not cost the run its report
        stdout_gone()
    for line in report.roofline.limit_notes(records):
        print(line)
    for line in report.failures(records):
        print(line, file=sys.stderr)
    code = _write_report(writer.path, signals, code)
    measuring_share = steps_share(writer.manifest)
    if measuring_share:
        print(f"convbench {command}: {measuring_share}", file=sys.stderr)
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


def _write_report(run_dir: Path, signals: StopSignals, code: int) -> int:
    """Write the run's report unless a stop signal came first; a stop signal while it is
    written ends it. Either way the message says how to write it later. Returns the exit
    status so far."""
    from bench.measure.stopping import Terminated
    from bench.reporting import report

    later = f"`convbench report {run_dir}` writes it"
    if signals.received:
        print(f"convbench run: stopped before the report; {later}", file=sys.stderr)
        return code
    try:
        with signals.interruptible():
            report.write_report(run_dir)
    except KeyboardInterrupt:
        print(f"convbench run: the report was interrupted; {later}", file=sys.stderr)
        code = EXIT_INTERRUPTED
    except Terminated:
        print(f"convbench run: the report was interrupted; {later}", file=sys.stderr)
        code = EXIT_TERMINATED
    except Exception as error:  # what a person reads comes after the records are safe
        print(f"convbench run: the report failed: {type(error).__name__}: {error}; {later}", file=sys.stderr)
        code = code or EXIT_CASE_ERROR
    return code


def cmd_optim(args: argparse.Namespace) -> int:
    """Time ``optimizer.step()`` alone for each optimizer on each model's parameters, measure
    the device's memory bandwidth right before each case, and write a run folder (records,
    bandwidth.json by case, report with the roofline figure) and a history entry."""
    import models
    import optimizers
    from bench.kinds.optimizer_step import runner as optimizer_step
    from bench.measure import setup
    from bench.measure.bandwidth import check_array_bytes, measure_bandwidth
    from bench.measure.env import collect_env
    from bench.measure.machine import machine_identity
    from bench.measure.stopping import stop_signals
    from bench.reporting.progress import ProgressBar
    from bench.storage.store import RunWriter, check_run_id, new_run_id
    from bench.toml_writer import dumps

    # Everything that can be wrong with the input is found before the run folder exists.
    device = setup.resolve_device(args.device)
    for name in args.models:
        models.spec(name)
    optimizer_names = optimizers.available() if args.optimizers == "all" else args.optimizers
    protocol = {"steps": args.steps, "warmup": args.warmup, "repeats": args.repeats}
    try:
        cases = optimizer_step.cases(args.models, optimizer_names, args.precision, **protocol)
    except ValueError as error:
        raise setup.SetupError(str(error)) from None
    if args.bandwidth_mib:
        try:
            check_array_bytes(device, args.bandwidth_mib * 2**20)
        except ValueError as error:
            raise setup.SetupError(f"--bandwidth-mib {args.bandwidth_mib}: {error}") from None
    chosen = {key: list(dict.fromkeys(getattr(case, field) for case in cases)) for key, field in OPTIM_LISTS.items()}
    configuration = {
        "suite": {"name": "optim", "kind": optimizer_step.KIND, "device": str(device), **protocol},
        "optim": chosen,
    }

    run_id = check_run_id(new_run_id() if args.run_id is None else args.run_id)
    env = collect_env()
    machine = machine_identity(device, env, args.machine)
    history_path = run_destinations(args)
    warn_if_last_run_died("optim", args.results, "optim", cases)

    with stop_signals() as signals:
        writer = RunWriter(Path(args.results), run_id, "optim", dumps(configuration), env, len(cases), machine=machine)
        warn_if_busy("optim", writer)
        progress = ProgressBar(len(cases))
        with measuring("optim", writer, signals, progress) as outcome:
            array_bytes = args.bandwidth_mib * 2**20 if args.bandwidth_mib else None
            measured: dict[str, dict] = {}
            for case in cases:
                progress.start(case.case_id)
                # The limit is measured right before each case, so both see the machine
                # in the same state (a shared machine's bandwidth drifts by tens of %).
                bandwidth = measure_bandwidth(device, array_bytes)
                measured[case.case_id] = bandwidth.to_dict()
                writer.write("bandwidth.json", json.dumps(measured, indent=2) + "\n")
                record = optimizer_step.run_case(
                    case,
                    device,
                    bandwidth,
                    run_id=run_id,
                    suite="optim",
                    env=env,
                    device_name=setup.device_name(device, env),
                )
                writer.append(record)
                progress.finish(case.case_id, record.status)
        return close_run("optim", writer, history_path, signals, outcome.stopped_by, outcome.code)


#: The lists of ``convbench optim`` as its suite.toml names them, by the case field each sets.
OPTIM_LISTS = {"models": "model", "optimizers": "optimizer", "precision": "precision"}

# The switches timm's benchmark script taught people, and models by reference.
SWITCHES = ("input_size", "num_classes", "lr", "momentum", "betas", "eps", "weight_decay")


def amp_precision(device: object) -> str:
    """What ``--amp`` means on ``device``: bf16 where the device has it, else fp16."""
    import torch

    if getattr(device, "type", "cpu") == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16"  # CPU autocast runs bf16 only


def apply_switches(suite: object, args: argparse.Namespace, device: object) -> object:
    """``suite`` with the run switches given on the command line applied, each checked as
    in a suite file and named by its flag."""
    from bench.checks import SuiteError

    if args.amp and args.precision:
        raise SuiteError("--amp picks the precision itself; give --amp or --precision, not both")
    changes = {key: getattr(args, key) for key in SWITCHES if getattr(args, key) is not None}
    if args.channels_last:
        changes["channels_last"] = [True]
    if args.compile or args.compile_mode:
        changes["compile"] = [True]
    if args.compile_mode:
        changes["compile_mode"] = [args.compile_mode]
    if args.amp:
        changes["precision"] = [amp_precision(device)]
    suite = suite.override(**changes)
    return suite.with_model_kwargs(args.model_kwargs) if args.model_kwargs else suite


def _keyword_arguments(text: str) -> dict[str, object]:
    """``k=v,k2=v2`` with each value read as a TOML value (numbers, true/false, quoted or bare
    strings)."""
    import tomllib

    found: dict[str, object] = {}
    for item in _items(text):
        key, equals, value = item.partition("=")
        if not equals or not key.strip().isidentifier():
            raise argparse.ArgumentTypeError(f"expected key=value pairs separated by commas, got {item!r}")
        try:
            found[key.strip()] = tomllib.loads(f"v = {value.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            found[key.strip()] = value.strip()
        except RecursionError:
            raise argparse.ArgumentTypeError(f"{key.strip()}: the value is nested too deeply to read") from None
    return found


def _reals(text: str) -> list[float]:
    """A comma-separated list of numbers."""
    try:
        return [float(item) for item in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _betas(text: str) -> list[list[float]]:
    """``B1,B2``: Adam's two decay rates."""
    values = _reals(text)
    if len(values) != 2:
        raise argparse.ArgumentTypeError(f"expected two numbers B1,B2, got {text!r}")
    return [values]


def _shape(text: str) -> list[int]:
    """``C,H,W``."""
    values = _integers(text)
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected C,H,W (three integers), got {text!r}")
    return values


def _positive_real(text: str) -> float:
    value = _real(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite positive number, got {text}")
    return value


def add_run_switches(run_parser: argparse.ArgumentParser) -> None:
    """The flags for models by reference, memory layout, compilation, precision, the
    optimizers' hyperparameters and the peak that MFU is judged against."""
    from bench.kinds.step.suite import COMPILE_MODES

    run_parser.add_argument(
        "--model-kwargs",
        type=_keyword_arguments,
        metavar="K=V,...",
        help="keyword arguments for every model's builder, e.g. depth=18,drop_rate=0.1",
    )
    run_parser.add_argument(
        "--input-size", type=_shape, metavar="C,H,W", help="synthetic input shape for every model (default: its own)"
    )
    run_parser.add_argument("--num-classes", type=int, metavar="N", help="classes for every model (default: its own)")
    run_parser.add_argument("--channels-last", action="store_true", help="channels-last memory format")
    run_parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    run_parser.add_argument("--compile-mode", choices=COMPILE_MODES, help="torch.compile mode (implies --compile)")
    run_parser.add_argument(
        "--amp",
        action="store_true",
        help="mixed precision: bf16 where the device has it, else fp16 (not with --precision)",
    )
    run_parser.add_argument("--lr", type=_reals, metavar="X,Y", help="learning rates (each a case)")
    run_parser.add_argument("--momentum", type=_reals, metavar="X,Y", help="SGDM momenta")
    run_parser.add_argument("--betas", type=_betas, metavar="B1,B2", help="Adam's decay rates")
    run_parser.add_argument("--eps", type=_reals, metavar="X,Y", help="Adam's epsilon")
    run_parser.add_argument("--weight-decay", type=_reals, metavar="X,Y", help="L2 weight decay (torch-* optimizers)")
    run_parser.add_argument(
        "--peak-tflops",
        type=_positive_real,
        metavar="X",
        help="the device's dense peak TFLOP/s for MFU (default: bench.measure.peaks' table of known GPUs)",
    )


def _items(text: str) -> list[str]:
    """A comma-separated list."""
    return [item.strip() for item in text.split(",") if item.strip()]


def _names(text: str) -> list[str] | str:
    """A comma-separated list of registry names, or ``all``."""
    return "all" if text == "all" else _items(text)


def _integers(text: str) -> list[int]:
    """A comma-separated list of integers (the suite checks that they are positive)."""
    try:
        return [int(item) for item in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _print_output(frame: object, args: argparse.Namespace, **around: object) -> None:
    """Print ``frame`` (and the lines and fields ``around`` it, see bench.reporting.output.render) in
    ``--format``, to ``--output`` if given."""
    from bench.reporting.output import emit, render

    text, to_stderr = render(frame, args.format, **around)
    emit(text, args.output, to_stderr, getattr(args, "history", None))


def cmd_memory(args: argparse.Namespace) -> int:
    """Predict one training step's memory on fake tensors: the breakdown by category, the
    peak, and the largest batch that fits the given memory."""
    import pandas as pd
    import torch

    import models
    import optimizers
    from bench.kinds.step import max_batch, memory_pass
    from bench.kinds.step.suite import single_case
    from bench.measure import setup
    from bench.measure.memory_breakdown import CATEGORIES
    from bench.measure.setup import SetupError

    models.spec(args.model)
    optimizers.spec(args.optimizer)
    device = torch.device(args.device or ("cuda" if args.gpu or torch.cuda.is_available() else "cpu"))
    memory = args.device_memory or max_batch.GPU_MEMORY_BYTES.get(args.gpu)
    if memory is None and device.type == "cuda" and torch.cuda.is_available():
        memory = max_batch.memory_for(device, None)
    case = single_case(
        args.model,
        args.optimizer,
        args.batch_size,
        args.precision,
        args.channels_last,
        args.input_size,
        args.num_classes,
    )
    reason = memory_pass.eager_only(case)
    if reason is not None:
        raise SetupError(f"--optimizer {args.optimizer}: {reason}; predict its eager form instead")
    setup.check_cases([case], device)  # the precision on this device, and the model on its input
    try:
        prediction = memory_pass.predict(case, device)
    except (RuntimeError, ValueError, TypeError) as error:  # e.g. a batch whose tensors overflow
        raise SetupError(f"cannot predict {args.model} / {args.optimizer} / batch {args.batch_size}: {error}") from None
    breakdown = prediction.breakdown
    rows = [{"": name.replace("_", " "), "bytes": getattr(breakdown, name)} for name in (*CATEGORIES, "peak")]
    table = pd.DataFrame(rows).assign(MiB=lambda frame: (frame["bytes"] / 2**20).round(2))
    print(text_table(table))
    print(
        f"{args.model} / {args.optimizer} / batch {args.batch_size} / {args.precision}: the peak falls in the "
        f"{breakdown.phase} pass; predicted on fake tensors as {prediction.device} in {prediction.seconds:.2f} s"
    )
    if memory is not None:
        largest = max_batch.predicted_largest_batch(case, device, memory)
        size = f"{memory / 2**30:.2f} GiB" if memory >= 2**30 else f"{memory / 2**20:.2f} MiB"
        print(f"largest batch that fits {size}: {largest if largest is not None else 'none'}")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    """List the runs in the history, oldest first."""
    from bench.storage import history

    notes: list[str] = []
    runs = history.runs(args.history, notes)
    runs["commit"] = runs["commit"].str[:10]
    _print_output(runs, args, after=[f"note: {note}" for note in notes], fields={"notes": notes})
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    """Add run folders (e.g. copied from other machines) to the history."""
    from bench.storage import history

    for run_id, added in history.ingest(args.run_dirs, args.history):
        print(f"added {run_id}" if added else f"skipped {run_id}: already in the history")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Verdicts per case, candidate against baseline; exit status 1 on any regression."""
    from bench.analyse import compare, fairness
    from bench.api import judge, resolve_runs

    baseline, candidate, earlier = resolve_runs(
        args.baseline, args.candidate, args.history, args.baseline_runs, args.include_incomplete
    )
    notes = fairness.check_runs(baseline, candidate)
    verdicts = judge(baseline, candidate, earlier, args.threshold, args.memory_threshold)
    plural = "s" if len(earlier) > 1 else ""
    runs = f" and {len(earlier)} run{plural} before it ({', '.join(run.run_id for run in earlier)})" if earlier else ""
    notes = ([baseline.note] if baseline.note else []) + notes
    regression = compare.has_regression(verdicts)
    _print_output(
        verdicts if args.format == "json" else compare.readable(verdicts),
        args,
        before=[f"baseline {baseline.describe()}{runs}, candidate {candidate.describe()}"]
        + [f"note: {note}" for note in notes],
        after=[compare.summary(verdicts)],
        fields={
            "baseline": baseline.run_id,
            "earlier": [run.run_id for run in earlier],
            "candidate": candidate.run_id,
            "notes": notes,
            "summary": compare.summary(verdicts),
            "regression": regression,
        },
    )
    return 1 if regression else 0


def cmd_trend(args: argparse.Namespace) -> int:
    """Throughput and memory over the recorded runs, flagged where compare would flag them."""
    import pandas as pd

    from bench.analyse import compare
    from bench.reporting import figures
    from bench.storage import history

    notes: list[str] = []
    records = history.records(args.history, notes=notes)
    if records.empty:
        raise history.HistoryError(notes[0] if notes else f"the history {args.history} holds no runs yet")
    flagged = compare.flag_history(records, baseline_runs=args.baseline_runs, threshold=args.threshold / 100)
    chosen = flagged[
        flagged["model"].isin(args.models or flagged["model"])
        & flagged["optimizer"].isin(args.optimizers or flagged["optimizer"])
    ]
    if chosen.empty:
        raise history.HistoryError("no recorded case matches the --models and --optimizers given")
    # One line per case of one suite on one device: the same case id in another suite (run
    # with another protocol) or on another device is another series, not a point on this one.
    several_suites = chosen["suite"].nunique() > 1
    several_devices = chosen["device_name"].nunique() > 1
    chosen = chosen.assign(
        series=chosen["case_id"]
        + (" (" + chosen["suite"].astype(str) + ")" if several_suites else "")
        + (" @ " + chosen["device_name"] if several_devices else ""),
    )
    figures.use_theme()
    paths = figures.save(figures.trend_figure(chosen), Path(args.figure))
    hits = chosen[(chosen["time"] == "regression") | (chosen["memory"] == "regression")]
    slower_runs = chosen[chosen["all_cases"] == "regression"]["run_id"].unique().tolist()
    flagged_rows = pd.concat(
        [
            hits[["run_id", "series", "time", "memory"]],
            pd.DataFrame(
                {"run_id": slower_runs, "series": "all cases (geometric mean)", "time": "regression", "memory": None}
            ),
        ],
        ignore_index=True,
    )
    runs = chosen["run_id"].nunique()
    figure = ", ".join(map(str, paths))
    _print_output(
        flagged_rows,
        args,
        after=[
            *(f"note: {note}" for note in notes),
            f"{runs} runs, {len(hits)} case regressions and {len(slower_runs)} all-cases regressions flagged; "
            f"figure: {figure}",
        ],
        fields={"runs": runs, "figure": [str(path) for path in paths], "notes": notes},
    )
    return 0


def cmd_gpus(args: argparse.Namespace) -> int:
    """Runs of one suite on different devices, side by side, with a speed-up figure."""
    from bench.analyse import compare
    from bench.reporting import figures
    from bench.storage import history

    runs = [history.resolve(reference, args.history).frame for reference in args.runs]
    table, notes = compare.side_by_side(runs, reference=args.reference)
    figures.use_theme()
    paths = figures.save(figures.speedup_figure(table), Path(args.figure))
    _print_output(
        table if args.format == "json" else compare.side_by_side_wide(table),
        args,
        after=[*notes, f"figure: {', '.join(map(str, paths))}"],
        fields={"notes": notes, "figure": [str(path) for path in paths]},
    )
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Write the static dashboard of the history (bench.dashboard) and say where."""
    from bench.dashboard import DashboardError, build_site

    try:
        site = build_site(args.history, args.output, args.baseline_runs, args.threshold / 100)
    except DashboardError as error:
        print(f"convbench dashboard: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(
        f"{args.output / 'index.html'}: {site.runs} runs, {len(site.series_pages)} series pages, "
        f"{len(site.gpu_pages)} GPU pages"
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """A run (or, with --all, the whole history) as github-action-benchmark or pytest-benchmark JSON."""
    from bench.checks import SuiteError
    from bench.reporting.output import emit
    from bench.storage import export

    if args.all:
        if args.format != "pytest-benchmark" or args.output is None:
            raise SuiteError(
                "--all writes a pytest-benchmark storage folder: give --format pytest-benchmark --output DIR"
            )
        notes: list[str] = []
        for path in export.history_storage(args.history, args.output, notes):
            print(path)
        for note in notes:
            print(f"convbench export: note: {note}", file=sys.stderr)
        return 0
    frame, manifest, env = export.run_documents(args.run, args.history)
    if args.format == "github-action-benchmark":
        document: object = export.github_action_benchmark(frame, args.metric)
        exported = len(document)
    else:
        document = export.pytest_benchmark(frame, manifest, env)
        exported = len(document["benchmarks"])
    if not exported:
        throughput = args.format == "github-action-benchmark" and args.metric == "throughput"
        measured = "a throughput" if throughput else "step times"
        print(
            f"convbench export: note: run {manifest.get('run_id')} has no ok case with {measured} "
            "(a training-to-accuracy run has none; an optimizer-step run has step times but no throughput)",
            file=sys.stderr,
        )
    emit(json.dumps(document, indent=2) + "\n", args.output, history=args.history)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Write a run folder's figures, tables, report.html and report.md."""
    from bench.reporting.report import write_report

    for path in write_report(args.run_dir):
        print(path)
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag or value is one line on stderr (``convbench run: error: ...``,
    exit status 2) rather than the whole usage block; ``--help`` still shows it."""

    #: The top-level parser's command parsers, by command name.
    commands: dict[str, argparse.ArgumentParser]

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> _Parser:
    parser = _Parser(
        prog="convbench",
        description="Benchmark and profile convolutional-network training with Adam and SGD with momentum.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parser.commands = commands.choices

    models_parser = commands.add_parser("models", help="list the model registry")
    models_parser.add_argument("names", nargs="*", metavar="MODEL", help="only these models (default: all)")
    add_output_options(models_parser)
    add_switches(models_parser, "--no-model-code")
    models_parser.set_defaults(handler=cmd_models)

    optimizers_parser = commands.add_parser("optimizers", help="list the optimizer registry")
    optimizers_parser.add_argument("names", nargs="*", metavar="OPTIMIZER", help="only these (default: all)")
    add_output_options(optimizers_parser)
    optimizers_parser.set_defaults(handler=cmd_optimizers)

    env_parser = commands.add_parser("env", help="describe this machine and its software as JSON")
    env_parser.set_defaults(handler=cmd_env)

    rf_parser = commands.add_parser(
        "rf",
        help="receptive field of every layer: analytic, gradient-mask probe, effective",
        description="One row per convolution, pooling and linear layer of MODEL: its own geometry, the "
        "analytic receptive field (size, jump, start per axis [h, w]), what the gradient-mask probe "
        "measured, and the effective receptive field (Luo et al. 2016) with random weights (seed 0).",
    )
    rf_parser.add_argument(
        "model",
        metavar="MODEL",
        help="a model from `convbench models`, or a reference (pkg.mod:fn, torchvision:NAME, timm:NAME)",
    )
    rf_parser.add_argument(
        "--input-size", type=_positive, metavar="N", help="square N x N input (default: the model's natural input)"
    )
    rf_parser.add_argument(
        "--layers", type=_items, metavar="A,B", help="only these layers (qualified module names, comma-separated)"
    )
    add_output_options(rf_parser)
    rf_parser.add_argument(
        "--erf-samples",
        type=_count,
        default=8,
        metavar="N",
        help="random inputs averaged for the effective field (default 8; 0 skips it, the slow part)",
    )
    add_switches(rf_parser, "--no-model-code")
    rf_parser.set_defaults(handler=cmd_rf)

    run_parser = commands.add_parser(
        "run",
        help="run a benchmark suite",
        description="Run a suite (flags override it) and write results/<run-id>/. Exit status: 0 done, "
        "1 done but a case raised an error, 2 bad input (nothing ran), 130/143 interrupted (kept, incomplete).",
    )
    run_parser.add_argument(
        "--suite",
        metavar="NAME|PATH",
        help="a shipped suite (smoke, nightly, full) or a TOML file "
        "(default: nightly where CUDA is available, else smoke)",
    )
    run_parser.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    run_parser.add_argument("--models", type=_names, metavar="A,B", help="models to run, or 'all'")
    run_parser.add_argument("--optimizers", type=_names, metavar="A,B", help="optimizers to run, or 'all'")
    run_parser.add_argument("--batch-sizes", type=_integers, metavar="N,M", help="batch sizes")
    run_parser.add_argument("--precision", type=_items, metavar="P,Q", help="fp32, tf32 (CUDA), bf16, fp16")
    run_parser.add_argument("--dataset", help="synthetic (default), mnist, fashionmnist or cifar10")
    run_parser.add_argument("--steps", type=int, metavar="N", help="timed steps per repeat")
    run_parser.add_argument("--warmup", type=int, metavar="N", help="untimed steps first (>= 1)")
    run_parser.add_argument("--repeats", type=int, metavar="N", help="timed repeats")
    run_parser.add_argument("--detailed", action="store_true", help="also time forward, backward, optimizer step")
    run_parser.add_argument("--isolate", action="store_true", help="run each case in a process of its own")
    run_parser.add_argument("--results", default="results", metavar="DIR", help="results root (default: results)")
    run_parser.add_argument(
        "--history", type=Path, metavar="PATH", help="the history database (default: RESULTS/history.sqlite)"
    )
    run_parser.add_argument(
        "--run-id",
        metavar="ID",
        help="the run folder's name: 1-100 letters, digits, '.', '_', '-' (default: time + random)",
    )
    run_parser.add_argument(
        "--machine",
        metavar="NAME",
        help="the machine the run is filed under for previous and --baseline-runs "
        "(default: $CONVBENCH_MACHINE, else the GPU's UUID or the CPU model)",
    )
    run_parser.add_argument(
        "--memory-limit",
        type=lambda text: _finite(text, "number of GiB"),
        metavar="GIB",
        help="CPU runs: memory a case may take beyond what the run maps at its start, in GiB; a case "
        "needing more is recorded oom (default: 90%% of the memory available then; 0: no limit)",
    )
    run_parser.add_argument("--data-root", metavar="DIR", help="where datasets are (default: data)")
    run_parser.add_argument("--download", action="store_true", help="download a missing dataset")
    from bench.kinds.parallel.launch import add_flags

    add_flags(run_parser, _items, _integers, _positive)
    add_run_switches(run_parser)
    run_parser.add_argument(
        "--find-max-batch",
        action="store_true",
        help="also search each case's largest batch that trains without running out of memory",
    )
    run_parser.add_argument(
        "--no-memory-pass",
        action="store_true",
        help="skip each case's untimed memory pass (tracked breakdown and prediction): faster, "
        "but no tracked_* or predicted_* figures",
    )
    run_parser.add_argument(
        "--memory-cap",
        type=_bytes,
        metavar="SIZE",
        help="the memory that search fits in, e.g. 2GiB (default: the CUDA device's; 1GiB on the CPU)",
    )
    add_switches(run_parser, "--no-model-code", "--no-limits")
    run_parser.set_defaults(handler=cmd_run)

    memory_parser = commands.add_parser(
        "memory",
        help="predict a training step's memory on fake tensors, and the largest batch that fits",
        description="Predict the memory of one training step (parameters, buffers, gradients, optimizer state, "
        "inputs, activations, temporaries, peak) without allocating it, on fake tensors.",
    )
    memory_parser.add_argument(
        "model", metavar="MODEL", help="a registry model, or a reference (pkg.mod:fn, torchvision:NAME, timm:NAME)"
    )
    memory_parser.add_argument("--optimizer", required=True, metavar="O", help="a registry optimizer")
    memory_parser.add_argument("--batch-size", type=_positive, required=True, metavar="B")
    memory_parser.add_argument("--precision", choices=("fp32", "tf32", "bf16", "fp16"), default="fp32")
    memory_parser.add_argument("--channels-last", action="store_true", help="channels-last model and inputs")
    memory_parser.add_argument(
        "--input-size", type=_shape, metavar="C,H,W", help="one sample's shape (default: the model's own)"
    )
    memory_parser.add_argument("--num-classes", type=_positive, metavar="N", help="classes (default: the model's own)")
    memory_parser.add_argument(
        "--device", choices=("cpu", "cuda"), help="the device predicted for (default: cuda with --gpu or CUDA present)"
    )
    fits = memory_parser.add_mutually_exclusive_group()
    fits.add_argument("--device-memory", type=_bytes, metavar="SIZE", help="print the largest batch that fits SIZE")
    fits.add_argument(
        "--gpu", choices=sorted(max_batch_gpus()), help="print the largest batch that fits this GPU's memory"
    )
    add_switches(memory_parser, "--no-model-code")
    memory_parser.set_defaults(handler=cmd_memory)

    history_help = "the history database (default: results/history.sqlite)"

    def add_history(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--history", type=Path, default=DEFAULT_HISTORY, metavar="PATH", help=history_help)

    def add_figure(sub: argparse.ArgumentParser, default: str) -> None:
        sub.add_argument(
            "--figure", default=default, metavar="STEM", help=f"figure path without suffix (default {default})"
        )

    history_parser = commands.add_parser("history", help="list the runs in the history")
    add_history(history_parser)
    add_output_options(history_parser)
    history_parser.set_defaults(handler=cmd_history)

    ingest_parser = commands.add_parser("ingest", help="add run folders (e.g. from other machines) to the history")
    ingest_parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR")
    add_history(ingest_parser)
    ingest_parser.set_defaults(handler=cmd_ingest)

    run_help = "a run folder, a run id in the history, latest, or previous"
    compare_parser = commands.add_parser(
        "compare", help="regression verdicts of CANDIDATE against BASELINE (exit status 1 on a regression)"
    )
    compare_parser.add_argument("baseline", metavar="BASELINE", help=run_help)
    compare_parser.add_argument("candidate", metavar="CANDIDATE", help=run_help)
    add_history(compare_parser)
    add_threshold(compare_parser)
    add_baseline_runs(compare_parser)
    compare_parser.add_argument(
        "--memory-threshold",
        type=_percent,
        default=DEFAULT_MEMORY_PERCENT,
        metavar="PERCENT",
        help=f"peak-memory change that counts (default {DEFAULT_MEMORY_PERCENT:g})",
    )
    add_output_options(compare_parser)
    compare_parser.set_defaults(handler=cmd_compare)

    trend_parser = commands.add_parser("trend", help="throughput and memory over the recorded runs, as a figure")
    trend_parser.add_argument("--models", type=_items, metavar="A,B", help="only these models")
    trend_parser.add_argument("--optimizers", type=_items, metavar="A,B", help="only these optimizers")
    add_history(trend_parser)
    add_threshold(trend_parser)
    add_baseline_runs(trend_parser)
    add_output_options(trend_parser)
    add_figure(trend_parser, "results/trend")
    trend_parser.set_defaults(handler=cmd_trend)

    gpus_parser = commands.add_parser("gpus", help="runs of one suite on different devices, side by side")
    gpus_parser.add_argument("runs", nargs="+", metavar="RUN", help=run_help)
    gpus_parser.add_argument("--reference", metavar="DEVICE", help="device to normalise to (default: the first run's)")
    add_history(gpus_parser)
    add_output_options(gpus_parser)
    add_figure(gpus_parser, "results/gpus")
    gpus_parser.set_defaults(handler=cmd_gpus)

    dashboard_parser = commands.add_parser(
        "dashboard",
        help="a static site of every case over every run, regressions marked (needs plotly)",
        description="Write a self-contained static site from the history: an index of machines and suites with "
        "their latest runs' verdicts, a page per suite and machine with every case over time, a page per suite "
        "run on several machines. --output is replaced atomically (it becomes a link to the version written).",
    )
    dashboard_parser.add_argument(
        "--output", type=Path, default=Path("results") / "dashboard", metavar="DIR", help="default results/dashboard"
    )
    dashboard_parser.add_argument(
        "--baseline-runs", type=_positive, default=1, metavar="N", help="as for trend and compare (default 1)"
    )
    add_history(dashboard_parser)
    add_threshold(dashboard_parser)
    dashboard_parser.set_defaults(handler=cmd_dashboard)

    export_parser = commands.add_parser(
        "export",
        help="a run as github-action-benchmark or pytest-benchmark JSON",
        description="Write a run's ok cases as JSON for other tools: github-action-benchmark (tool "
        "customBiggerIsBetter for --metric throughput, customSmallerIsBetter for step_time) or a "
        "pytest-benchmark saved session (pytest-benchmark compare reads it).",
    )
    export_parser.add_argument("run", nargs="?", default="latest", metavar="RUN", help=run_help + " (default latest)")
    export_parser.add_argument(
        "--format", choices=("github-action-benchmark", "pytest-benchmark"), required=True, help="the tool to feed"
    )
    export_parser.add_argument(
        "--metric",
        choices=("throughput", "step_time"),
        default="throughput",
        help="github-action-benchmark's value: samples/s or median step time in ms (default throughput)",
    )
    export_parser.add_argument(
        "--all",
        action="store_true",
        help="every run of the history, as a pytest-benchmark storage folder (--output DIR)",
    )
    export_parser.add_argument("--output", type=Path, metavar="FILE|DIR", help="write here instead of stdout")
    add_history(export_parser)
    export_parser.set_defaults(handler=cmd_export)
    optim_parser = commands.add_parser(
        "optim",
        help="the optimizer step alone against the device's measured memory bandwidth",
        description="Time optimizer.step() for each optimizer on each model's real parameter shapes (fixed "
        "gradients, state already created), measure the device's copy, triad and in-place update bandwidth in the same "
        "run, and report step time, bytes moved per parameter, achieved GB/s and the percentage of the "
        "measured in-place bandwidth. Writes results/<run-id>/ like `convbench run`, with the same exit statuses.",
    )
    optim_parser.add_argument(
        "--models", type=_items, default=["resnet18"], metavar="A,B", help="models whose parameters (default resnet18)"
    )
    optim_parser.add_argument(
        "--optimizers", type=_names, default="all", metavar="A,B", help="optimizers (default all)"
    )
    optim_parser.add_argument(
        "--precision",
        type=_items,
        default=["fp32"],
        metavar="P,Q",
        help="dtype of parameters, gradients and state: fp32, bf16, fp16 (default fp32)",
    )
    optim_parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    optim_parser.add_argument("--steps", type=_positive, default=20, metavar="N", help="timed steps per repeat (20)")
    optim_parser.add_argument("--warmup", type=_positive, default=3, metavar="N", help="untimed steps first (3)")
    optim_parser.add_argument("--repeats", type=_positive, default=5, metavar="N", help="timed repeats (5)")
    optim_parser.add_argument(
        "--bandwidth-mib",
        type=_positive,
        metavar="N",
        help="STREAM array size in MiB (default: 4 x the last-level cache, at least 64)",
    )
    optim_parser.add_argument("--results", default="results", metavar="DIR", help="results root (default: results)")
    optim_parser.add_argument(
        "--history", type=Path, metavar="PATH", help="the history database (default: RESULTS/history.sqlite)"
    )
    optim_parser.add_argument("--run-id", metavar="ID", help="the run folder's name (default: time + random)")
    optim_parser.add_argument(
        "--machine", metavar="NAME", help="the machine's name in the history (default: as for convbench run)"
    )
    add_switches(optim_parser, "--no-model-code")
    optim_parser.set_defaults(handler=cmd_optim)

    report_parser = commands.add_parser("report", help="write a run's figures, tables and reports into its folder")
    report_parser.add_argument("run_dir", metavar="RUN_DIR", help="the run's folder, e.g. results/<run-id>")
    report_parser.set_defaults(handler=cmd_report)

    from bench.kinds.training.command import add_parser as add_train_parser

    add_train_parser(commands, _names, _positive, lambda sub: add_switches(sub, "--no-model-code", "--no-limits"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # named against the command they were given to, whose --help lists its flags
        parser.commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    args.argv = list(sys.argv[1:] if argv is None else argv)  # a data-parallel run hands it to torchrun
    # Imported after parsing so that --help answers without loading torch.
    from bench.checks import SuiteError
    from bench.measure.data import DatasetNotFoundError
    from bench.measure.env import CommitVariableError
    from bench.measure.machine import MachineNameError
    from bench.measure.setup import SetupError
    from bench.storage.history import HistoryError
    from bench.storage.store import RunFolderError
    from models.registry import UnknownNameError

    # Bad input, named in the message: an unknown name, run, device, run id or machine name,
    # a run folder that is not one or is damaged, a history that cannot be used, cases
    # measured differently. Exit status 2, as argparse uses for usage.
    bad_input: tuple[type[Exception], ...] = (
        RunFolderError,
        HistoryError,
        MachineNameError,
        CommitVariableError,
        UnknownNameError,
        SuiteError,
        SetupError,
        DatasetNotFoundError,
        FileExistsError,
        FileNotFoundError,
    )
    if args.command in ("history", "ingest", "compare", "trend", "gpus", "export"):
        from bench.analyse.compare import IncomparableError

        bad_input += (IncomparableError,)
    from models.references import without_model_code

    handler: Handler = args.handler
    # --no-model-code: every model reference resolved in this process (and, through argv, in
    # torchrun's workers) is refused if it runs code it names.
    refusing = without_model_code() if getattr(args, "no_model_code", False) else contextlib.nullcontext()
    # JSON and CSV are for programs: what model code prints goes to stderr, not into them.
    machine_readable = getattr(args, "format", None) in ("json", "csv")
    results_only = results_only_on_stdout() if machine_readable else contextlib.nullcontext()
    try:
        with refusing, results_only:
            return handler(args)
    except bad_input as error:
        print(f"convbench {args.command}: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:  # the reader went away (| head): not an error of ours
        stdout_gone()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:  # Ctrl-C before a run folder exists, or in a command without one
        print(f"convbench {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as error:  # a full disk, a permission, a folder where a file goes: one line
        print(f"convbench {args.command}: error: {error}", file=sys.stderr)
        return EXIT_CASE_ERROR


if __name__ == "__main__":
    sys.exit(main())
