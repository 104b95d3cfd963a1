"""``convbench export``: a run as github-action-benchmark or pytest-benchmark JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.commands import arguments

NAME = "export"
HELP = "a run as github-action-benchmark or pytest-benchmark JSON"
DESCRIPTION = (
    "Write a run's ok cases as JSON for other tools: github-action-benchmark (tool customBiggerIsBetter for "
    "--metric throughput, customSmallerIsBetter for step_time) or a pytest-benchmark saved session "
    "(pytest-benchmark compare reads it)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run", nargs="?", default="latest", metavar="RUN", help=arguments.RUN_HELP + " (default latest)"
    )
    parser.add_argument(
        "--format", choices=("github-action-benchmark", "pytest-benchmark"), required=True, help="the tool to feed"
    )
    parser.add_argument(
        "--metric",
        choices=("throughput", "step_time"),
        default="throughput",
        help="github-action-benchmark's value: samples/s or median step time in ms (default throughput)",
    )
    parser.add_argument(
        "--all",
        action="store_true",
        help="every run of the history, as a pytest-benchmark storage folder (--output DIR)",
    )
    parser.add_argument("--output", type=Path, metavar="FILE|DIR", help="write here instead of stdout")
    arguments.add_history(parser)


def run(args: argparse.Namespace) -> int:
    """A run (or, with --all, the whole history) as github-action-benchmark or pytest-benchmark JSON."""
    from bench.api import reading
    from bench.api.session import Console
    from bench.checks import SuiteError
    from bench.reporting.output import emit

    console = Console(NAME)
    if args.all:
        if args.format != "pytest-benchmark" or args.output is None:
            raise SuiteError(
                "--all writes a pytest-benchmark storage folder: give --format pytest-benchmark --output DIR"
            )
        notes: list[str] = []
        for path in reading.export_history(args.history, args.output, notes):
            print(path)
        for note in notes:
            console.say(f"note: {note}")
        return 0
    document, exported, manifest = reading.export_run(args.run, args.format, metric=args.metric, history=args.history)
    if not exported:
        throughput = args.format == "github-action-benchmark" and args.metric == "throughput"
        measured = "a throughput" if throughput else "step times"
        console.say(
            f"note: run {manifest.get('run_id')} has no ok case with {measured} "
            "(a training-to-accuracy run has none; an optimizer-step run has step times but no throughput)"
        )
    emit(json.dumps(document, indent=2) + "\n", args.output, history=args.history)
    return 0
