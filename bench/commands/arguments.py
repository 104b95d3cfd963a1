"""What the commands share: how their arguments are read, and the option groups several
commands take, each defined once.

Nothing here imports torch, pandas or the measuring code, so that building the parser (and
``convbench --help``) stays quick; a value that needs them is checked by the API.
"""

from __future__ import annotations

import argparse
import math
import tomllib
from pathlib import Path

from bench import defaults
from bench.checks import COMPILE_MODES, PRECISIONS, STRATEGIES

#: Output formats of the commands that print a table (``--format``).
FORMATS = ("text", "markdown", "json", "csv")

__all__ = ["COMPILE_MODES", "FORMATS", "PRECISIONS", "STRATEGIES"]

RUN_HELP = "a run folder, a run id in the history, latest, or previous"


# --- values ---------------------------------------------------------------------------


def integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def positive(text: str) -> int:
    value = integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def count(text: str) -> int:
    value = integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be zero or more, got {text}")
    return value


def real(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def finite(text: str, unit: str) -> float:
    """A finite number of zero or more ``unit`` (a percentage, a number of GiB)."""
    value = real(text)
    if not value >= 0:  # NaN fails too
        raise argparse.ArgumentTypeError(f"must be zero or more, got {text}")
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite {unit}, got {text}")
    return value


def percent(text: str) -> float:
    """A threshold in percent: a finite number of zero or more."""
    return finite(text, "percentage")


def positive_real(text: str) -> float:
    value = real(text)
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a finite positive number, got {text}")
    return value


def items(text: str) -> list[str]:
    """A comma-separated list."""
    return [item.strip() for item in text.split(",") if item.strip()]


def names(text: str) -> list[str] | str:
    """A comma-separated list of registry names, or ``all``."""
    return "all" if text == "all" else items(text)


def integers(text: str) -> list[int]:
    """A comma-separated list of integers (the suite checks that they are positive)."""
    try:
        return [int(item) for item in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def reals(text: str) -> list[float]:
    """A comma-separated list of numbers."""
    try:
        return [float(item) for item in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def betas(text: str) -> list[list[float]]:
    """``B1,B2``: Adam's two decay rates."""
    values = reals(text)
    if len(values) != 2:
        raise argparse.ArgumentTypeError(f"expected two numbers B1,B2, got {text!r}")
    return [values]


def shape(text: str) -> list[int]:
    """``C,H,W``."""
    values = integers(text)
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected C,H,W (three integers), got {text!r}")
    return values


def square_or_shape(text: str) -> list[int]:
    """``N`` (a square N x N input) or ``C,H,W``."""
    values = integers(text)
    if len(values) not in (1, 3) or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"expected N (a square input) or C,H,W; each must be a positive integer, got {text!r}"
        )
    return values


def keyword_arguments(text: str) -> dict[str, object]:
    """``k=v,k2=v2`` with each value read as a TOML value (numbers, true/false, quoted or bare
    strings)."""
    found: dict[str, object] = {}
    for item in items(text):
        key, equals, value = item.partition("=")
        if not equals or not key.strip().isidentifier():
            raise argparse.ArgumentTypeError(f"expected key=value pairs separated by commas, got {item!r}")
        try:
            found[key.strip()] = tomllib.loads(f"v = {value.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            found[key.strip()] = value.strip()
        except RecursionError:
            raise argparse.ArgumentTypeError(f"{key.strip()}: the value is nested too deeply to read") from None
    return found


def size(text: str) -> int:
    """A memory size: ``80GiB``, ``512MiB``, ``16GB``, a number of bytes."""
    from bench.measure.sizes import parse_bytes

    try:
        return parse_bytes(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


# --- option groups ----------------------------------------------------------------------


def print_output(frame: object, args: argparse.Namespace, **around: object) -> None:
    """Print ``frame`` (and the lines and fields ``around`` it, see bench.reporting.output.render) in
    ``--format``, to ``--output`` if given."""
    from bench.reporting.output import emit, render

    text, to_stderr = render(frame, args.format, **around)
    emit(text, args.output, to_stderr, getattr(args, "history", None))


def add_output(parser: argparse.ArgumentParser) -> None:
    """``--format`` and ``--output FILE``: how a command's table is printed, and where."""
    parser.add_argument("--format", choices=FORMATS, default="text", help="output format (default text)")
    parser.add_argument("--output", type=Path, metavar="FILE", help="write the output to FILE instead of stdout")


def add_destinations(parser: argparse.ArgumentParser) -> None:
    """Where a measuring command's run goes: results root, history, run id, machine."""
    parser.add_argument("--results", default="results", metavar="DIR", help="results root (default: results)")
    parser.add_argument(
        "--history", type=Path, metavar="PATH", help="the history database (default: RESULTS/history.sqlite)"
    )
    parser.add_argument(
        "--run-id",
        metavar="ID",
        help="the run folder's name: 1-100 letters, digits, '.', '_', '-' (default: time + random)",
    )
    parser.add_argument(
        "--machine",
        metavar="NAME",
        help="the machine the run is filed under for previous and --baseline-runs "
        "(default: $CONVBENCH_MACHINE, else the GPU's UUID or the CPU model)",
    )


def add_history(parser: argparse.ArgumentParser) -> None:
    """``--history PATH`` of the commands that read the history."""
    parser.add_argument(
        "--history",
        type=Path,
        default=defaults.HISTORY,
        metavar="PATH",
        help=f"the history database (default: {defaults.HISTORY})",
    )


def add_threshold(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threshold",
        type=percent,
        default=defaults.THRESHOLD * 100,
        metavar="PERCENT",
        help=f"step-time change that counts, if significant (default {defaults.THRESHOLD * 100:g})",
    )


def add_memory_threshold(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--memory-threshold",
        type=percent,
        default=defaults.MEMORY_THRESHOLD * 100,
        metavar="PERCENT",
        help=f"peak-memory change that counts (default {defaults.MEMORY_THRESHOLD * 100:g})",
    )


def add_baseline_runs(parser: argparse.ArgumentParser, include_incomplete: bool = True) -> None:
    parser.add_argument(
        "--baseline-runs",
        type=positive,
        default=1,
        metavar="N",
        help="judge step time against the baseline run and the N-1 complete runs before it (same suite and "
        "machine) with a between-run test; needs N >= 3 (default 1: the baseline's repeats, Welch's test)",
    )
    if include_incomplete:
        parser.add_argument(
            "--include-incomplete",
            action="store_true",
            help="let interrupted and killed runs with records be baselines (default: complete runs only)",
        )
        parser.add_argument("--baseline-tag", metavar="TAG", help="take only runs tagged TAG (run --tag) as baselines")


def add_figure(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument(
        "--figure", default=default, metavar="STEM", help=f"figure path without suffix (default {default})"
    )


def add_no_model_code(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-model-code",
        action="store_true",
        help="refuse package.module:function model references, which import and call the code they name "
        "(also CONVBENCH_NO_MODEL_CODE=1): for jobs that run suites they did not write",
    )


def add_no_limits(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-limits",
        action="store_true",
        help="lift the bounds on a suite's work (10,000 cases, 1,000,000 timed steps a case, 10,000 warm-up "
        "steps; training: 10,000 runs, 10,000 epochs, 100,000,000 steps)",
    )
