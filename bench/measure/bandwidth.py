"""The device's achievable memory bandwidth, measured STREAM's way.

McCalpin's STREAM benchmark ("Memory bandwidth and machine balance in current high
performance computers", IEEE TCCA Newsletter, 1995; https://www.cs.virginia.edu/stream/)
times simple kernels over arrays much larger than the last-level cache and counts the bytes
the kernel must move, without write-allocate traffic:

- copy   ``a = b``          2 arrays of n elements: 2 · n · s bytes
- triad  ``a = b + q · c``  3 arrays:               3 · n · s bytes

and adds the in-place kernel an optimizer step is made of (every parameter and state tensor
is read and written back in place):

- update ``a = a + q · b``  3 arrays (a read, b read, a written): 3 · n · s bytes

Copy and triad write an array they do not read; on a CPU whose caches allocate on write, each
written line is read first, so they move one array more than they count (triad 4 where it
counts 3) and understate what in-place kernels reach. ``update`` has no such hidden traffic,
so it is the limit an optimizer step is placed against (``LIMIT_KERNEL``); copy and triad are
kept beside it, as STREAM reports them.

Here the kernels are torch's own (``Tensor.copy_`` and ``torch.add(b, c, alpha=q, out=a)``),
so the figure is the bandwidth torch's elementwise kernels reach on this device, which is the
limit an optimizer step written with them can approach. Each array is at least four times the
last-level cache (the CPU's L3 from sysfs, the GPU's L2 from the device properties) and at
least ``MIN_ARRAY_BYTES``, so the cache cannot hold the working set: that is the DRAM
bandwidth. Called with smaller arrays (an optimizer step's working set), the same kernels
measure what the cache gives a working set of that size.

Each timing spans enough back-to-back calls to move at least ``MIN_SAMPLE_BYTES`` (one call
on DRAM-sized arrays, many on cache-sized ones), queued behind a device-side delay on a GPU
(``timing.queued_times``): a small kernel takes less of the device's time than of the
host's to launch, and timed one launch at a time it would measure the host.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bench.measure import timing

MIN_ARRAY_BYTES = 64 * 2**20
#: Bytes each timing moves at least (calls x arrays moved x array bytes), so that a timing of
#: small arrays is long beside the clock's resolution and the device's per-kernel overhead.
MIN_SAMPLE_BYTES = 128 * 2**20
#: Calls a timing spans at most: well inside a CUDA launch queue (about a thousand launches).
MAX_CALLS = 200
#: The host's time to launch one elementwise kernel, ms, generously (it is about 0.005): the
#: device is held back this long per queued call.
LAUNCH_MS = 0.05
#: Arrays the measurement holds at once (a, b, c).
ARRAYS = 3
#: Arrays each kernel moves (STREAM's counts, no write-allocate).
ARRAYS_MOVED = {"copy": 2, "triad": 3, "update": 3}
#: The kernel whose bandwidth an optimizer step is placed against (in place, like the step).
LIMIT_KERNEL = "update"


def last_level_cache_bytes(device: torch.device) -> int | None:
    """The device's last-level cache in bytes: the GPU's L2 (``L2_cache_size``), the CPU's
    largest cache level from ``/sys/devices/system/cpu/cpu0/cache``; None if unknown."""
    if device.type == "cuda":
        return int(getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0)) or None
    sizes = []
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            sizes.append(_parse_cache_size((index / "size").read_text()))
        except (OSError, ValueError):
            continue
    return max(sizes) if sizes else None


def _parse_cache_size(text: str) -> int:
    """sysfs cache sizes: ``32768K``, ``2M`` or a plain byte count."""
    text = text.strip()
    scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:].upper(), 1)
    return int(text[:-1] if scale != 1 else text) * scale


def array_bytes_for(device: torch.device) -> int:
    """Bytes per array: 4 x the last-level cache, at least ``MIN_ARRAY_BYTES``."""
    cache = last_level_cache_bytes(device) or 0
    return max(4 * cache, MIN_ARRAY_BYTES)


@dataclass
class Bandwidth:
    """Measured bandwidth, GB/s (1e9 bytes per second), of each kernel."""

    device: str
    array_bytes: int
    dtype: str
    samples_gbs: dict[str, list[float]] = field(default_factory=dict)  # kernel -> one rate per timing
    calls: dict[str, int] = field(default_factory=dict)  # kernel -> back-to-back calls each timing spans

    def median_gbs(self, kernel: str) -> float:
        return timing.summarize(self.samples_gbs[kernel]).median

    def best_gbs(self, kernel: str) -> float:
        """The highest rate (STREAM reports this one)."""
        return max(self.samples_gbs[kernel])

    def to_dict(self) -> dict:
        return {
            "device": self.device,
            "array_bytes": self.array_bytes,
            "dtype": self.dtype,
            "samples_gbs": self.samples_gbs,
            "calls": self.calls,
            **{f"{k}_median_gbs": self.median_gbs(k) for k in self.samples_gbs},
            **{f"{k}_best_gbs": self.best_gbs(k) for k in self.samples_gbs},
        }


def check_array_bytes(device: torch.device, array_bytes: int) -> None:
    """ValueError unless the three arrays of ``array_bytes`` fit in the device's memory: the
    CUDA device's total, or on the CPU the memory available now (``psutil``), so a size
    given by hand fails before any work rather than in the allocator halfway through a run."""
    needed = ARRAYS * array_bytes
    if device.type == "cuda":
        memory, what = torch.cuda.get_device_properties(device).total_memory, "the GPU's memory"
    else:
        import psutil

        memory, what = psutil.virtual_memory().available, "the memory available"
    if needed > memory:
        raise ValueError(
            f"{ARRAYS} arrays of {array_bytes / 2**20:,.0f} MiB need {needed / 2**30:,.1f} GiB, more than "
            f"{what} ({memory / 2**30:,.1f} GiB)"
        )


def measure_bandwidth(
    device: torch.device,
    array_bytes: int | None = None,
    repeats: int = 10,
    clock: timing.Clock | None = None,
    kernels: tuple[str, ...] = tuple(ARRAYS_MOVED),
) -> Bandwidth:
    """Time ``kernels`` (copy, triad and the in-place update) ``repeats`` times each, interleaved
    (after one untimed run of each), on arrays of ``array_bytes`` (default
    ``array_bytes_for(device)``) of float32, and return every rate. Raises ValueError for
    fewer than 1 repeat, arrays under 1 KiB or an unknown kernel, and RuntimeError where the
    host could not queue a timing's calls ahead of the device."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    array_bytes = array_bytes or array_bytes_for(device)
    if array_bytes < 1024:
        raise ValueError(f"array_bytes must be at least 1024, got {array_bytes}")
    unknown = sorted(set(kernels) - set(ARRAYS_MOVED))
    if unknown:
        raise ValueError(f"unknown bandwidth kernel(s) {unknown}; valid: {', '.join(ARRAYS_MOVED)}")
    clock = clock or timing.clock_for(device)
    n = math.ceil(array_bytes / 4)
    a = torch.zeros(n, device=device)
    b = torch.rand(n, device=device) if {"copy", "triad"} & set(kernels) else None
    c = torch.rand(n, device=device)
    calls = {
        "copy": lambda: a.copy_(b),
        "triad": lambda: torch.add(b, c, alpha=3.0, out=a),
        "update": lambda: a.add_(c, alpha=1e-3),
    }
    result = Bandwidth(str(device), n * 4, "float32", {name: [] for name in kernels})
    for name in kernels:
        calls[name]()  # first touch of every page, kernel selection
    for _ in range(repeats):
        for name in kernels:  # interleaved, so drift hits every kernel alike
            moved = ARRAYS_MOVED[name] * n * 4
            wanted = min(MAX_CALLS, math.ceil(MIN_SAMPLE_BYTES / moved))
            queued = timing.queued_times(calls[name], wanted, 1, clock, LAUNCH_MS)
            if queued is None:
                raise RuntimeError(f"the host could not queue {wanted} {name} kernels ahead of {device}")
            (milliseconds,), result.calls[name] = queued
            result.samples_gbs[name].append(moved / (milliseconds * 1e-3) / 1e9)
    return result
