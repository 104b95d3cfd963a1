"""The ``convbench`` command line (also ``python -m bench``)."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from bench.tables import format_number, text_table

Handler = Callable[[argparse.Namespace], int]

DEFAULT_HISTORY = Path("results") / "history.sqlite"
DEFAULT_THRESHOLD_PERCENT = 5.0
DEFAULT_MEMORY_PERCENT = 10.0


def add_threshold(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--threshold",
        type=float,
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
        help="judge step time against the baseline run and the N-1 runs before it (same suite and machine) "
        "with a between-run test; needs N >= 3 (default 1: the baseline's repeats, Welch's test)",
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
                "input (C, H, W)": "x".join(map(str, entry.input_shape)),
                "classes": entry.num_classes,
            }
        )
    table = pd.DataFrame(rows)
    print(table.to_json(orient="records", indent=2) if args.json else text_table(table))
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
    table = pd.DataFrame(rows)
    print(table.to_json(orient="records", indent=2) if args.json else text_table(table))
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    """Print the machine and software description as JSON."""
    from bench.env import collect_env

    print(json.dumps(collect_env(), indent=2))
    return 0


def cmd_rf(args: argparse.Namespace) -> int:
    """Print every layer's receptive field: analytic, gradient-mask probe and effective field."""
    import models
    from bench.receptive import ReceptiveFieldError, build_seeded, measure

    entry = models.spec(args.model)
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
    table = report.frame()
    if args.format == "json":
        print(table.to_json(orient="records", indent=2))
    elif args.format == "csv":
        print(table.to_csv(index=False), end="")
    else:
        print(text_table(table))
    for note in report.analysis.notes:
        print(f"convbench rf: note: {note}", file=sys.stderr)
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be zero or more, got {text}")
    return value


#: Exit statuses of ``convbench run``.
EXIT_OK = 0  # every case has a record; oom and diverged are results, not failures of the run
EXIT_CASE_ERROR = 1  # every case has a record, but at least one ended with an exception ("error")
EXIT_BAD_INPUT = 2  # nothing ran: unknown name, bad suite, missing device or dataset
EXIT_INTERRUPTED = 128 + signal.SIGINT  # Ctrl-C: the run folder is kept, marked incomplete
EXIT_TERMINATED = 128 + signal.SIGTERM  # SIGTERM: likewise

#: Flags that override the suite, by the suite key they replace.
OVERRIDES = ("device", "models", "optimizers", "batch_sizes", "precision", "dataset", "steps", "warmup", "repeats")


