"""Memory of a training case: what its tensors hold, and what the device saw at the peak.

Counted from the tensors themselves (exact, on any device):

- ``param_bytes``: the model's parameters; ``grad_bytes``: their ``.grad`` tensors.
- ``optimizer_state_bytes``: every tensor in ``optimizer.state`` (Adam's m and v, SGDM's
  m, and torch.optim's per-parameter ``step`` counters, which are 0-d tensors).
- ``state_buffers_per_param``: elements of the state tensors shaped like their parameter,
  divided by the elements of the optimizer's parameters: 2.0 for Adam, 1.0 for SGDM once
  every parameter has its state.

Seen by the device, through a meter:

- ``CudaMeter``: the caching allocator's statistics. ``in_use`` is
  ``memory_allocated`` (the blocks that hold live tensors: each request rounded up to
  512 bytes, and a large request, of more than 1 MiB, handed a whole cached block when
  splitting it would leave 1 MiB or less, so up to 1 MiB more);
  ``peak`` is ``max_memory_allocated`` since ``reset_peak_memory_stats``. Neither counts the
  allocator's cache (``memory_reserved``) or the CUDA context. Beside them, the bytes the
  tensors asked for before rounding (``memory_stats``' ``requested_bytes.all.current`` and
  ``.peak``) and the peak of what the allocator held from the driver
  (``max_memory_reserved``: what decides an out-of-memory error, and what nvidia-smi shows
  less the context).
- ``ProcessMeter`` (CPU): the process's resident set. ``in_use`` is RSS; ``peak`` is the
  kernel's high-water mark VmHWM (Linux), reset by writing 5 to /proc/self/clear_refs.
  Where that is not possible, a thread samples RSS every ``SAMPLE_INTERVAL_S`` instead,
  which can miss a peak shorter than that. RSS includes the interpreter and libraries, so
  on the CPU only differences of these numbers describe the case.

Both meters take the device (or allocator) module as a parameter, and ``CudaMeter`` the
function that drops library workspaces, so the logic that uses them is testable on the CPU
with fakes.
"""

from __future__ import annotations

import ctypes
import gc
import re
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

import psutil
import torch
from torch import Tensor, nn
from torch.optim import Optimizer

SAMPLE_INTERVAL_S = 0.005
#: The CUDA caching allocator rounds every request up to a multiple of this (c10
#: CUDACachingAllocator ``kMinBlockSize``), unless ``roundup_power2_divisions`` is configured.
CUDA_BLOCK_BYTES = 512
#: Requests above this come from the allocator's large pool, where a cached block is split
#: only if more than this would remain (``kSmallSize``, ``should_split``): a large request
#: can be handed a block up to this much larger than itself.
CUDA_SMALL_SIZE = 2**20
ALLOC_CONF_VARIABLES = ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF")
PROC_STATUS = Path("/proc/self/status")
PROC_CLEAR_REFS = Path("/proc/self/clear_refs")


def tensor_bytes(tensors: Iterable[Tensor]) -> int:
    """Bytes this process holds for ``tensors``: of a sharded ``DTensor`` (FSDP), its local shard."""
    local = (t.to_local() if _is_dtensor(t) else t for t in tensors)
    return sum(t.numel() * t.element_size() for t in local)


def _is_dtensor(tensor: Tensor) -> bool:
    # Looked up only when torch.distributed is in use: builds without it have no DTensor.
    if not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return False
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


def param_bytes(model: nn.Module) -> int:
    return tensor_bytes(model.parameters())


def grad_bytes(model: nn.Module) -> int:
    return tensor_bytes(p.grad for p in model.parameters() if p.grad is not None)


def _state_tensors(optimizer: Optimizer) -> Iterable[tuple[Tensor, Tensor]]:
    """(parameter, state tensor) for every tensor the optimizer keeps."""
    for param, state in optimizer.state.items():
        for value in state.values():
            if isinstance(value, Tensor):
                yield param, value


def optimizer_state_bytes(optimizer: Optimizer) -> int:
    return tensor_bytes(value for _, value in _state_tensors(optimizer))


def state_allocation_bounds(optimizer: Optimizer, device: torch.device, alloc_conf: str = "") -> tuple[int, int]:
    """The least and the most the CUDA caching allocator can hold for the optimizer's state
    tensors on ``device``, in bytes. The least is their exact size, which is also what the
    allocator's requested-bytes count sees them take. The most follows the allocator's block
    rules (c10/cuda/CUDACachingAllocator.cpp): each request rounded up to 512 bytes (or to
    the next power of two where ``alloc_conf``, the value of ``PYTORCH_CUDA_ALLOC_CONF``,
    sets ``roundup_power2_divisions``, whose coarsest setting rounds that far), and a
    request of more than 1 MiB may be handed a cached block up to 1 MiB larger, which is not
    split when less than that would remain. State kept on the host (``torch.optim``'s
    ``step`` counters when not capturable) is not in either."""
    sizes = [t.numel() * t.element_size() for _, t in _state_tensors(optimizer) if t.device == device]
    power_of_two = "roundup_power2_divisions" in alloc_conf
    return sum(sizes), sum(_largest_block(size, power_of_two) for size in sizes)


