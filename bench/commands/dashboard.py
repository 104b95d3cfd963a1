"""``convbench dashboard``: a static site of every case over every run."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench import defaults
from bench.commands import arguments

NAME = "dashboard"
HELP = "a static site of every case over every run, regressions marked (needs plotly)"
DESCRIPTION = (
    "Write a self-contained static site from the history: an index of machines and suites with their latest runs' "
    "verdicts, a page per suite and machine with every case over time, a page per suite run on several machines. "
    "--output is replaced atomically (it becomes a link to the version written)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output", type=Path, default=defaults.RESULTS / "dashboard", metavar="DIR", help="default results/dashboard"
    )
    arguments.add_baseline_runs(parser, include_incomplete=False)
    arguments.add_history(parser)
    arguments.add_threshold(parser)


def run(args: argparse.Namespace) -> int:
    """Write the static dashboard of the history (bench.dashboard) and say where."""
    from bench.api.reading import dashboard
    from bench.api.session import EXIT_BAD_INPUT, Console
    from bench.dashboard import DashboardError

    try:
        site = dashboard(
            history=args.history, output=args.output, baseline_runs=args.baseline_runs, threshold=args.threshold / 100
        )
    except DashboardError as error:
        Console(NAME).say(f"error: {error}")
        return EXIT_BAD_INPUT
    print(
        f"{args.output / 'index.html'}: {site.runs} runs, {len(site.series_pages)} series pages, "
        f"{len(site.gpu_pages)} GPU pages"
    )
    return 0