class Terminated(BaseException):
    """SIGTERM arrived; like KeyboardInterrupt, it ends the run between two records."""


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into a Terminated exception in the main thread while the block runs."""

    def handler(signum: int, frame: object) -> None:
        raise Terminated

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def cmd_run(args: argparse.Namespace) -> int:
    """Run a suite; write records, environment, resolved suite, receptive fields (if the suite
    has an [rf] section), tables, figures and reports; add the run to the history."""
    import torch

    from bench import data, runner
    from bench.env import collect_env
    from bench.progress import ProgressBar
    from bench.receptive.section import run_rf_section
    from bench.store import RunWriter, new_run_id
    from bench.suite import load_suite

    # Everything that can be wrong with the input is found before the run folder exists.
    suite = load_suite(args.suite or ("nightly" if torch.cuda.is_available() else "smoke"))
    suite = suite.override(**{key: getattr(args, key) for key in OVERRIDES if getattr(args, key) is not None})
    if args.detailed:
        suite = suite.override(detailed=True)
    device = runner.resolve_device(suite.device)
    suite = suite.override(device=str(device))
    cases = suite.cases()
    runner.check_cases(cases, device)
    data_root = args.data_root or data.DEFAULT_ROOT
    if suite.dataset != data.SYNTHETIC:
        data.open_dataset(suite.dataset, data_root, args.download)
    rf = suite.sections.get("rf")

    env = collect_env()
    run_id = args.run_id or new_run_id()
    writer = RunWriter(Path(args.results), run_id, suite.name, suite.to_toml(), env, len(cases))
    context = runner.RunContext(run_id, suite.name, device, env, data_root, args.download)
    progress = ProgressBar(len(cases) + (rf is not None))
    code = EXIT_OK
    try:
        with sigterm_raises():
            for case in cases:
                progress.start(case.case_id)
                record = runner.run_case(case, context)
                writer.append(record)
                progress.finish(case.case_id, record.status)
            if rf is not None:
                label = f"receptive fields of {', '.join(rf.models)}"
                progress.start(label)
                try:
                    run_rf_section(rf, writer.path)
                    progress.finish(label, "ok")
                except Exception as error:  # the cases' records stand; say what broke
                    progress.finish(label, "error")
                    print(f"convbench run: receptive fields failed: {type(error).__name__}: {error}", file=sys.stderr)
                    code = EXIT_CASE_ERROR
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    except Terminated:
        code = EXIT_TERMINATED
    finally:
        progress.close()
        status = writer.finish()
    return _close_run(writer.path, status, args, code)


def _close_run(run_dir: Path, status: str, args: argparse.Namespace, code: int) -> int:
    """After the last record: print the summary, write the report, add the run to the history
    (``--history``, default RESULTS/history.sqlite), and return the exit status: ``code``, or
    EXIT_CASE_ERROR when a case, the report or the history entry failed."""
    from bench import history, report
    from bench.store import load_run

    records = load_run(run_dir).frame()
    print(text_table(report.readable(report.summary_frame(records)), format_number))
    for line in report.failures(records):
        print(line, file=sys.stderr)
    # What a person reads and what tomorrow's compare reads come after the records are safe;
    # a failure here is reported, not allowed to hide the run.
    try:
        report.write_report(run_dir)
    except Exception as error:
        print(f"convbench {args.command}: the report failed: {type(error).__name__}: {error}", file=sys.stderr)
        code = code or EXIT_CASE_ERROR
    history_path = args.history or Path(args.results) / history.DEFAULT_NAME
    try:
        history.record_run(run_dir, history_path)
    except Exception as error:
        print(f"convbench {args.command}: not added to the history {history_path}: {error}", file=sys.stderr)
        code = code or EXIT_CASE_ERROR
    print(f"run {status}: {run_dir} (report: {run_dir / 'report.html'})", file=sys.stderr)
    if code == EXIT_OK and not records.empty and (records["status"] == "error").any():
        code = EXIT_CASE_ERROR
    return code


def cmd_optim(args: argparse.Namespace) -> int:
    """Time ``optimizer.step()`` alone for each optimizer on each model's parameters, measure
    the device's memory bandwidth in the same run, and write a run folder (records,
    bandwidth.json, report with the roofline figure) and a history entry."""
    import models
    import optimizers
    from bench import optimizer_step, runner
    from bench.bandwidth import measure_bandwidth
    from bench.env import collect_env
    from bench.progress import ProgressBar
    from bench.store import RunWriter, new_run_id, write_json
    from bench.toml_writer import dumps

    # Everything that can be wrong with the input is found before the run folder exists.
    device = runner.resolve_device(args.device)
    for name in args.models:
        models.spec(name)
    optimizer_names = optimizers.available() if args.optimizers == "all" else args.optimizers
    protocol = {"steps": args.steps, "warmup": args.warmup, "repeats": args.repeats}
    try:
        cases = optimizer_step.cases(args.models, optimizer_names, args.precision, **protocol)
    except ValueError as error:
        raise runner.SetupError(str(error)) from None
    configuration = {
        "suite": {"name": "optim", "kind": optimizer_step.KIND, "device": str(device), **protocol},
        "optim": {"models": args.models, "optimizers": optimizer_names, "precision": args.precision},
    }

    env = collect_env()
    run_id = args.run_id or new_run_id()
    writer = RunWriter(Path(args.results), run_id, "optim", dumps(configuration), env, len(cases))
    progress = ProgressBar(len(cases) + 1)
    code = EXIT_OK
    try:
        with sigterm_raises():
            label = "memory bandwidth (STREAM copy and triad)"
            progress.start(label)
            array_bytes = args.bandwidth_mib * 2**20 if args.bandwidth_mib else None
            bandwidth = measure_bandwidth(device, array_bytes)
            write_json(writer.path / "bandwidth.json", bandwidth.to_dict())
            progress.finish(label, f"triad {bandwidth.median_gbs('triad'):.1f} GB/s")
            for case in cases:
                progress.start(case.case_id)
                record = optimizer_step.run_case(
                    case,
                    device,
                    bandwidth,
                    run_id=run_id,
                    suite="optim",
                    env=env,
                    device_name=runner.device_name(device, env),
                )
                writer.append(record)
                progress.finish(case.case_id, record.status)
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    except Terminated:
        code = EXIT_TERMINATED
    finally:
        progress.close()
        status = writer.finish()
    return _close_run(writer.path, status, args, code)


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


def _print_table(frame: object, args: argparse.Namespace) -> None:
    """Print ``frame`` as text or Markdown (``--format``); also write Markdown to ``--markdown``."""
    from bench.store import write_atomic
    from bench.tables import markdown_table

    print(markdown_table(frame) if args.format == "markdown" else text_table(frame))
    if args.markdown:
        write_atomic(Path(args.markdown), markdown_table(frame) + "\n")


def cmd_history(args: argparse.Namespace) -> int:
    """List the runs in the history, oldest first."""
    from bench import history

    runs = history.runs(args.history)
    runs["commit"] = runs["commit"].str[:10]
    print(runs.to_json(orient="records", indent=2) if args.json else text_table(runs))
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    """Add run folders (e.g. copied from other machines) to the history."""
    from bench import history

    for run_id, added in history.ingest(args.run_dirs, args.history):
        print(f"added {run_id}" if added else f"skipped {run_id}: already in the history")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Verdicts per case, candidate against baseline; exit status 1 on any regression."""
    from bench import compare, history

    candidate = history.resolve(args.candidate, args.history)
    baseline = history.resolve(args.baseline, args.history, after=candidate)
    # A several-run baseline: the runs before BASELINE, skipping any measured differently.
    earlier = [
        run
        for run in history.earlier_runs(baseline, args.baseline_runs - 1, args.history)
        if not compare.mismatches(run.frame, baseline.frame)
    ]
    verdicts = compare.compare_runs(
        baseline.frame,
        candidate.frame,
        threshold=args.threshold / 100,
        memory_threshold=args.memory_threshold / 100,
        earlier=[run.frame for run in earlier],
    )
    plural = "s" if len(earlier) > 1 else ""
    runs = f" and {len(earlier)} run{plural} before it ({', '.join(run.run_id for run in earlier)})" if earlier else ""
    print(f"baseline {baseline.run_id}{runs}, candidate {candidate.run_id}")
    _print_table(compare.readable(verdicts), args)
    print(compare.summary(verdicts))
    return 1 if compare.has_regression(verdicts) else 0


