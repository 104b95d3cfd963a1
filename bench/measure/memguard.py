"""A memory limit for CPU runs, so that a case too big for the machine fails as ``oom``
instead of inviting the kernel's out-of-memory killer (which kills the whole run).

On CUDA the device's allocator refuses what does not fit and the case is recorded ``oom``; on
the CPU nothing refuses until the kernel kills the process. ``convbench run`` on the CPU
therefore caps the process's address space (``RLIMIT_AS``, setrlimit(2)) at what it has mapped
when the run starts plus a headroom: by default ``DEFAULT_FRACTION`` of the memory available
then (``MemAvailable``, what can be had without swapping), or ``--memory-limit GIB``. An
allocation past the cap fails in the allocator (torch: ``DefaultCPUAllocator: can't allocate
memory``, NumPy and Python: ``MemoryError``), the case is recorded ``oom`` and the sweep goes
on. The address space counts mapped but untouched pages too (libraries, thread stacks), so
the cap is set above what is mapped already rather than as a share of RAM. Not used on CUDA,
whose driver maps far more address space than it uses.
"""

from __future__ import annotations

import resource
from collections.abc import Iterator
from contextlib import contextmanager

import psutil

from bench.record import Record

DEFAULT_FRACTION = 0.9
GIB = 2**30
#: How an allocation refused under the cap reads in a case's error message.
_ALLOCATION_FAILURES = ("DefaultCPUAllocator: can't allocate memory", "MemoryError")


def default_headroom() -> int:
    """``DEFAULT_FRACTION`` of the memory available now, bytes."""
    return int(DEFAULT_FRACTION * psutil.virtual_memory().available)


#: The largest finite limit setrlimit takes (rlim_t as a signed 64-bit value in Python).
_LARGEST_LIMIT = 2**63 - 1


def headroom_for(limit_gib: float | None) -> int:
    """Bytes of headroom for ``--memory-limit GIB`` (None: ``default_headroom()``); a limit
    beyond any address space (2**64 bytes) is that much, i.e. no cap."""
    if limit_gib is None:
        return default_headroom()
    return int(min(limit_gib, 2**64 / GIB) * GIB)


@contextmanager
def address_space_limit(headroom_bytes: int) -> Iterator[int]:
    """Cap this process's address space at what it maps now plus ``headroom_bytes`` while
    the block runs (yields the cap, bytes); the previous soft limit comes back afterwards.
    Never raises the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = psutil.Process().memory_info().vms + headroom_bytes
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    elif cap > _LARGEST_LIMIT:  # more than an address space holds: no cap at all
        cap = resource.RLIM_INFINITY
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield cap
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def mark_out_of_memory(record: Record) -> Record:
    """``record`` with status ``oom`` if its error is an allocation refused under the cap
    (the runner records such a failure as a plain ``error``)."""
    if record.status == "error" and any(text in (record.error or "") for text in _ALLOCATION_FAILURES):
        record.status = "oom"
    return record
