"""Figures: one function per figure, each taking a DataFrame and returning a matplotlib Figure.

Every figure uses the same theme (seaborn's ``paper`` context, a white grid and the
colour-blind-safe palette) and is sized for a paper: ``COLUMN`` inches wide for one
column, ``PAGE`` for the full text width. ``save`` writes PNG (for the web) and PDF (for
papers, with embedded TrueType fonts) side by side.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures are files; no display is needed or assumed

import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

COLUMN = 3.5  # inches: one column of a two-column paper
PAGE = 7.0  # inches: the full text width
PALETTE = "colorblind"
PNG_DPI = 200


def use_theme() -> None:
    """Apply the suite's one theme to everything drawn after this call."""
    sns.set_theme(
        context="paper",
        style="whitegrid",
        palette=PALETTE,
        rc={"pdf.fonttype": 42, "ps.fonttype": 42, "figure.dpi": 100, "savefig.bbox": "tight"},
    )


def save(figure: Figure, stem: Path) -> list[Path]:
    """Write ``stem.png`` and ``stem.pdf`` and close the figure; returns both paths."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    figure.savefig(paths[0], dpi=PNG_DPI)
    figure.savefig(paths[1])
    plt.close(figure)
    return paths
