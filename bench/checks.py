"""Checking suite files: each check takes a raw value read from TOML (or given on the command
line) and where it came from, and returns the clean value or raises SuiteError naming the
file, the key and what would be valid. Every kind's suite loader is built from these, so a
suite of any kind is refused in the same words, before anything runs."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable

#: Float32 and mixed precisions a training step can run in.
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
#: Data-parallel strategies (bench.kinds.parallel), a case dimension: ``strategy`` in a ``[[grid]]``.
STRATEGIES = ("ddp", "zero1", "fsdp")
#: torch.compile's modes; "default" is what torch.compile does without one.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
#: Bound on the cases one suite may expand to (a grid multiplied out by mistake); past it, the
#: suite is refused before anything runs. ``--no-limits`` lifts it.
MAX_CASES = 10_000  # the full suite has 1,656


class SuiteError(ValueError):
    """A suite that cannot be run as written; the message names the file and the key."""


def type_name(value: object) -> str:
    return type(value).__name__


def positive_int(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SuiteError(f"{where}: expected a positive integer, got {value!r} ({type_name(value)})")
    return value


def boolean(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise SuiteError(f"{where}: expected true or false, got {value!r} ({type_name(value)})")
    return value


def text(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise SuiteError(f"{where}: expected a string, got {value!r} ({type_name(value)})")
    return value


def one_of(choices: tuple[str, ...] | list[str]) -> Callable[[object, str], str]:
    def check(value: object, where: str) -> str:
        if text(value, where) not in choices:
            raise SuiteError(f"{where}: {value!r} is not one of {', '.join(choices)}")
        return value

    return check


def device(value: object, where: str) -> str:
    if not DEVICE_PATTERN.match(text(value, where)):
        raise SuiteError(f"{where}: {value!r} is not a device; expected auto, cpu, cuda or cuda:N")
    return value


def list_of(check: Callable[[object, str], object]) -> Callable[[object, str], tuple]:
    def check_list(value: object, where: str) -> tuple:
        if not isinstance(value, list) or not value:
            raise SuiteError(f"{where}: expected a non-empty list, got {value!r} ({type_name(value)})")
        return tuple(dict.fromkeys(check(item, f"{where}[{i}]") for i, item in enumerate(value)))

    return check_list


def real(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise SuiteError(f"{where}: expected a number, got {value!r} ({type_name(value)})")
    return float(value)


def pair(value: object, where: str) -> tuple[float, float]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise SuiteError(f"{where}: expected a pair of numbers [beta1, beta2], got {value!r}")
    return (real(value[0], f"{where}[0]"), real(value[1], f"{where}[1]"))


def table(value: object, where: str, known: dict) -> dict:
    if not isinstance(value, dict):
        raise SuiteError(f"{where}: expected a table, got {value!r} ({type_name(value)})")
    for key in value:
        if key not in known:
            raise SuiteError(f"{where}.{key}: unknown key; valid keys: {', '.join(known)}")
    return {key: known[key](item, f"{where}.{key}") for key, item in value.items()}


def check_limit(what: str, value: int, limit: int) -> None:
    """SuiteError when ``value`` of ``what`` is past ``limit``, saying how to lift it."""
    if value > limit:
        raise SuiteError(
            f"{what} is {value:,}, more than the limit of {limit:,}; lower it, or lift the limits with --no-limits"
        )


def read_toml(text: str, source: str) -> dict:
    """``text`` parsed as TOML, or SuiteError naming ``source``: not valid TOML, or nested
    more deeply than Python's parser can follow (tomllib recurses per level)."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise SuiteError(f"{source}: not valid TOML: {error}") from None
    except RecursionError:
        raise SuiteError(f"{source}: not valid TOML: values nested too deeply to read") from None
