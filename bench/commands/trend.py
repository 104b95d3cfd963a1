"""``convbench trend``: throughput and memory over the recorded runs, as a figure."""

from __future__ import annotations

import argparse

from bench.commands import arguments

NAME = "trend"
HELP = "throughput and memory over the recorded runs, as a figure"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", type=arguments.items, metavar="A,B", help="only these models")
    parser.add_argument("--optimizers", type=arguments.items, metavar="A,B", help="only these optimizers")
    arguments.add_history(parser)
    arguments.add_threshold(parser)
    arguments.add_baseline_runs(parser)
    arguments.add_output(parser)
    arguments.add_figure(parser, "results/trend")


def run(args: argparse.Namespace) -> int:
    """Throughput and memory over the recorded runs, flagged where compare would flag them."""
    from bench.api.reading import trend

    result = trend(
        history=args.history,
        figure=args.figure,
        models=args.models,
        optimizers=args.optimizers,
        baseline_runs=args.baseline_runs,
        baseline_tag=args.baseline_tag,
        threshold=args.threshold / 100,
    )
    figure = ", ".join(map(str, result.figure))
    arguments.print_output(
        result.flagged,
        args,
        after=[
            *(f"note: {note}" for note in result.notes),
            f"{result.runs} runs, {result.case_regressions} case regressions and {result.run_regressions} "
            f"all-cases regressions flagged; figure: {figure}",
        ],
        fields={"runs": result.runs, "figure": [str(path) for path in result.figure], "notes": result.notes},
    )
    return 0
