"""The nightly dashboard: a static site of every case over every run, from the history.

    history ──► series (SQL on the history's columns; compare.flag_series's verdicts)
            ──► content (page data: plain lists, rounded) ──► html + assets/dashboard.js
            ──► site (plotly.js copied in; the new version swapped in atomically)

Only the command line imports this package (``convbench dashboard``).
"""

from bench.dashboard.build import Site, build_site
from bench.dashboard.site import DashboardError

__all__ = ["DashboardError", "Site", "build_site"]
