"""Exact memory breakdown of one training step, tensor by tensor.

A tensor-level tracker watches one steady-state training step (forward, loss, backward,
optimizer step, gradients zeroed) and, at the moment the bytes held by live tensors peak,
sorts every live tensor storage by what it is:

- ``parameters``, ``buffers``: the model's (BatchNorm's running statistics are buffers);
- ``gradients``: the parameters' ``.grad`` tensors;
- ``optimizer_state``: every tensor in ``optimizer.state`` (Adam's m and v, SGDM's m,
  torch.optim's 0-d ``step`` tensors);
- ``inputs``: tensors that existed before the step and that it reads, other than the ones
  above: the batch's images and labels (and a GradScaler's scale);
- ``activations``: tensors autograd saved for the backward pass (its pack hook,
  ``torch.autograd.graph.saved_tensors_hooks``) that are still alive;
- ``temporaries``: everything else alive then: gradients of activations, the logits and
  the loss, outputs nobody saved, the optimizer step's intermediate tensors.

A storage belongs to the first category that claims it, in that order (a weight saved
by its convolution counts once, as a parameter). The categories add up to ``peak``
exactly: they partition the storages that were alive at the peak.

The tracker is torch's ``torch.distributed._tools.mem_tracker.MemTracker`` (a
``TorchDispatchMode``; not a public API, so ``tests/bench/test_memory_breakdown.py`` pins
the behaviour relied on here). It sees every tensor an operator returns, by storage, so
views are not counted twice; it does not see memory an operator allocates internally
(cuDNN and cuBLAS workspaces) or tensors made before the step that the step never reads.
On CUDA it rounds every storage up to the caching allocator's 512-byte blocks, as the
allocator does; on the CPU it counts bytes as they are. Where torch lacks the tracker,
``track_step`` raises ``TrackerUnavailable``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.utils._pytree import tree_leaves

try:
    from torch.distributed._tools.common_utils import get_untyped_storages
    from torch.distributed._tools.mem_tracker import MemTracker, _MemRefType
except ImportError:  # a torch built without torch.distributed, or one from before the tracker
    MemTracker = None

#: The categories, in the order that decides a storage claimed twice.
CATEGORIES = ("parameters", "buffers", "gradients", "optimizer_state", "inputs", "activations", "temporaries")
#: The phases of a step in which the peak can fall.
PHASES = ("forward", "backward", "optimizer")
#: The CUDA caching allocator's block size: every allocation is rounded up to a multiple.
CUDA_BLOCK_BYTES = 512


class TrackerUnavailable(RuntimeError):
    """This torch has no ``MemTracker`` (it appeared in torch 2.5)."""


class MemoryCapExceeded(RuntimeError):
    """The tensors alive during a tracked step needed more than the cap."""


@dataclass(frozen=True)
class Breakdown:
    """Bytes per category at the step's peak (see the module docstring). ``peak`` is their
    sum; ``phase`` is where in the step the peak fell: forward, backward or optimizer."""

    parameters: int
    buffers: int
    gradients: int
    optimizer_state: int
    inputs: int
    activations: int
    temporaries: int
    peak: int
    phase: str

    @property
    def static(self) -> int:
        """What lives across steps or comes with the batch: everything but activations and
        temporaries, bytes."""
        return self.peak - self.activations - self.temporaries

    def fields(self, prefix: str) -> dict:
        """The breakdown as Record fields: ``{prefix}_{category}_bytes``, ``{prefix}_peak_bytes``,
        ``{prefix}_peak_phase``."""
        values = asdict(self)
        out = {f"{prefix}_{name}_bytes": values[name] for name in (*CATEGORIES, "peak")}
        out[f"{prefix}_peak_phase"] = self.phase
        return out


def storage_bytes(nbytes: int, device_type: str) -> int:
    """Bytes an allocation of ``nbytes`` holds on a device of ``device_type``: rounded up to
    ``CUDA_BLOCK_BYTES`` on CUDA (the caching allocator's ``round_size``), exact elsewhere."""
    if device_type == "cuda":
        return math.ceil(nbytes / CUDA_BLOCK_BYTES) * CUDA_BLOCK_BYTES
    return nbytes


def available() -> bool:
    """Whether this torch has the tracker."""
    return MemTracker is not None


def _storages(tensors: Iterable[Tensor]) -> list:
    return [st for t in tensors for st in get_untyped_storages(t)]


if MemTracker is not None:

    class _PeakTracker(MemTracker):
        """MemTracker that also remembers which storages were alive at the peak on one
        device, which of them autograd saved, and which the step read from outside."""

        def __init__(self, device: torch.device, cap_bytes: int | None) -> None:
            super().__init__()
            self.device = device
            self.cap_bytes = cap_bytes
            self.at_peak: list = []  # the tracker's records of the storages alive at the peak
            self.peak_phase = "forward"
            # Records by id(); held, so that an id cannot be reused by a later storage's record.
            self.saved: dict[int, object] = {}  # storages autograd saved for backward
            self.read_from_outside: dict[int, object] = {}  # storages the step read but did not make

        def _record(self, storage: object) -> object | None:
            entry = self._WINFO.get(storage)
            return None if entry is None else entry[0]

        def pack(self, tensor: Tensor) -> Tensor:
            """saved_tensors_hooks pack hook: note the storages, keep the tensor. Detached,
            so that a saved output does not hold its own grad_fn in a reference cycle."""
            for storage in get_untyped_storages(tensor):
                record = self._record(storage)
                if record is not None:
                    self.saved[id(record)] = record
            return tensor.detach()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
            for leaf in tree_leaves((args, kwargs)):
                if isinstance(leaf, Tensor) and any(self._record(st) is None for st in get_untyped_storages(leaf)):
                    for record in self._update_and_maybe_create_winfos(leaf, _MemRefType.OTH):
                        self.read_from_outside[id(record)] = record
            return super().__torch_dispatch__(func, types, args, kwargs)

        def _update_peak_stats(self, peak_state: object) -> None:
            # Replaces MemTracker's own, which also keeps every module's peak (unused here,
            # and most of its cost), with the device-wide peak alone.
            snapshot = self._curr_mem_snap.get(self.device, {})
            total = snapshot.get("Total", 0)
            if total > self._peak_mem.get(self.device, 0):
                self._peak_mem[self.device] = total
                self._peak_mem_snap[self.device] = dict(snapshot)
                self.at_peak = [record for record, _ in self._WINFO.values() if record.device == self.device]
                self.peak_phase = "optimizer" if self._in_opt else "backward" if self._mod_tracker.is_bw else "forward"
            if self.cap_bytes is not None and total > self.cap_bytes:
                raise MemoryCapExceeded(
                    f"tensors alive during the step need {total} bytes, over the cap of {self.cap_bytes}"
                )


def track_step(
    model: nn.Module,
    optimizer: Optimizer,
    step: Callable[[], None],
    device: torch.device,
    bytes_on: str | None = None,
    cap_bytes: int | None = None,
) -> Breakdown:
    """Run ``step()`` once under the tracker and break down its peak on ``device``.

    ``step`` should be a steady-state step: gradients and optimizer state already exist
    (one step before this one creates them), as in every timed step. ``bytes_on``
    (default: ``device.type``) sizes the storages as that device type's allocator would
    (``storage_bytes``), for a CPU stand-in of a CUDA prediction. With ``cap_bytes``, the
    step stops with ``MemoryCapExceeded`` as soon as the tensors alive exceed it, as an
    allocator with that much memory would stop it. Raises ``TrackerUnavailable`` where
    torch has no tracker.
    """
    if MemTracker is None:
        raise TrackerUnavailable("this torch has no torch.distributed._tools.mem_tracker.MemTracker")
    device = torch.device(device)
    tracker = _PeakTracker(device, cap_bytes)
    tracker.track_external(model, optimizer)
    with tracker, torch.autograd.graph.saved_tensors_hooks(tracker.pack, lambda tensor: tensor):
        step()
    return _classify(tracker, model, optimizer, bytes_on or device.type)


def _classify(tracker: _PeakTracker, model: nn.Module, optimizer: Optimizer, bytes_on: str) -> Breakdown:
    state = [v for s in optimizer.state.values() for v in s.values() if isinstance(v, Tensor)]
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    owners = [
        ("parameters", _storages(model.parameters())),
        ("buffers", _storages(model.buffers())),
        ("gradients", _storages(grads)),
        ("optimizer_state", _storages(state)),
    ]
    category_of: dict[int, str] = {}
    for name, storages in owners:
        for storage in storages:
            record = tracker._record(storage)
            if record is not None:
                category_of.setdefault(id(record), name)
    totals = dict.fromkeys(CATEGORIES, 0)
    for record in tracker.at_peak:
        key = id(record)
        name = category_of.get(key)
        if name is None:
            name = (
                "inputs"
                if key in tracker.read_from_outside
                else "activations"
                if key in tracker.saved
                else "temporaries"
            )
        totals[name] += storage_bytes(record.size * record.element_size, bytes_on)
    return Breakdown(**totals, peak=sum(totals.values()), phase=tracker.peak_phase)
