"""``convbench gpus``: runs of one suite on different devices, side by side."""

from __future__ import annotations

import argparse

from bench.commands import arguments

NAME = "gpus"
HELP = "runs of one suite on different devices, side by side"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN", help=arguments.RUN_HELP)
    parser.add_argument("--reference", metavar="DEVICE", help="device to normalise to (default: the first run's)")
    arguments.add_history(parser)
    arguments.add_output(parser)
    arguments.add_figure(parser, "results/gpus")


def run(args: argparse.Namespace) -> int:
    """Runs of one suite on different devices, side by side, with a speed-up figure."""
    from bench import kinds
    from bench.api.reading import gpus

    table, notes, paths = gpus(args.runs, history=args.history, reference=args.reference, figure=args.figure)
    arguments.print_output(
        table if args.format == "json" else kinds.side_by_side_wide(table),
        args,
        after=[*notes, f"figure: {', '.join(map(str, paths))}"],
        fields={"notes": notes, "figure": [str(path) for path in paths]},
    )
    return 0