def cmd_trend(args: argparse.Namespace) -> int:
    """Throughput and memory over the recorded runs, flagged where compare would flag them."""
    from bench import compare, figures, history

    records = history.records(args.history)
    if records.empty:
        raise history.HistoryError(f"the history {args.history} holds no runs yet")
    flagged = compare.flag_history(records, baseline_runs=args.baseline_runs, threshold=args.threshold / 100)
    chosen = flagged[
        flagged["model"].isin(args.model or flagged["model"])
        & flagged["optimizer"].isin(args.optimizer or flagged["optimizer"])
    ]
    if chosen.empty:
        raise history.HistoryError("no recorded case matches the --model and --optimizer given")
    several_devices = chosen["device_name"].nunique() > 1
    chosen = chosen.assign(
        series=chosen["case_id"] + (" @ " + chosen["device_name"] if several_devices else ""),
    )
    figures.use_theme()
    paths = figures.save(figures.trend_figure(chosen), Path(args.output))
    hits = chosen[(chosen["time"] == "regression") | (chosen["memory"] == "regression")]
    for row in hits.itertuples():
        print(f"{row.run_id}  {row.series}: time {row.time}, memory {row.memory}")
    slower_runs = chosen[chosen["all_cases"] == "regression"]["run_id"].unique().tolist()
    for run_id in slower_runs:
        print(f"{run_id}  all cases (geometric mean): time regression")
    runs = chosen["run_id"].nunique()
    print(
        f"{runs} runs, {len(hits)} case regressions and {len(slower_runs)} all-cases regressions flagged; "
        f"figure: {', '.join(map(str, paths))}"
    )
    return 0


