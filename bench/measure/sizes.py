"""Memory sizes as people write them (``80GiB``, ``16GB``), and the memory of known GPUs.

Nothing here imports torch: the command line checks sizes before loading it.
"""

from __future__ import annotations

import re

#: Memory of common NVIDIA GPUs, bytes: ``memory.total`` as ``nvidia-smi`` reports it, in MiB.
#: What tensors can use is less: the CUDA context and the driver's reserve take some 0.3 to
#: 1 GiB, and the caching allocator's fragmentation some more.
GPU_MEMORY_BYTES = {
    "T4": 15_360 * 2**20,
    "A10G": 23_028 * 2**20,
    "L4": 23_034 * 2**20,
    "RTX4090": 24_564 * 2**20,
    "A100-40GB": 40_960 * 2**20,
    "A100-80GB": 81_920 * 2**20,
    "H100-80GB": 81_559 * 2**20,
    "H200": 143_771 * 2**20,
}
_SIZE = re.compile(r"(?P<number>\d+(\.\d*)?([eE]\d+)?)\s*(?P<unit>[kKmMgGtT]i?)?[bB]?")
_UNITS = {
    "B": 1,
    "TB": 10**12,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}


def parse_bytes(text: str) -> int:
    """``80GiB``, ``512MiB``, ``16GB``, ``1e9``: bytes. Binary units (KiB, MiB, GiB, TiB) are
    powers of 1024, decimal ones (KB, MB, GB, TB) of 1000; a bare number is bytes. Raises
    ValueError naming the text unless it is a size of at least one byte."""
    match = _SIZE.fullmatch(text.strip())
    value = float(match["number"]) * _UNITS[(match["unit"] or "").upper() + "B"] if match else 0.0
    if not 1 <= value < float("inf"):
        raise ValueError(f"{text!r} is not a memory size; use e.g. 80GiB, 512MiB, 16GB or a number of bytes")
    return int(value)
