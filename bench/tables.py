"""Plain-text and GitHub-flavoured Markdown tables from a DataFrame.

Hand-written so the suite needs no table package beyond pandas: numbers align right,
text aligns left, missing values print as an empty cell.
"""

from __future__ import annotations

import pandas as pd


def _cells(frame: pd.DataFrame) -> tuple[list[str], list[list[str]], list[bool]]:
    headers = [str(column) for column in frame.columns]
    numeric = [pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c]) for c in frame]
    rows = [["" if _missing(value) else str(value) for value in row] for row in frame.itertuples(index=False)]
    return headers, rows, numeric


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def text_table(frame: pd.DataFrame) -> str:
    """A fixed-width table for the terminal."""
    headers, rows, numeric = _cells(frame)
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        padded = [c.rjust(w) if n else c.ljust(w) for c, w, n in zip(cells, widths, numeric, strict=True)]
        return "  ".join(padded).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule] + [line(r) for r in rows])


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table; pipes inside cells are escaped."""
    headers, rows, numeric = _cells(frame)

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    align = ["---:" if n else ":---" for n in numeric]
    return "\n".join([line(headers), "| " + " | ".join(align) + " |"] + [line(r) for r in rows])
