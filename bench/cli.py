"""The ``convbench`` command line (also ``python -m bench``): the parser built from the
commands (bench.commands, one module each), the dispatch, and the exit-status table.

Exit statuses (every command):

- 0: done (for ``run``, ``optim`` and ``train``: every case has a record; oom and diverged
  are results, not failures of the run);
- 1: a case ended ``error``, or a section, the report, the history or a write failed;
  ``compare``: a regression;
- 2: bad input, nothing done: an unknown name, run, device, run id or machine name, a bad
  suite or flag, a run folder that is not one or is damaged, a history that cannot be used,
  cases measured differently;
- 130 / 143: interrupted by Ctrl-C / SIGTERM (a run folder is kept, marked incomplete);
- 141: whoever read the output stopped reading.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from bench.api.session import (
    EXIT_BAD_INPUT,
    EXIT_BROKEN_PIPE,
    EXIT_CASE_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TERMINATED,
)
from bench.commands import COMMANDS, command

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_BROKEN_PIPE",
    "EXIT_CASE_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_TERMINATED",
    "build_parser",
    "main",
]

#: The commands that read the history, where runs measured differently are bad input.
READING = ("history", "ingest", "compare", "trend", "gpus", "export", "dashboard")


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag or value is one line on stderr (``convbench run: error: ...``,
    exit status 2) rather than the whole usage block; ``--help`` still shows it."""

    #: The top-level parser's command parsers, by command name.
    commands: dict[str, argparse.ArgumentParser]

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> _Parser:
    """The whole command line: one sub-parser per module of bench.commands."""
    parser = _Parser(
        prog="convbench",
        description="Benchmark and profile convolutional-network training with Adam and SGD with momentum.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parser.commands = commands.choices
    for name in COMMANDS:
        module = command(name)
        sub = commands.add_parser(name, help=module.HELP, description=getattr(module, "DESCRIPTION", None))
        module.add_arguments(sub)
        sub.set_defaults(handler=module.run)
    return parser


def _bad_input(command_name: str) -> tuple[type[Exception], ...]:
    """The exceptions that mean bad input (exit status 2) for ``command_name``."""
    from bench.checks import SuiteError
    from bench.measure.data import DatasetNotFoundError
    from bench.measure.env import CommitVariableError
    from bench.measure.machine import MachineNameError
    from bench.measure.setup import SetupError
    from bench.storage.history import HistoryError
    from bench.storage.store import RunFolderError
    from models.registry import UnknownNameError

    bad_input: tuple[type[Exception], ...] = (
        RunFolderError,
        HistoryError,
        MachineNameError,
        CommitVariableError,
        UnknownNameError,
        SuiteError,
        SetupError,
        DatasetNotFoundError,
        FileExistsError,
        FileNotFoundError,
    )
    if command_name in READING:
        from bench.analyse.compare import IncomparableError

        bad_input += (IncomparableError,)
    return bad_input


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # named against the command they were given to, whose --help lists its flags
        parser.commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    args.argv = list(sys.argv[1:] if argv is None else argv)  # a data-parallel run hands it to torchrun
    from bench.reporting.output import results_only_on_stdout, stdout_gone

    # --no-model-code: every model reference resolved in this process (and, through argv, in
    # torchrun's workers) is refused if it runs code it names.
    refusing = contextlib.nullcontext()
    if getattr(args, "no_model_code", False):
        from models.references import without_model_code

        refusing = without_model_code()
    # JSON and CSV are for programs: what model code prints goes to stderr, not into them.
    machine_readable = getattr(args, "format", None) in ("json", "csv")
    results_only = results_only_on_stdout() if machine_readable else contextlib.nullcontext()
    try:
        with refusing, results_only:
            return args.handler(args)
    except BrokenPipeError:  # the reader went away (| head): not an error of ours
        stdout_gone()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:  # Ctrl-C before a run folder exists, or in a command without one
        print(f"convbench {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:
        # The classes of bad input are imported only now: a reading command must not load
        # torch (through the measuring modules that define them) to start.
        if isinstance(error, _bad_input(args.command)):
            print(f"convbench {args.command}: error: {error}", file=sys.stderr)
            return EXIT_BAD_INPUT
        if isinstance(error, OSError):  # a full disk, a permission, a folder where a file goes: one line
            print(f"convbench {args.command}: error: {error}", file=sys.stderr)
            return EXIT_CASE_ERROR
        raise


if __name__ == "__main__":
    sys.exit(main())
