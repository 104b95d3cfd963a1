"""``convbench history``: the runs in the history."""

from __future__ import annotations

import argparse

from bench.commands import arguments

NAME = "history"
HELP = "list the runs in the history"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    arguments.add_history(parser)
    arguments.add_output(parser)


def run(args: argparse.Namespace) -> int:
    """List the runs in the history, oldest first."""
    from bench.api.reading import history_runs

    runs, notes = history_runs(args.history)
    arguments.print_output(runs, args, after=[f"note: {note}" for note in notes], fields={"notes": notes})
    return 0
