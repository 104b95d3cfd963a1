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

The event class is a parameter, so the CUDA logic is testable on the CPU with a fake.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch


class Clock(Protocol):
    def stamp(self) -> object:
        """A point in time on the device's timeline, taken now in program order."""

    def wait(self, stamp: object) -> None:
        """Block the host until ``stamp`` has been reached on the device."""

    def elapsed_ms(self, start: object, end: object) -> float:
        """Milliseconds from ``start`` to ``end`` (both reached)."""


class HostClock:
    """The host's monotonic clock, for synchronous (CPU) work."""

    def stamp(self) -> float:
        return time.perf_counter()

    def wait(self, stamp: object) -> None:
        pass

    def elapsed_ms(self, start: float, end: float) -> float:
        return (end - start) * 1e3


class CudaClock:
    """CUDA events recorded in the current stream of the current device."""

    def __init__(self, event_class: Callable[..., object] | None = None) -> None:
        self.event_class = event_class or torch.cuda.Event

    def stamp(self) -> object:
        event = self.event_class(enable_timing=True)
        event.record()
        return event

    def wait(self, stamp: object) -> None:
        stamp.synchronize()

    def elapsed_ms(self, start: object, end: object) -> float:
        return start.elapsed_time(end)


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
