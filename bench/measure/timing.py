"""Timing training steps: every sample kept, summarised by median, IQR and minimum.

A step is a sequence of phases (one phase, or forward / backward / optimizer step in
detailed mode). ``time_steps`` takes a stamp before the first phase and after every
phase, on a clock that knows its device:

- ``HostClock`` (CPU): ``time.perf_counter``; CPU work is synchronous, so the host clock
  sees it whole.
- ``CudaClock``: a ``torch.cuda.Event`` recorded in the current stream after each phase,
  so stamps are taken on the GPU's own timeline while the host keeps queueing work. No host
  clock goes near asynchronous work; the host blocks once per ``time_steps`` call, on the
  last event, before any elapsed time is read. Consecutive steps share their boundary
  event, so the samples of one call add up to its whole span: gaps where the GPU waited
  for the host count against the step, as they do in training.

That is the step's wall time. The time the device itself needs for a step's kernels is
another figure when the host is the slower of the two: ``queued_times`` puts a device-side
delay (``Clock.hold``) at the head of the stream, queues many steps behind it and times the
device's span over them, having checked that the host finished queueing before the device got
past the delay (``Clock.reached``); the device then runs the kernels back to back, never
waiting for the host.

The event class and the device's sleep are parameters, so the CUDA logic is testable on the
CPU with a fake.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

#: Device-side delay in front of queued steps: the host's own time per call times this, so
#: that a host twice as slow as the sample it measured still finishes queueing in time.
HOLD_FACTOR = 2.0
#: Added to every hold (ms): the host's time to record the events and read the first one.
HOLD_FLOOR_MS = 1.0
#: Tries of ``queued_times`` (each halves the calls queued and doubles the hold per call).
QUEUE_ATTEMPTS = 4
#: Cycles of ``torch.cuda._sleep`` timed once to learn the device's clock (about 1 ms).
CALIBRATION_CYCLES = 1_000_000


class Clock(Protocol):
    #: Whether the device runs the work after the host has queued it (CUDA), rather than as
    #: the host calls it (the CPU, where host and device are one).
    asynchronous: bool

    def stamp(self) -> object:
        """A point in time on the device's timeline, taken now in program order."""

    def wait(self, stamp: object) -> None:
        """Block the host until ``stamp`` has been reached on the device."""

    def elapsed_ms(self, start: object, end: object) -> float:
        """Milliseconds from ``start`` to ``end`` (both reached)."""

    def hold(self, milliseconds: float) -> None:
        """Queue a device-side delay of about ``milliseconds`` (nothing where not asynchronous)."""

    def reached(self, stamp: object) -> bool:
        """Whether the device has got to ``stamp`` by now, without waiting for it."""


class HostClock:
    """The host's monotonic clock, for synchronous (CPU) work."""

    asynchronous = False

    def stamp(self) -> float:
        return time.perf_counter()

    def wait(self, stamp: object) -> None:
        pass

    def elapsed_ms(self, start: float, end: float) -> float:
        return (end - start) * 1e3

    def hold(self, milliseconds: float) -> None:
        pass

    def reached(self, stamp: object) -> bool:
        return True


class CudaClock:
    """CUDA events recorded in the current stream of the current device; ``hold`` queues
    ``torch.cuda._sleep``, a kernel that spins for a number of the device's clock cycles,
    counted in milliseconds after timing ``CALIBRATION_CYCLES`` of it once."""

    asynchronous = True

    def __init__(
        self, event_class: Callable[..., object] | None = None, sleep: Callable[[int], None] | None = None
    ) -> None:
        self.event_class = event_class or torch.cuda.Event
        # private to torch: where a build lacks it, nothing holds the device back, and the
        # queued spans of a host-bound step come out unclean (device time from the profiler)
        self.sleep = sleep or getattr(torch.cuda, "_sleep", None)
        self._cycles_per_ms: float | None = None

    def stamp(self) -> object:
        event = self.event_class(enable_timing=True)
        event.record()
        return event

    def wait(self, stamp: object) -> None:
        stamp.synchronize()

    def elapsed_ms(self, start: object, end: object) -> float:
        return start.elapsed_time(end)

    def hold(self, milliseconds: float) -> None:
        if self.sleep is None:
            return
        if self._cycles_per_ms is None:
            start = self.stamp()
            self.sleep(CALIBRATION_CYCLES)
            end = self.stamp()
            self.wait(end)
            self._cycles_per_ms = CALIBRATION_CYCLES / self.elapsed_ms(start, end)
        self.sleep(max(1, round(milliseconds * self._cycles_per_ms)))

    def reached(self, stamp: object) -> bool:
        return stamp.query()


