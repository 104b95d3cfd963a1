"""How busy the machine was besides the benchmark: the load average and other processes' CPU.

A step time measured while another job runs is not the machine's step time: an idle rerun
of a run taken next to another benchmark looks like a large "improvement". So every run
records the load average when it starts, and every case the share of the machine's CPU time
that *other* processes used while it ran:

    other_cpu_fraction = (busy CPU seconds of the whole machine − this process's CPU seconds)
                         / (wall seconds × logical CPUs)

from ``psutil.cpu_times()`` (the kernel's /proc/stat) and ``psutil.Process().cpu_times()``,
read before and after the case. 0 is a quiet machine; 0.5 means other processes kept half the
CPUs busy. Unlike the load average, it leaves out the benchmark's own threads, and covers
exactly the case's time.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import psutil

#: Above this share of the machine's CPU time taken by other processes during a case, its
#: timings are flagged (``run`` warns, ``compare`` notes it): a tenth of the machine is
#: already enough to move CPU step times by several percent.
BUSY_FRACTION = 0.10
#: Above this load average per logical CPU when a run starts, ``run`` warns before measuring.
BUSY_LOAD_PER_CPU = 0.5


def load_average() -> float | None:
    """The 1-minute load average (runnable and waiting processes), or None where the system
    has none."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def _busy_seconds() -> float:
    times = psutil.cpu_times()
    idle = times.idle + getattr(times, "iowait", 0.0)
    return sum(times) - idle - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)


def _own_seconds() -> float:
    own = psutil.Process().cpu_times()
    return own.user + own.system + own.children_user + own.children_system


@dataclass
class OtherLoad:
    """Measures other processes' share of the CPUs between ``start()`` and ``stop()``."""

    load_average_start: float | None = None
    other_cpu_fraction: float | None = None

    def start(self) -> OtherLoad:
        self.load_average_start = load_average()
        self._wall, self._busy, self._own = time.monotonic(), _busy_seconds(), _own_seconds()
        return self

    def stop(self) -> OtherLoad:
        """Fill ``other_cpu_fraction`` (clipped to [0, 1]: the counters tick at different rates)."""
        wall = time.monotonic() - self._wall
        others = (_busy_seconds() - self._busy) - (_own_seconds() - self._own)
        cpus = psutil.cpu_count(logical=True) or 1
        self.other_cpu_fraction = min(max(others / (wall * cpus), 0.0), 1.0) if wall > 0 else None
        return self


def use_threads(threads: int) -> None:
    """Run torch's intra-op work on ``threads`` threads (``torch.set_num_threads``), here and
    in the processes this one starts (``--isolate``'s cases, torchrun's workers), which read
    ``OMP_NUM_THREADS`` when torch starts. Fewer threads than CPUs leaves the rest to other
    work, so that a neighbour's job slows the benchmark less, and less from run to run."""
    import torch

    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)


def quieter(other_cpus: float, cpus: int | None = None, threads: int | None = None) -> str:
    """What to do when other processes keep ``other_cpus`` CPUs busy: the ``--threads`` that
    leaves them theirs (at least 1), or a quieter machine; only the latter where the run's
    ``threads`` (None: not known) are that few already."""
    cpus = cpus or psutil.cpu_count(logical=True) or 1
    free = max(1, cpus - math.ceil(other_cpus - 0.05))  # a twentieth of a CPU is no CPU taken
    if threads is not None and threads <= free:
        return f"run on a quieter machine (this run's threads, {threads}, already leave the others' CPUs free)"
    return f"run on a quieter machine, or give --threads {free} (threads in [suite]) to leave the others' CPUs free"


def busy_warning(load: float | None, cpus: int | None = None, threads: int | None = None) -> str | None:
    """A sentence if a load average of ``load`` makes timings on this machine unreliable,
    with what to do about it (``quieter``; ``threads``: the run's, where known)."""
    cpus = cpus or psutil.cpu_count(logical=True) or 1
    if load is None or load / cpus <= BUSY_LOAD_PER_CPU:
        return None
    return (
        f"the machine is busy (load average {load:.1f} on {cpus} CPUs): step times will be slower and noisier; "
        + quieter(load, cpus, threads)
    )


def case_busy_warning(
    other_cpu_fraction: float | None, cpus: int | None = None, threads: int | None = None
) -> str | None:
    """A sentence if other processes took more than ``BUSY_FRACTION`` of the CPUs while a case
    ran, with what to do about it (``quieter``; ``threads``: the case's, where known); None
    otherwise."""
    if (other_cpu_fraction or 0.0) <= BUSY_FRACTION:
        return None
    cpus = cpus or psutil.cpu_count(logical=True) or 1
    return (
        f"other processes used {other_cpu_fraction:.0%} of the CPUs; its step times are not the machine's: "
        + quieter(other_cpu_fraction * cpus, cpus, threads)
    )
