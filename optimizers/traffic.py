"""Bytes an optimizer step moves through memory, per parameter.

An optimizer step does a handful of flops per parameter and streams every parameter,
gradient and state tensor through memory, so its physical limit is bytes moved / memory
bandwidth (the memory-bound side of the roofline model: Williams, Waterman and Patterson,
"Roofline: an insightful visual performance model for multicore architectures", CACM 52(4),
2009). Two byte counts matter, both in units of the element size ``s`` (4 bytes in fp32, 2 in
bf16/fp16; parameters, gradients and state share the parameter's dtype in every registry
optimizer):

**Compulsory bytes** (``compulsory_bytes_per_param``): what the algorithm must read and write
once, with every tensor touched by one pass and nothing kept in cache between steps.

- Adam reads p, g, m, v and writes p, m, v: 7 s, **28 bytes** in fp32.
- SGDM reads p, g, m and writes p, m: 5 s, **20 bytes** in fp32.

This is the roofline's byte count: bytes / bandwidth is the fastest any implementation can
step, and compulsory bytes / measured step time is the bandwidth the step *achieved*.

**Implementation traffic** (``TRAFFIC_ELEMENTS``): what an implementation's kernels read and
write when each kernel reads its inputs from memory and writes its output back (no reuse
between kernels, as on a GPU or for tensors larger than the cache; STREAM's convention, so
no write-allocate traffic). Counted kernel by kernel, in elements per parameter:

textbook Adam, ``adam`` and ``adam-foreach`` (the same eight kernels, one parameter at a time
or all at once)::

    m *= b1                          read m, write m            2
    m += (1 - b1) g                  read m, g, write m         3
    v *= b2                          read v, write v            2
    v += (1 - b2) g g                read v, g, write v         3
    d = v / (1 - b2^t)               read v, write d            2
    d = sqrt(d)                      read d, write d            2
    d += eps                         read d, write d            2
    p -= lr / (1 - b1^t) m / d       read p, m, d, write p      4     = 20 (80 bytes in fp32)

textbook SGDM, ``sgdm`` and ``sgdm-foreach``::

    m *= beta                        read m, write m            2
    m += g                           read m, g, write m         3
    p -= lr m                        read p, m, write p         3     = 8 (32 bytes in fp32)

``torch.optim.Adam`` for-loop and foreach (``torch/optim/adam.py``, ``_single_tensor_adam``
and ``_multi_tensor_adam`` without amsgrad, weight decay or capturable)::

    m = lerp(m, g, 1 - b1)           read m, g, write m         3
    v *= b2                          read v, write v            2
    v += (1 - b2) g g                read v, g, write v         3
    d = sqrt(v)                      read v, write d            2
    d /= sqrt(1 - b2^t)              read d, write d            2
    d += eps                         read d, write d            2
    p -= step_size m / d             read p, m, d, write p      4     = 18 (72 bytes in fp32)

``torch.optim.SGD`` with momentum, for-loop and foreach: the textbook SGDM's three kernels
(8, 32 bytes). The fused implementations (``torch-adam-fused``, ``torch-sgdm-fused``) and
the compiled textbook ones (``adam-compiled``, ``sgdm-compiled``, whose kernels Inductor
generates with every elementwise operation of a parameter fused into one loop) read and
write each tensor once: their traffic is the compulsory 7 or 5 elements.

The measured counterpart is ``bench.kinds.optimizer_step.runner.count_traffic``, which counts the bytes
of every operator an eager optimizer step dispatches; a test checks it against this table.
"""

from __future__ import annotations

import torch

#: Tensors read and written once per parameter by each algorithm: (reads, writes).
COMPULSORY_ACCESSES = {"adam": (4, 3), "sgdm": (3, 2)}

#: Implementation traffic in elements per parameter, by (source, algorithm, implementation);
#: the derivation is in this module's docstring.
TRAFFIC_ELEMENTS = {
    ("textbook", "adam", "for-loop"): 20,
    ("textbook", "adam", "foreach"): 20,
    ("textbook", "adam", "compiled"): 7,
    ("textbook", "sgdm", "for-loop"): 8,
    ("textbook", "sgdm", "foreach"): 8,
    ("textbook", "sgdm", "compiled"): 5,
    ("torch", "adam", "for-loop"): 18,
    ("torch", "adam", "foreach"): 18,
    ("torch", "adam", "fused"): 7,
    ("torch", "sgdm", "for-loop"): 8,
    ("torch", "sgdm", "foreach"): 8,
    ("torch", "sgdm", "fused"): 5,
}


def compulsory_bytes_per_param(algorithm: str, dtype: torch.dtype = torch.float32) -> int:
    """Bytes per parameter the algorithm must move in one step: (reads + writes) x element
    size, e.g. 28 for fp32 Adam and 20 for fp32 SGDM. Raises KeyError for an unknown
    algorithm (``adam`` or ``sgdm``)."""
    reads, writes = COMPULSORY_ACCESSES[algorithm]
    return (reads + writes) * torch.empty((), dtype=dtype).element_size()


def traffic_bytes_per_param(source: str, algorithm: str, implementation: str, dtype: torch.dtype) -> int | None:
    """Bytes per parameter the implementation's kernels move (this module's table times the
    element size), or None for an implementation the table does not derive."""
    elements = TRAFFIC_ELEMENTS.get((source, algorithm, implementation))
    return None if elements is None else elements * torch.empty((), dtype=dtype).element_size()
