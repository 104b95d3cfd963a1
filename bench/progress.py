"""A progress bar over a run's cases, on stderr, with no dependency beyond the standard library.

On a terminal it is one line redrawn in place: bar, count, elapsed time and the case in
flight. Elsewhere (a log file, CI) it prints one line per finished case instead.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO


class ProgressBar:
    def __init__(self, total: int, stream: TextIO | None = None, width: int = 24) -> None:
        self.total = total
        self.done = 0
        self.stream = stream or sys.stderr
        self.width = width
        self.live = self.stream.isatty()
        self.started = time.monotonic()

    def _elapsed(self) -> str:
        seconds = int(time.monotonic() - self.started)
        return f"{seconds // 60}:{seconds % 60:02d}"

    def _draw(self, label: str) -> None:
        filled = self.width * self.done // max(self.total, 1)
        line = f"[{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total} {self._elapsed()} {label}"
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
            self.stream.write(f"[{self.done}/{self.total}] {self._elapsed()} {label} {status}\n")
            self.stream.flush()

    def close(self) -> None:
        if self.live:
            self.stream.write("\n")
            self.stream.flush()
