"""Stop signals during a run: Ctrl-C (SIGINT) and SIGTERM end the measuring, never the closing.

While cases run, a stop signal raises (KeyboardInterrupt or ``Terminated``) and the sweep ends
between two records, as a user expects. Once the measuring is over, closing the run (its
manifest and its history row) takes well under a second and must not be cut in half: a stop
signal then is only noted, and ``StopSignals.received`` tells the caller to exit as
interrupted once the run is consistent. A second Ctrl-C is treated like the first.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class Terminated(BaseException):
    """SIGTERM arrived; like KeyboardInterrupt, it ends the run between two records."""


#: Exit status of a process stopped by each signal, as a shell reports it (128 + signal number).
EXIT_STATUS = {signal.SIGINT: 128 + signal.SIGINT, signal.SIGTERM: 128 + signal.SIGTERM}


class StopSignals:
    """The handler of SIGINT and SIGTERM for one run. ``deferring`` (the default): a signal
    is only recorded in ``received`` (signal numbers, in order of arrival), to be acted on
    later; inside ``interruptible()`` it raises, and is thereby acted on."""

    def __init__(self) -> None:
        self.deferring = True
        self.received: list[int] = []

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.deferring:
            self.received.append(signum)
            return
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise Terminated

    @property
    def exit_status(self) -> int | None:
        """The exit status the first deferred stop signal calls for, or None if none arrived."""
        return EXIT_STATUS[self.received[0]] if self.received else None

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """Within the block a stop signal raises KeyboardInterrupt (SIGINT) or Terminated
        (SIGTERM); one that arrived before the block raises as it starts. Deferring again
        once the block is left, however it is left."""
        self.deferring = False
        try:
            if self.received:
                self(self.received.pop(0), None)
            yield
        finally:
            self.deferring = True


@contextmanager
def stop_signals() -> Iterator[StopSignals]:
    """Handle SIGINT and SIGTERM with a StopSignals for the block (main thread only), putting
    the previous handlers back afterwards. A SIGINT ignored at start-up (a background job)
    stays ignored."""
    handler = StopSignals()
    previous: dict[int, object] = {}
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(signum) is not signal.SIG_IGN:
                previous[signum] = signal.signal(signum, handler)
    except ValueError:  # not the main thread: signals are the main thread's to handle
        pass
    try:
        yield handler
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
