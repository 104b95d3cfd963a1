"""``convbench models``: the model registry."""

from __future__ import annotations

import argparse

from bench.commands import arguments

NAME = "models"
HELP = "list the model registry"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", metavar="MODEL", help="only these models (default: all)")
    arguments.add_output(parser)
    arguments.add_no_model_code(parser)


def run(args: argparse.Namespace) -> int:
    """Print the model registry: name, family, parameter count, input shape, classes."""
    from bench import api

    arguments.print_output(api.models_frame(args.names), args)
    return 0
