"""The command line's commands, one module each: ``NAME``, ``HELP`` (and optionally
``DESCRIPTION``), ``add_arguments(parser)`` and ``run(args) -> exit status``.

A command reads its arguments into options (bench.api.options), calls the API function of
the same name, and prints what it returns. Building the parser imports these modules only:
none imports torch, pandas or the measuring code at module level, so ``--help`` is quick.
A new command is a module here and its name in ``COMMANDS``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: The commands, in the order ``convbench --help`` lists them.
COMMANDS = (
    "models",
    "optimizers",
    "env",
    "rf",
    "run",
    "memory",
    "history",
    "ingest",
    "compare",
    "trend",
    "gpus",
    "dashboard",
    "export",
    "optim",
    "report",
    "train",
)


def command(name: str) -> ModuleType:
    """The module of command ``name``."""
    return importlib.import_module(f"bench.commands.{name}")
