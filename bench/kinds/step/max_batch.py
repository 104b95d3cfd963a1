"""The largest batch a case trains at without running out of memory: measured, and predicted.

Both use the same search (``largest_batch``): double the batch from 1 until a step does
not fit, then bisect between the last batch that fitted and the first that did not, down
to a single batch size. It assumes that a batch fits whenever a larger one does.

*Measured* (``search_case``), one fresh model and optimizer per batch tried, two training
steps each (the first creates the gradients and optimizer state):

- on CUDA a batch fits when neither step raises ``torch.cuda.OutOfMemoryError``. With a
  cap the allocator is limited to it (``torch.cuda.set_per_process_memory_fraction``);
  without one the device's whole memory is available.
- on the CPU a batch fits when the tensors alive during both steps, as the tensor-level
  tracker counts them (``bench.measure.memory_breakdown``), never exceed the cap: the tracker stops
  the step the moment they do, as an allocator with only that much memory would. The RAM
  of the machine is never the limit; the default cap is ``DEFAULT_CPU_CAP_BYTES``.

*Predicted*: the same search on the peaks predicted on fake tensors
(``bench.kinds.step.memory_pass.predict``): a batch fits when its predicted peak is within the memory.
"""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Callable

import torch

from bench.kinds.step import memory_pass
from bench.kinds.step.suite import Case
from bench.measure import memory_breakdown
from bench.measure.sizes import GPU_MEMORY_BYTES, parse_bytes  # noqa: F401  (re-exported)

#: The memory a CPU search fits in when no cap is given (1 GiB).
DEFAULT_CPU_CAP_BYTES = 2**30
#: Batches the search never goes past: a case that fits 2**20 samples is not memory-bound.
BATCH_LIMIT = 2**20


def largest_batch(
    fits: Callable[[int], bool], limit: int = BATCH_LIMIT, guess: int = 1
) -> tuple[int | None, list[list]]:
    """The largest batch in [1, ``limit``] for which ``fits(batch)`` holds, and every
    ``[batch, fitted]`` tried, in order; None when batch 1 does not fit. From ``guess`` (1:
    plain doubling) the step doubles away from it until the answer is bracketed, then the
    bracket is bisected down to one batch size. ``fits`` must be monotone (true up to some
    batch, false beyond)."""
    attempts: list[list] = []

    def attempt(batch: int) -> bool:
        fitted = bool(fits(batch))
        attempts.append([batch, fitted])
        return fitted

    guess, step = min(max(guess, 1), limit), 1
    if attempt(guess):
        good = guess
        while True:
            if good == limit:
                return good, attempts
            bad = min(good + step, limit)
            if not attempt(bad):
                break
            good, step = bad, 2 * step
    else:
        bad = guess
        while True:
            if bad == 1:
                return None, attempts
            good = max(bad - step, 1)
            if attempt(good):
                break
            bad, step = good, 2 * step
    while bad - good > 1:
        middle = (good + bad) // 2
        if attempt(middle):
            good = middle
        else:
            bad = middle
    return good, attempts


def memory_for(device: torch.device, cap_bytes: int | None, cuda: object = torch.cuda) -> int:
    """The memory a search on ``device`` fits in: ``cap_bytes``, else the CUDA device's total
    memory, else ``DEFAULT_CPU_CAP_BYTES``."""
    if cap_bytes is not None:
        return cap_bytes
    if device.type == "cuda":
        return cuda.get_device_properties(device).total_memory
    return DEFAULT_CPU_CAP_BYTES


def _with_batch(case: Case, batch: int) -> Case:
    return dataclasses.replace(case, batch_size=batch)


def measured_fits(
    case: Case, device: torch.device, build: memory_pass.Build, memory: int, cuda: object = torch.cuda
) -> Callable[[int], bool]:
    """``fits(batch)`` for the measured search on ``device`` (see the module docstring)."""

    def fits(batch: int) -> bool:
        try:
            if device.type == "cuda":
                model, optimizer, trainer = build(_with_batch(case, batch), {})
                trainer.step()
                trainer.step()
            else:
                memory_pass.tracked_step(_with_batch(case, batch), device, build, cap_bytes=memory)
        except (torch.cuda.OutOfMemoryError, memory_breakdown.MemoryCapExceeded):
            return False
        finally:
            gc.collect()
            if device.type == "cuda":
                cuda.empty_cache()
        return True

    return fits


def predicted_fits(case: Case, device: torch.device, memory: int) -> Callable[[int], bool]:
    """``fits(batch)`` on the peak predicted on fake tensors."""
    return lambda batch: predicted_peak(case, device, batch) <= memory


def predicted_peak(case: Case, device: torch.device, batch: int) -> int:
    return memory_pass.predict(_with_batch(case, batch), device).breakdown.peak


def predicted_largest_batch(
    case: Case, device: torch.device, memory: int, progress: Callable[[int, bool], None] | None = None
) -> int | None:
    """The largest batch whose predicted peak fits ``memory``. The peak grows by the same
    bytes per sample wherever it falls, so the line through the peaks at batch 1 and 2
    lands on or next to the answer; the search starts there and needs a few predictions
    where plain doubling would need some 2 log2(batch). ``progress(batch, fits)`` hears of
    each batch tried (each prediction takes seconds on a large model)."""
    first, second = predicted_peak(case, device, 1), predicted_peak(case, device, 2)
    per_sample = second - first
    guess = 2 + (memory - second) // per_sample if per_sample > 0 else 1
    fits = predicted_fits(case, device, memory)

    def tried(batch: int) -> bool:
        fitted = fits(batch)
        if progress is not None:
            progress(batch, fitted)
        return fitted

    return largest_batch(tried, guess=max(1, min(guess, BATCH_LIMIT)))[0]


def search_case(
    case: Case, device: torch.device, build: memory_pass.Build, cap_bytes: int | None, cuda: object = torch.cuda
) -> dict:
    """Record fields of the measured and predicted searches for ``case`` on ``device``. A
    compiled case or optimizer gets no prediction, and on the CPU no measured search either
    (both need the tensor tracker, which compiled steps do not run under); why goes in
    ``max_batch_error``."""
    memory = memory_for(device, cap_bytes, cuda)
    out = {
        "max_batch_memory_bytes": memory,
        "max_batch_source": "cuda_allocator" if device.type == "cuda" else "tracker_cap",
    }
    eager_only = memory_pass.eager_only(case)
    if eager_only is not None and device.type != "cuda":
        out["max_batch_error"] = eager_only
        return out
    limited = device.type == "cuda" and cap_bytes is not None
    if limited:
        total = cuda.get_device_properties(device).total_memory
        cuda.set_per_process_memory_fraction(min(1.0, cap_bytes / total), device)
    try:
        out["max_batch_size"], out["max_batch_attempts"] = largest_batch(
            measured_fits(case, device, build, memory, cuda)
        )
    finally:
        if limited:
            cuda.set_per_process_memory_fraction(1.0, device)
    if eager_only is None:
        out["max_batch_predicted"] = predicted_largest_batch(case, device, memory)
    else:
        out["max_batch_error"] = f"no prediction: {eager_only}"
    return out