def _largest_block(size: int, power_of_two: bool) -> int:
    if size == 0:
        return 0
    rounded = -(-size // CUDA_BLOCK_BYTES) * CUDA_BLOCK_BYTES
    if power_of_two:
        rounded = max(rounded, 1 << (size - 1).bit_length())
    return rounded + CUDA_SMALL_SIZE if rounded > CUDA_SMALL_SIZE else rounded


def state_buffers_per_param(optimizer: Optimizer) -> float:
    """Parameter-shaped state elements per parameter element (see the module docstring).

    torch.optim's ``step`` counter is a 0-d tensor, shaped like a 0-d parameter, but it is a
    counter and not a buffer of the algorithm, so it is never counted.
    """
    params = [p for group in optimizer.param_groups for p in group["params"]]
    shaped = sum(
        value.numel()
        for param, state in optimizer.state.items()
        for key, value in state.items()
        if key != "step" and isinstance(value, Tensor) and value.shape == param.shape
    )
    return shaped / sum(p.numel() for p in params)


class Meter(Protocol):
    source: str  # what ``peak`` reads, for the record's peak_memory_source
    counts_allocations: bool  # whether ``in_use`` differences are exact tensor allocations

    def in_use(self) -> int: ...

    def reset_peak(self) -> None: ...

    def peak(self) -> int: ...

    def requested_in_use(self) -> int | None:
        """Bytes the live tensors asked for, before the allocator rounded them; None where
        the meter cannot tell."""

    def requested_peak(self) -> int | None:
        """The peak of ``requested_in_use`` since ``reset_peak``; None where unknown."""

    def reserved_peak(self) -> int | None:
        """The most memory held from the device since ``reset_peak``; None where unknown."""

    def release(self) -> None: ...


class CudaMeter:
    """Allocator statistics of one CUDA device."""

    source = "cuda_max_allocated"
    counts_allocations = True

    def __init__(
        self, device: torch.device, cuda: object = torch.cuda, clear_workspaces: Callable[[], None] | None = None
    ) -> None:
        self.device = device
        self.cuda = cuda
        self.clear_workspaces = clear_workspaces or clear_cublas_workspaces

    def in_use(self) -> int:
        return self.cuda.memory_allocated(self.device)

    def reset_peak(self) -> None:
        self.cuda.reset_peak_memory_stats(self.device)

    def peak(self) -> int:
        return self.cuda.max_memory_allocated(self.device)

    def requested_in_use(self) -> int | None:
        return self.cuda.memory_stats(self.device).get("requested_bytes.all.current")

    def requested_peak(self) -> int | None:
        return self.cuda.memory_stats(self.device).get("requested_bytes.all.peak")

    def reserved_peak(self) -> int | None:
        return self.cuda.max_memory_reserved(self.device)

    def release(self) -> None:
        """Return freed blocks to the driver, once nothing refers to the case's tensors, and
        drop cuBLAS's workspaces: they are allocated through this allocator at a handle's
        first use and kept for the process, so without this the first case pays for them in
        its static memory and every later case sees them as someone else's."""
        gc.collect()
        self.clear_workspaces()
        self.cuda.empty_cache()


def clear_cublas_workspaces() -> None:
    """Free the workspaces cuBLAS keeps per (handle, stream) (``torch._C._cuda_clearCublasWorkspaces``,
    as PyTorch's own CUDA tests use between cases); the next cuBLAS call allocates them again.
    Does nothing where CUDA was never initialised or this PyTorch lacks the call."""
    clear = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
    if clear is not None and torch.cuda.is_initialized():
        clear()


def _status_bytes(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", PROC_STATUS.read_text(), re.MULTILINE)
    if match is None:
        raise OSError(f"{PROC_STATUS} has no {field}")
    return int(match.group(1)) * 1024


def _reset_high_water_mark() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        PROC_CLEAR_REFS.write_text("5")
        _status_bytes("VmHWM")
    except OSError:
        return False
    return True


class _RssSampler(threading.Thread):
    def __init__(self, process: psutil.Process) -> None:
        super().__init__(daemon=True)
        self.process = process
        self.highest = process.memory_info().rss
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(SAMPLE_INTERVAL_S):
            self.highest = max(self.highest, self.process.memory_info().rss)

    def stop(self) -> int:
        self.stopped.set()
        self.join()
        return max(self.highest, self.process.memory_info().rss)


class ProcessMeter:
    """Resident memory of this process."""

    counts_allocations = False  # a step's RSS change is the C heap's business, not the tensors'

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.sampler: _RssSampler | None = None
        self.source = "process_rss"

    def in_use(self) -> int:
        return self.process.memory_info().rss

    def reset_peak(self) -> None:
        if _reset_high_water_mark():
            self.source = "process_rss"
        else:
            self.source = "process_rss_sampled"
            self.sampler = _RssSampler(self.process)
            self.sampler.start()

    def peak(self) -> int:
        if self.sampler is None:
            return _status_bytes("VmHWM")
        highest = self.sampler.stop()
        self.sampler = None
        return highest

    # The C heap keeps no account of requested bytes, and RSS is all the process holds.
    def requested_in_use(self) -> None:
        return None

    def requested_peak(self) -> None:
        return None

    def reserved_peak(self) -> None:
        return None

    def release(self) -> None:
        """Free the case's memory and hand the C heap's free pages back to the kernel, so
        the next case's RSS does not start with this one's leftovers."""
        if self.sampler is not None:
            self.sampler.stop()
            self.sampler = None
        gc.collect()
        _malloc_trim()


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: the allocator keeps its pages, RSS readings just start higher


def meter_for(device: torch.device) -> Meter:
    return CudaMeter(device) if device.type == "cuda" else ProcessMeter()