def clock_for(device: torch.device) -> Clock:
    return CudaClock() if device.type == "cuda" else HostClock()


def time_steps(phases: Sequence[Callable[[], None]], steps: int, clock: Clock) -> list[list[float]]:
    """Run ``steps`` steps of ``phases`` and return the milliseconds of each phase of each
    step: ``result[phase][step]``. The host waits for the device once, at the end."""
    stamps = [clock.stamp()]
    for _ in range(steps):
        for phase in phases:
            phase()
            stamps.append(clock.stamp())
    clock.wait(stamps[-1])
    count = len(phases)
    return [
        [clock.elapsed_ms(stamps[step * count + index], stamps[step * count + index + 1]) for step in range(steps)]
        for index in range(count)
    ]


def queued_span_ms(call: Callable[[], object], count: int, clock: Clock, hold_ms: float) -> float | None:
    """Milliseconds per call of the device's span over ``count`` back-to-back calls of
    ``call`` queued behind a device-side delay of ``hold_ms``, or None where the device got past
    the delay before the host had queued them all (the delay was too short, the launch queue
    filled and blocked the host, or ``call`` waited for the device): then the device may have
    waited for the host inside the span. Where the clock is not asynchronous the span is
    simply the calls' time."""
    clock.hold(hold_ms)
    start = clock.stamp()
    for _ in range(count):
        call()
    end = clock.stamp()
    ahead = not clock.reached(start)
    clock.wait(end)
    return clock.elapsed_ms(start, end) / count if ahead or not clock.asynchronous else None


def queued_times(
    call: Callable[[], object], count: int, repeats: int, clock: Clock, host_ms_per_call: float
) -> tuple[list[float], int] | None:
    """``repeats`` samples of the device's milliseconds per call of ``call``, each from
    ``queued_span_ms`` over ``count`` calls held back by ``HOLD_FACTOR`` x ``host_ms_per_call``
    per call (+ ``HOLD_FLOOR_MS``), and the count they were taken over. Where a span is not
    clean, starts again with half the calls (fewer launches in the queue at once) and twice
    the hold per call, ``QUEUE_ATTEMPTS`` times in all; None if none was clean."""
    allowance = HOLD_FACTOR * host_ms_per_call
    for _ in range(QUEUE_ATTEMPTS):
        samples = []
        for _ in range(repeats):
            span = queued_span_ms(call, count, clock, allowance * count + HOLD_FLOOR_MS)
            if span is None:
                break
            samples.append(span)
        else:
            return samples, count
        count, allowance = max(1, count // 2), 2 * allowance
    return None


@dataclass(frozen=True)
class Summary:
    """Statistics of a list of samples, in the samples' unit."""

    median: float
    iqr: float  # 75th minus 25th percentile
    min: float
    count: int


def percentile(sorted_samples: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile by linear interpolation between closest ranks (numpy's
    default, 'type 7'): position ``fraction * (n - 1)`` in the sorted samples."""
    position = fraction * (len(sorted_samples) - 1)
    below = math.floor(position)
    above = min(below + 1, len(sorted_samples) - 1)
    weight = position - below
    return sorted_samples[below] + (sorted_samples[above] - sorted_samples[below]) * weight


def summarize(samples: Sequence[float]) -> Summary:
    """Median, interquartile range and minimum of at least one sample."""
    if not samples:
        raise ValueError("cannot summarise an empty list of samples")
    ordered = sorted(samples)
    return Summary(
        median=percentile(ordered, 0.5),
        iqr=percentile(ordered, 0.75) - percentile(ordered, 0.25),
        min=ordered[0],
        count=len(ordered),
    )