def cmd_gpus(args: argparse.Namespace) -> int:
    """Runs of one suite on different devices, side by side, with a speed-up figure."""
    from bench import compare, figures, history

    runs = [history.resolve(reference, args.history).frame for reference in args.runs]
    table, notes = compare.side_by_side(runs, reference=args.reference)
    _print_table(compare.side_by_side_wide(table), args)
    for note in notes:
        print(note)
    figures.use_theme()
    paths = figures.save(figures.speedup_figure(table), Path(args.output))
    print(f"figure: {', '.join(map(str, paths))}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Write a run folder's figures, tables, report.html and report.md."""
    from bench.report import write_report

    for path in write_report(args.run_dir):
        print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convbench",
        description="Benchmark and profile convolutional-network training with Adam and SGD with momentum.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    models_parser = commands.add_parser("models", help="list the model registry")
    models_parser.add_argument("names", nargs="*", metavar="MODEL", help="only these models (default: all)")
    models_parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    models_parser.set_defaults(handler=cmd_models)

    optimizers_parser = commands.add_parser("optimizers", help="list the optimizer registry")
    optimizers_parser.add_argument("names", nargs="*", metavar="OPTIMIZER", help="only these (default: all)")
    optimizers_parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
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
    rf_parser.add_argument("model", metavar="MODEL", help="a model from `convbench models`")
    rf_parser.add_argument(
        "--input-size", type=_positive, metavar="N", help="square N x N input (default: the model's natural input)"
    )
    rf_parser.add_argument("--layers", nargs="+", metavar="LAYER", help="only these layers (qualified module names)")
    rf_parser.add_argument("--format", choices=("table", "json", "csv"), default="table", help="output format")
    rf_parser.add_argument(
        "--erf-samples",
        type=_count,
        default=8,
        metavar="N",
        help="random inputs averaged for the effective field (default 8; 0 skips it, the slow part)",
    )
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
    run_parser.add_argument("--results", default="results", metavar="DIR", help="results root (default: results)")
    run_parser.add_argument(
        "--history", type=Path, metavar="PATH", help="the history database (default: RESULTS/history.sqlite)"
    )
    run_parser.add_argument("--run-id", metavar="ID", help="the run folder's name (default: time + random)")
    run_parser.add_argument("--data-root", metavar="DIR", help="where datasets are (default: data)")
    run_parser.add_argument("--download", action="store_true", help="download a missing dataset")
    run_parser.set_defaults(handler=cmd_run)

    history_help = "the history database (default: results/history.sqlite)"

    def add_history(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--history", type=Path, default=DEFAULT_HISTORY, metavar="PATH", help=history_help)

    def add_output(sub: argparse.ArgumentParser, default: str) -> None:
        sub.add_argument(
            "--output", default=default, metavar="STEM", help=f"figure path without suffix (default {default})"
        )

    def add_format(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--format", choices=("text", "markdown"), default="text", help="table format on stdout")
        sub.add_argument("--markdown", type=Path, metavar="FILE", help="also write the table as Markdown to FILE")

    history_parser = commands.add_parser("history", help="list the runs in the history")
    add_history(history_parser)
    history_parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
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
        type=float,
        default=DEFAULT_MEMORY_PERCENT,
        metavar="PERCENT",
        help=f"peak-memory change that counts (default {DEFAULT_MEMORY_PERCENT:g})",
    )
    add_format(compare_parser)
    compare_parser.set_defaults(handler=cmd_compare)

    trend_parser = commands.add_parser("trend", help="throughput and memory over the recorded runs, as a figure")
    trend_parser.add_argument("--model", nargs="+", metavar="MODEL", help="only these models")
    trend_parser.add_argument("--optimizer", nargs="+", metavar="OPTIMIZER", help="only these optimizers")
    add_history(trend_parser)
    add_threshold(trend_parser)
    add_baseline_runs(trend_parser)
    add_output(trend_parser, "results/trend")
    trend_parser.set_defaults(handler=cmd_trend)

    gpus_parser = commands.add_parser("gpus", help="runs of one suite on different devices, side by side")
    gpus_parser.add_argument("runs", nargs="+", metavar="RUN", help=run_help)
    gpus_parser.add_argument("--reference", metavar="DEVICE", help="device to normalise to (default: the first run's)")
    add_history(gpus_parser)
    add_format(gpus_parser)
    add_output(gpus_parser, "results/gpus")
    gpus_parser.set_defaults(handler=cmd_gpus)

    optim_parser = commands.add_parser(
        "optim",
        help="the optimizer step alone against the device's measured memory bandwidth",
        description="Time optimizer.step() for each optimizer on each model's real parameter shapes (fixed "
        "gradients, state already created), measure the device's STREAM copy and triad bandwidth in the same "
        "run, and report step time, bytes moved per parameter, achieved GB/s and the percentage of the "
        "measured bandwidth. Writes results/<run-id>/ like `convbench run`, with the same exit statuses.",
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
    optim_parser.set_defaults(handler=cmd_optim)

    report_parser = commands.add_parser("report", help="write a run's figures, tables and reports into its folder")
    report_parser.add_argument("run_dir", metavar="RUN_DIR", help="the run's folder, e.g. results/<run-id>")
    report_parser.set_defaults(handler=cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Imported after parsing so that --help answers without loading torch.
    from bench.data import DatasetNotFoundError
    from bench.runner import SetupError
    from bench.suite import SuiteError
    from models.registry import UnknownNameError

    # Bad input, named in the message: an unknown name, run or device, a run folder that
    # is not one, cases measured differently. Exit status 2, as argparse uses for usage.
    bad_input: tuple[type[Exception], ...] = (
        UnknownNameError,
        SuiteError,
        SetupError,
        DatasetNotFoundError,
        FileExistsError,
        FileNotFoundError,
    )
    if args.command in ("history", "ingest", "compare", "trend", "gpus"):
        from bench.compare import IncomparableError
        from bench.history import HistoryError

        bad_input += (HistoryError, IncomparableError)
    handler: Handler = args.handler
    try:
        return handler(args)
    except bad_input as error:
        print(f"convbench {args.command}: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
