"""``convbench ingest``: run folders (e.g. from other machines) into the history."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.commands import arguments

NAME = "ingest"
HELP = "add run folders (e.g. from other machines) to the history"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR")
    arguments.add_history(parser)


def run(args: argparse.Namespace) -> int:
    """Add run folders to the history, saying which were already there."""
    from bench.api.reading import ingest

    for run_id, added in ingest(args.run_dirs, args.history):
        print(f"added {run_id}" if added else f"skipped {run_id}: already in the history")
    return 0
