"""``convbench report``: a run folder's figures, tables and reports, written (again)."""

from __future__ import annotations

import argparse

NAME = "report"
HELP = "write a run's figures, tables and reports into its folder"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the run's folder, e.g. results/<run-id>")


def run(args: argparse.Namespace) -> int:
    """Write a run folder's figures, tables, report.html and report.md."""
    from bench.api.reading import report

    for path in report(args.run_dir):
        print(path)
    return 0
