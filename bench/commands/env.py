"""``convbench env``: this machine and its software."""

from __future__ import annotations

import argparse
import json

NAME = "env"
HELP = "describe this machine and its software as JSON"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No arguments."""


def run(args: argparse.Namespace) -> int:
    """Print the machine and software description as JSON."""
    from bench import api

    print(json.dumps(api.environment(), indent=2))
    return 0
