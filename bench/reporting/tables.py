"""Tables from a DataFrame: plain text, GitHub-flavoured Markdown, LaTeX and HTML.

Hand-written so the suite needs no table package beyond pandas (pandas' own to_markdown
and to_latex need tabulate and jinja2): numbers align right, text aligns left, missing
values print as an empty cell.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable

import numpy as np
import pandas as pd


def step_peak_bytes(frame: pd.DataFrame) -> pd.Series:
    """Each record's peak memory of a training step, bytes: on the CPU, where
    ``peak_memory_bytes`` is the whole process's resident set (Python, torch and whatever
    earlier cases left: hundreds of MiB around a step of a few), the memory pass's exact
    ``tracked_peak_bytes`` where the record has it; else ``peak_memory_bytes`` (CUDA: the
    allocator's peak over the timed steps). NaN where a record has neither."""
    peak = pd.to_numeric(frame.get("peak_memory_bytes", pd.Series(np.nan, index=frame.index)), errors="coerce")
    return peak.where(~process_rss(frame), tracked_peak(frame).fillna(peak))


def process_rss(frame: pd.DataFrame) -> pd.Series:
    """Whether each record's ``peak_memory_bytes`` is the process's resident set (CPU runs)."""
    source = frame.get("peak_memory_source", pd.Series(None, index=frame.index, dtype=object))
    return source.astype(str).str.startswith("process_rss")


def tracked_peak(frame: pd.DataFrame) -> pd.Series:
    """Each record's ``tracked_peak_bytes`` as numbers (NaN where it has none)."""
    return pd.to_numeric(frame.get("tracked_peak_bytes", pd.Series(np.nan, index=frame.index)), errors="coerce")


def printable(text: str) -> str:
    """``text`` with every character that is not printable (ESC, BEL, NUL, a newline, a
    bidirectional override...) written as its Python escape (``\\x1b``), so text from a run
    folder or a history cannot move a terminal's cursor, change its colours or split a row."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def markdown_text(text: object) -> str:
    """Text for a Markdown page: printable (``printable``) and with ``<``, ``>`` and ``&``
    written as HTML entities, so a name holding ``<script>`` shows as text, not as HTML."""
    return html.escape(printable(str(text)), quote=False)


def code_fence(text: str) -> str:
    """A run of backticks longer than any in ``text``: a Markdown code block (three or more)
    that ``text`` cannot close early (CommonMark)."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def _cells(frame: pd.DataFrame, number: Callable[[object], str]) -> tuple[list[str], list[list[str]], list[bool]]:
    """The frame's headers and cells as text (every character printable), and which columns are numbers."""
    headers = [printable(str(column)) for column in frame.columns]
    numeric = [pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c]) for c in frame]
    rows = [
        [
            "" if _missing(value) else number(value) if n else printable(str(value))
            for value, n in zip(row, numeric, strict=True)
        ]
        for row in frame.itertuples(index=False)
    ]
    return headers, rows, numeric


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def format_number(value: object) -> str:
    """A number for people: thousands separated, about three significant digits."""
    if float(value).is_integer() and abs(value) >= 1000 or isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    magnitude = abs(float(value))
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def text_table(frame: pd.DataFrame, number: Callable[[object], str] = str) -> str:
    """A fixed-width table for the terminal; ``number`` writes the numeric cells."""
    headers, rows, numeric = _cells(frame, number)
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        padded = [c.rjust(w) if n else c.ljust(w) for c, w, n in zip(cells, widths, numeric, strict=True)]
        return "  ".join(padded).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule] + [line(r) for r in rows])


def markdown_table(frame: pd.DataFrame, number: Callable[[object], str] = str) -> str:
    """A GitHub-flavoured Markdown table; pipes inside cells are escaped, and so are ``<``,
    ``>`` and ``&`` (as HTML entities: a cell is text, never HTML). ``number`` writes
    the numeric cells (``format_number`` rounds them for reading)."""
    headers, rows, numeric = _cells(frame, number)

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(html.escape(c, quote=False).replace("|", "\\|") for c in cells) + " |"

    align = ["---:" if n else ":---" for n in numeric]
    return "\n".join([line(headers), "| " + " | ".join(align) + " |"] + [line(r) for r in rows])


_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(text: str) -> str:
    """Text with every character LaTeX treats specially written as itself."""
    return "".join(_LATEX_SPECIALS.get(character, character) for character in text)


def latex_table(frame: pd.DataFrame, caption: str, label: str) -> str:
    """A booktabs table (needs ``\\usepackage{booktabs}``): numbers rounded by
    ``format_number`` and right-aligned, text left-aligned, every cell escaped."""
    headers, rows, numeric = _cells(frame, format_number)
    lines = [
        r"\begin{table}[htbp]",
        r"\centering",
        r"\small",
        rf"\caption{{{latex_escape(caption)}}}",
        rf"\label{{{label}}}",
        rf"\begin{{tabular}}{{{''.join('r' if n else 'l' for n in numeric)}}}",
        r"\toprule",
        " & ".join(map(latex_escape, headers)) + r" \\",
        r"\midrule",
        *(" & ".join(map(latex_escape, row)) + r" \\" for row in rows),
        r"\bottomrule",
        r"\end{tabular}",
        r"\end{table}",
    ]
    return "\n".join(lines) + "\n"


def html_table(frame: pd.DataFrame) -> str:
    """An HTML table, numbers rounded by ``format_number`` and right-aligned (class ``num``),
    every cell escaped."""
    headers, rows, numeric = _cells(frame, format_number)

    def line(cells: list[str], tag: str) -> str:
        tags = [f"<{tag} class=num>" if n else f"<{tag}>" for n in numeric]
        return "<tr>" + "".join(f"{t}{html.escape(c)}</{tag}>" for t, c in zip(tags, cells, strict=True)) + "</tr>"

    return "\n".join(["<table>", line(headers, "th"), *(line(r, "td") for r in rows), "</table>"])
