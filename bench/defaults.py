"""Defaults that several layers share, each defined once and in one unit.

Thresholds are fractions here (0.05 is 5%); the command line shows and takes them in
percent. Nothing here imports anything, so the command line can build its help from it.
"""

from pathlib import Path

#: The results root of a measuring command (``--results``).
RESULTS = Path("results")
#: The history database the reading commands use (``--history``); a measuring command's
#: default is ``history.sqlite`` inside its own results root.
HISTORY = RESULTS / "history.sqlite"
HISTORY_NAME = "history.sqlite"
#: Step-time change that counts as a regression or improvement, if significant.
THRESHOLD = 0.05
#: Peak-memory change that counts.
MEMORY_THRESHOLD = 0.10
#: Significance level of compare's tests.
ALPHA = 0.05
#: Seconds a data-parallel collective may hang before the case is a timeout.
COLLECTIVE_TIMEOUT_S = 300.0
