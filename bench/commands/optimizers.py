"""``convbench optimizers``: the optimizer registry."""

from __future__ import annotations

import argparse

from bench.commands import arguments

NAME = "optimizers"
HELP = "list the optimizer registry"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", metavar="OPTIMIZER", help="only these (default: all)")
    arguments.add_output(parser)


def run(args: argparse.Namespace) -> int:
    """Print the optimizer registry with the state each algorithm keeps per parameter."""
    from bench import api

    arguments.print_output(api.optimizers_frame(args.names), args)
    return 0
