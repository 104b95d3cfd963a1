"""A progress bar over a run's cases, on stderr, with no dependency beyond the standard library.

On a terminal it is one line redrawn in place: bar, count, elapsed time, the estimated time
left and the case in flight. Elsewhere (a log file, CI) it prints one line per finished case
instead, with the same times.

The estimate is the mean time per finished case times the cases left: cases of one suite
differ in cost, but a grid's cases come in a repeating order, so the mean over finished cases
settles quickly, and it needs no model of which case costs what.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from typing import TextIO


def clock_text(seconds: float) -> str:
    """``M:SS``, or ``H:MM:SS`` from an hour on."""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressBar:
    def __init__(
        self,
        total: int,
        stream: TextIO | None = None,
        width: int = 24,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.done = 0
        self.stream = stream or sys.stderr
        self.width = width
        self.live = self.stream.isatty()
        self.clock = clock
        self.started = clock()

    def _times(self) -> str:
        """Elapsed time, and the estimate of the time left once a case has finished."""
        elapsed = self.clock() - self.started
        if self.done == 0 or self.done >= self.total:
            return clock_text(elapsed)
        left = elapsed / self.done * (self.total - self.done)
        return f"{clock_text(elapsed)} eta {clock_text(left)}"

    def _draw(self, label: str) -> None:
        filled = self.width * self.done // max(self.total, 1)
        line = f"[{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total} {self._times()} {label}"
        columns = shutil.get_terminal_size().columns
        self.stream.write("\r" + line[: columns - 1] + "\x1b[K")
        self.stream.flush()

    def start(self, label: str) -> None:
        """A case begins."""
        if self.live:
            self._draw(label)

    def finish(self, label: str, status: str) -> None:
        """A case ended with ``status``."""
        self.done += 1
        if self.live:
            self._draw(f"{label} {status}")
        else:
            self.stream.write(f"[{self.done}/{self.total}] {self._times()} {label} {status}\n")
            self.stream.flush()

    def close(self) -> None:
        if self.live:
            self.stream.write("\n")
            self.stream.flush()
