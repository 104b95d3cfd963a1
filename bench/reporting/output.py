"""One output convention for every command that prints results: ``--format`` and ``--output``.

``text`` is an aligned table for people, ``markdown`` a GitHub-flavoured table for reports,
``json`` and ``csv`` are for programs. A command's table goes to standard output, or to
``--output FILE`` (written whole, through a temporary file). Lines around the table (which
runs were compared, notes, a summary) go with it in text and Markdown, into the JSON object
as fields, and to standard error with CSV, which holds the table alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TextIO

import pandas as pd

from bench.reporting.tables import markdown_table, markdown_text, printable, text_table

FORMATS = ("text", "markdown", "json", "csv")


def rows(frame: pd.DataFrame) -> list[dict]:
    """The frame as JSON-ready records (NaN becomes null)."""
    return json.loads(frame.to_json(orient="records", date_format="iso"))


def render(
    frame: pd.DataFrame,
    fmt: str,
    *,
    before: Sequence[str] = (),
    after: Sequence[str] = (),
    fields: dict | None = None,
    number: Callable[[object], str] = str,
) -> tuple[str, list[str]]:
    """(the output, lines for standard error) of ``frame`` in ``fmt``.

    ``before`` / ``after`` are lines printed around the table in text and Markdown. JSON is
    the list of rows, or, when ``fields`` is given, an object holding ``fields`` and the rows
    under ``"rows"``. CSV is the table alone; the other lines go to standard error.
    """
    if fmt == "json":
        data: object = rows(frame) if fields is None else {**fields, "rows": rows(frame)}
        return json.dumps(data, indent=2) + "\n", []
    if fmt == "csv":
        return frame.to_csv(index=False), [*before, *after]
    # The lines around the table carry names from run folders and histories: never raw
    # control characters on a terminal, never raw HTML in Markdown.
    line = markdown_text if fmt == "markdown" else printable
    table = markdown_table(frame, number) if fmt == "markdown" else text_table(frame, number)
    return "\n".join([*map(line, before), table, *map(line, after)]) + "\n", []


#: The real standard output while ``results_only_on_stdout`` sends everything else to stderr.
_RESULTS: list[TextIO] = []


@contextlib.contextmanager
def results_only_on_stdout() -> Iterator[None]:
    """Within the block, what anything prints to standard output (a model's builder or
    forward that calls ``print``) goes to standard error, and only ``emit`` writes to the
    real standard output: ``--format json`` and ``csv`` stay readable by a program."""
    _RESULTS.append(sys.stdout)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        _RESULTS.pop()


def _same_file(one: Path | str, other: Path | str) -> bool:
    try:
        return os.path.samefile(one, other)
    except OSError:  # one of them is not there: not the same file
        return False


def _stdout() -> TextIO:
    return _RESULTS[-1] if _RESULTS else sys.stdout


def emit(text: str, output: Path | None, stderr_lines: Sequence[str] = (), history: Path | str | None = None) -> None:
    """Write ``text`` to ``output`` (``bench.storage.store.write_atomic``) or to standard
    output. ``history``: the history the command read, which ``output`` must not be (a
    table written over it would lose every run); HistoryError if it is."""
    from bench.storage.store import write_atomic

    if output is not None and history is not None and _same_file(output, history):
        from bench.storage.history import HistoryError

        raise HistoryError(f"--output {output} is the history this command reads; write the output elsewhere")
    for line in stderr_lines:
        print(printable(line), file=sys.stderr)
    if output is None:
        _stdout().write(text)
        _stdout().flush()
    else:
        write_atomic(Path(output), text)


def stdout_gone() -> None:
    """The reader of standard output went away (``convbench history | head``): send what is
    left to /dev/null, so that neither later prints nor the interpreter's last flush raise
    BrokenPipeError (the recipe of Python's signal module documentation)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, _stdout().fileno())
