"""What a failed case's exception means: out of memory, or a CUDA error that has poisoned
the process.

Out of memory is not only ``torch.cuda.OutOfMemoryError`` (the caching allocator's). cuBLAS
and cuDNN allocate their own workspaces and report a failure as a RuntimeError carrying
their status (``CUBLAS_STATUS_ALLOC_FAILED``, ``CUDNN_STATUS_ALLOC_FAILED``), and a kernel
launch that runs out of memory surfaces as ``CUDA error: out of memory``. All of them are
the case not fitting, so all are recorded as ``oom``.

Some CUDA errors are sticky: after an illegal memory access, a device-side assertion, a
misaligned address, an illegal instruction or an unspecified launch failure, the CUDA
context is corrupt and every later CUDA call in the process fails with the same error
(CUDA C++ Programming Guide, "Error Checking"; CUDA Runtime API, ``cudaError``). Only a new
process gets a working device, which is what ``bench.kinds.step.isolation`` provides.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import torch

from bench.measure.stopping import Terminated

#: What ends the run rather than the case it arrives in: Ctrl-C and SIGTERM. Any other
#: BaseException a case raises (``SystemExit`` from a model that calls ``sys.exit``) is that
#: case's failure, recorded ``error``, and the run goes on.
STOPS = (KeyboardInterrupt, Terminated)

#: Text of the out-of-memory errors raised other than as torch.cuda.OutOfMemoryError.
OUT_OF_MEMORY_MARKERS = (
    "CUBLAS_STATUS_ALLOC_FAILED",
    "CUDNN_STATUS_ALLOC_FAILED",
    "CUDA error: out of memory",
    "CUDA out of memory",
)

#: Text of the sticky CUDA errors (cudaErrorIllegalAddress, cudaErrorAssert,
#: cudaErrorMisalignedAddress, cudaErrorIllegalInstruction, cudaErrorLaunchFailure,
#: cudaErrorHardwareStackError, cudaErrorECCUncorrectable), as the CUDA runtime words them.
FATAL_MARKERS = (
    "an illegal memory access was encountered",
    "device-side assert triggered",
    "misaligned address",
    "an illegal instruction was encountered",
    "unspecified launch failure",
    "hardware stack error",
    "uncorrectable ECC error",
)


def is_out_of_memory(fault: BaseException) -> bool:
    """Whether ``fault`` says the device ran out of memory, whoever allocated."""
    if isinstance(fault, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(fault, RuntimeError) and any(marker in str(fault) for marker in OUT_OF_MEMORY_MARKERS)


def poisons_process(message: str | None) -> bool:
    """Whether an error message is a sticky CUDA error, after which no CUDA work in this
    process can succeed."""
    return message is not None and any(marker in message for marker in FATAL_MARKERS)


class Diverged(Exception):
    """The loss became non-finite."""


def fault_outcome(fault: BaseException) -> tuple[str, str]:
    """(status, error) of a case that raised ``fault``: ``diverged`` for a non-finite loss,
    ``oom`` for running out of device memory whoever allocated (this module: cuBLAS and
    cuDNN allocation failures too), else ``error`` with the exception's type and message."""
    if isinstance(fault, Diverged):
        return "diverged", str(fault)
    if is_out_of_memory(fault):
        return "oom", message(fault)
    return "error", f"{type(fault).__name__}: {message(fault)}"


def message(fault: BaseException) -> str:
    """An exception's message for a record: its text, else its type's name."""
    return str(fault).strip() or type(fault).__name__


@dataclasses.dataclass
class Outcome:
    """How a case ended: ``status`` (``ok``, or ``fault_outcome``'s) and ``error``."""

    status: str = "ok"
    error: str | None = None


@contextlib.contextmanager
def case_outcome(device: torch.device) -> Iterator[Outcome]:
    """Run one case's work in the block, on ``device`` (made the current CUDA device), and
    record how it ended in the yielded Outcome: any failure but a stop signal (``STOPS``,
    re-raised), ``SystemExit`` included, is the case's status and error, never the run's end.
    The caching allocator's free blocks go back to the device afterwards, whatever happened."""
    outcome = Outcome()
    scope = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
    try:
        with scope:
            yield outcome
    except STOPS:
        raise
    except BaseException as fault:  # noqa: BLE001  (any failure of one case is that case's result, sys.exit too)
        outcome.status, outcome.error = fault_outcome(fault)
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()
