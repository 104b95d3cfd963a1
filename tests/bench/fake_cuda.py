"""A fake of PyTorch's CUDA caching allocator that keeps its block rules, for CPU tests.

It follows ``c10/cuda/CUDACachingAllocator.cpp`` (PyTorch 2.x, default settings: no
``max_split_size_mb``, no ``roundup_power2_divisions``, no expandable segments):

- a request is rounded up to a multiple of 512 bytes (``kMinBlockSize``; at least 512);
- requests of at most 1 MiB (``kSmallSize``) come from the small pool, larger ones from the
  large pool;
- a request takes the smallest cached free block of its pool that is large enough (best
  fit, then lowest address); with none, a new segment is reserved from the driver: 2 MiB
  (``kSmallBuffer``) for the small pool, 20 MiB (``kLargeBuffer``) for requests under
  10 MiB (``kMinLargeAlloc``), else the request rounded up to 2 MiB (``kRoundLarge``);
- the block is split only if what would remain is at least 512 bytes (small pool) or more
  than 1 MiB (large pool); otherwise the request gets the whole block, so a large tensor can
  hold up to 1 MiB more than it asked for (``should_split``);
- a freed block merges with free neighbours of its segment; ``empty_cache`` returns the
  segments that are entirely free.

Statistics as ``torch.cuda`` reports them: ``memory_allocated`` counts blocks (after the
split), ``requested_bytes`` what the tensors asked for, ``memory_reserved`` the segments;
each with a peak that ``reset_peak_memory_stats`` sets to the current value. A request that
does not fit ``capacity`` even after the cache is emptied raises
``torch.cuda.OutOfMemoryError`` as the real allocator does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

MIN_BLOCK = 512  # kMinBlockSize
SMALL_SIZE = 2**20  # kSmallSize
SMALL_BUFFER = 2 * 2**20  # kSmallBuffer
MIN_LARGE_ALLOC = 10 * 2**20  # kMinLargeAlloc
ROUND_LARGE = 2 * 2**20  # kRoundLarge
LARGE_BUFFER = 20 * 2**20  # kLargeBuffer


def round_size(size: int) -> int:
    return MIN_BLOCK if size < MIN_BLOCK else -(-size // MIN_BLOCK) * MIN_BLOCK


def segment_size(size: int) -> int:
    if size <= SMALL_SIZE:
        return SMALL_BUFFER
    if size < MIN_LARGE_ALLOC:
        return LARGE_BUFFER
    return -(-size // ROUND_LARGE) * ROUND_LARGE


@dataclass
class Block:
    segment: Segment
    offset: int
    size: int
    requested: int = 0
    free: bool = True


@dataclass
class Segment:
    address: int
    size: int
    small: bool
    blocks: list[Block] = field(default_factory=list)


class CachingAllocatorFake:
    """The caching allocator's block rules and statistics; also the slice of ``torch.cuda``
    that ``bench.measure.memory.CudaMeter`` reads."""

    def __init__(self, capacity: int = 80 * 2**30) -> None:
        self.capacity = capacity
        self.segments: list[Segment] = []
        self.next_address = 0
        self.allocated = self.requested = 0
        self.peak = self.requested_peak = self.reserved_peak = 0
        self.emptied = 0  # empty_cache calls

    @property
    def reserved(self) -> int:
        return sum(segment.size for segment in self.segments)

    # --- allocation ---------------------------------------------------------------------

    def malloc(self, size: int) -> Block:
        rounded = round_size(size)
        small = rounded <= SMALL_SIZE
        block = self._best_fit(rounded, small) or self._new_segment(rounded, small)
        if self._should_split(block, rounded, small):
            rest = Block(block.segment, block.offset + rounded, block.size - rounded)
            block.size = rounded
            blocks = block.segment.blocks
            blocks.insert(blocks.index(block) + 1, rest)
        block.free, block.requested = False, size
        self.allocated += block.size
        self.requested += size
        self.peak = max(self.peak, self.allocated)
        self.requested_peak = max(self.requested_peak, self.requested)
        return block

    def free(self, block: Block) -> None:
        assert not block.free, "double free"
        self.allocated -= block.size
        self.requested -= block.requested
        block.free, block.requested = True, 0
        blocks = block.segment.blocks
        index = blocks.index(block)
        if index + 1 < len(blocks) and blocks[index + 1].free:
            block.size += blocks.pop(index + 1).size
        if index > 0 and blocks[index - 1].free:
            blocks[index - 1].size += blocks.pop(index).size

    def _best_fit(self, rounded: int, small: bool) -> Block | None:
        fits = [b for s in self.segments if s.small == small for b in s.blocks if b.free and b.size >= rounded]
        return min(fits, key=lambda b: (b.size, b.segment.address + b.offset), default=None)

    @staticmethod
    def _should_split(block: Block, rounded: int, small: bool) -> bool:
        remaining = block.size - rounded
        return remaining >= MIN_BLOCK if small else remaining > SMALL_SIZE

    def _new_segment(self, rounded: int, small: bool) -> Block:
        size = segment_size(rounded)
        if self.reserved + size > self.capacity:
            self.empty_cache()
            if self.reserved + size > self.capacity:
                raise torch.cuda.OutOfMemoryError(
                    f"CUDA out of memory. Tried to allocate {rounded} bytes (fake allocator, capacity {self.capacity})"
                )
        segment = Segment(self.next_address, size, small)
        self.next_address += size
        segment.blocks.append(Block(segment, 0, size))
        self.segments.append(segment)
        self.reserved_peak = max(self.reserved_peak, self.reserved)
        return segment.blocks[0]

    # --- the slice of torch.cuda that CudaMeter reads ------------------------------------

    def memory_allocated(self, device=None) -> int:
        return self.allocated

    def memory_stats(self, device=None) -> dict:
        return {"requested_bytes.all.current": self.requested, "requested_bytes.all.peak": self.requested_peak}

    def reset_peak_memory_stats(self, device=None) -> None:
        self.peak, self.requested_peak, self.reserved_peak = self.allocated, self.requested, self.reserved

    def max_memory_allocated(self, device=None) -> int:
        return self.peak

    def max_memory_reserved(self, device=None) -> int:
        return self.reserved_peak

    def empty_cache(self) -> None:
        self.emptied += 1
        self.segments = [s for s in self.segments if not all(b.free for b in s.blocks)]
