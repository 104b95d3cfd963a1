"""``convbench train``: train a suite's grid to accuracy and write a run folder.

The run folder is a benchmark run's (``bench.storage.store``: run.json, env.json, suite.toml,
records.jsonl with one Record per (model, recipe, seed)) plus ``curves.jsonl``, one line per
evaluation of every training run, appended and flushed as each run finishes. The report
and the history follow, as after ``convbench run``.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path

CURVES = "curves.jsonl"


def append_curve(run_dir: Path, rows: list[dict]) -> None:
    """Add one training run's curve to ``curves.jsonl``; it is on disk when this returns
    (never written through a symbolic link: ``bench.storage.store.open_for_append``)."""
    from bench.storage.store import open_for_append

    with os.fdopen(open_for_append(run_dir / CURVES), "a", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)
        handle.flush()
        os.fsync(handle.fileno())


def cmd_train(args: argparse.Namespace) -> int:
    """Train every (model, recipe, seed) of a training suite; write records, curves, report."""
    from bench import cli
    from bench.kinds.training import datasets, loop
    from bench.kinds.training.report import summary_frame
    from bench.kinds.training.suite import load_train_suite
    from bench.measure import setup
    from bench.measure.env import collect_env
    from bench.measure.machine import machine_identity
    from bench.measure.stopping import stop_signals
    from bench.reporting.progress import ProgressBar
    from bench.storage.store import RunWriter, check_run_id, new_run_id

    # Everything that can be wrong with the input is found before the run folder exists.
    suite = load_train_suite(args.suite)
    overrides = {
        key: getattr(args, key) for key in ("device", "models", "recipes", "seeds", "epochs", "steps", "batch_size")
    }
    overrides["target_accuracy"] = args.target
    overrides["stop_at_target"] = True if args.stop_at_target else None
    suite = suite.override(**{key: value for key, value in overrides.items() if value is not None})
    device = setup.resolve_device(suite.device)
    suite = suite.override(device=str(device)).resolve(device.type)
    cases = suite.cases(limits=not args.no_limits)
    setup.check_cases(cases, device)
    dataset = datasets.load(suite.dataset, args.data_root or "data", device, args.download)

    run_id = check_run_id(new_run_id() if args.run_id is None else args.run_id)
    env = collect_env()
    machine = machine_identity(device, env, None)
    history_path = cli.run_destinations(args)
    cli.warn_if_last_run_died("train", args.results, suite.name, cases)

    with stop_signals() as signals:
        writer = RunWriter(Path(args.results), run_id, suite.name, suite.to_toml(), env, len(cases), machine=machine)
        cli.warn_if_busy("train", writer)
        progress = ProgressBar(len(cases))
        with cli.measuring("train", writer, signals, progress) as outcome:
            for case in cases:
                progress.start(case.case_id)
                record, curve = loop.run_training_case(
                    case, dataset, run_id=run_id, suite=suite.name, device=device, env=env
                )
                append_curve(writer.path, curve)
                writer.append(record)
                progress.finish(case.case_id, record.status)
        return cli.close_run("train", writer, history_path, signals, outcome.stopped_by, outcome.code, summary_frame)


def add_parser(
    commands: argparse._SubParsersAction,
    names: type,
    positive: type,
    add_switches: Callable[[argparse.ArgumentParser], None] | None = None,
) -> None:
    """Add ``train`` to the CLI's subcommands (``names`` and ``positive`` parse list and
    count flags as ``convbench run`` does; ``add_switches`` adds the flags it shares with it)."""
    sub = commands.add_parser(
        "train",
        help="train a grid of model x recipe x seed to a target accuracy",
        description="Train every (model, recipe, seed) of a training suite on a real dataset and write "
        "results/<run-id>/ with records, learning curves (curves.jsonl), figures and a report. Exit status "
        "as convbench run: 0 done, 1 a case raised an error, 2 bad input, 130/143 interrupted.",
    )
    sub.add_argument(
        "--suite",
        default="mnist",
        metavar="NAME|PATH",
        help="a shipped training suite (mnist, cifar10, cifar10-degradation) or a TOML file (default mnist)",
    )
    sub.add_argument("--data-root", metavar="DIR", help="where the dataset is, in torchvision's layout (default: data)")
    sub.add_argument("--download", action="store_true", help="download a missing dataset through torchvision")
    sub.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    sub.add_argument("--models", type=names, metavar="A,B", help="models to train")
    sub.add_argument("--recipes", type=names, metavar="A,B", help="the suite's recipes to train with, or 'all'")
    sub.add_argument("--seeds", type=positive, metavar="N", help="seeds 0..N-1 per case (default 3 on CUDA, 1 on CPU)")
    budget = sub.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=positive, metavar="N", help="budget: N epochs per training run")
    budget.add_argument("--steps", type=positive, metavar="N", help="budget: N steps per training run")
    sub.add_argument("--batch-size", type=positive, metavar="N", help="training batch size")
    sub.add_argument("--target", type=float, metavar="ACC", help="target test accuracy, a fraction in (0, 1]")
    sub.add_argument("--stop-at-target", action="store_true", help="end each training run once it reaches the target")
    sub.add_argument("--results", default="results", metavar="DIR", help="results root (default: results)")
    sub.add_argument(
        "--history", type=Path, metavar="PATH", help="the history database (default: RESULTS/history.sqlite)"
    )
    sub.add_argument("--run-id", metavar="ID", help="the run folder's name (default: time + random)")
    if add_switches is not None:
        add_switches(sub)
    sub.set_defaults(handler=cmd_train)
