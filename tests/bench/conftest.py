"""Test models registered for one test only (the registry dict is restored afterwards)."""

from __future__ import annotations

import os
import signal
import weakref

import pytest
import torch
from torch import nn

from models.registry import _REGISTRY, ModelSpec

SHAPE = (1, 8, 8)  # tiny inputs: every fault model trains on 1x8x8 images, 3 classes


class Faulty(nn.Module):
    """A small conv net whose forward does ``fault`` after a real convolution. On the meta
    device (the runner's shape check before a run) it behaves: faults need real memory."""

    instances: list[weakref.ref] = []
    poisoned = False  # a sticky CUDA error happened in this process: all later work fails

    def __init__(self, fault: str, in_channels: int = 1, num_classes: int = 3) -> None:
        super().__init__()
        self.fault = fault
        self.conv = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.head = nn.Linear(4, num_classes)
        Faulty.instances.append(weakref.ref(self))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(self.conv(x).mean((2, 3)))
        if x.is_meta:
            return out
        if self.fault == "poison" or Faulty.poisoned:
            Faulty.poisoned = True
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        if self.fault == "exit":
            os._exit(3)  # the process dies without a word, as in a crash inside a library
        if self.fault == "cublas-oom":
            raise RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`")
        if self.fault == "oom":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        if self.fault == "error":
            raise ValueError("boom")
        if self.fault == "nan":
            return out * float("nan")
        if self.fault == "interrupt":
            raise KeyboardInterrupt
        if self.fault == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)
        if self.fault == "sysexit":
            raise SystemExit(7)  # a model that calls sys.exit
        if self.fault == "print":
            print("model code talking on stdout")
        return out


FAULTS = ("oom", "error", "nan", "interrupt", "sigterm", "poison", "exit", "cublas-oom", "sysexit", "print", "ok")


def fault_specs() -> dict[str, ModelSpec]:
    """``<fault>-net`` for every fault in FAULTS."""
    specs = {}
    for fault in FAULTS:

        def builder(in_channels: int = 1, num_classes: int = 3, fault: str = fault) -> nn.Module:
            return Faulty(fault, in_channels, num_classes)

        specs[f"{fault}-net"] = ModelSpec(f"{fault}-net", builder, SHAPE, 3, "test")
    return specs


def register_fault_models() -> None:
    """Registers the fault models for good: in a child process that runs an isolated case."""
    _REGISTRY.update(fault_specs())


@pytest.fixture
def fault_models(monkeypatch):
    """Registers ``oom-net``, ``error-net``, ``nan-net``, ``interrupt-net``, ``sigterm-net``,
    ``poison-net`` (a sticky CUDA error: every later forward in the process fails too),
    ``exit-net`` (the process exits), ``cublas-oom-net``, ``sysexit-net`` (raises SystemExit),
    ``print-net`` (prints to stdout) and ``ok-net`` (no fault) for the test."""
    for name, spec in fault_specs().items():
        monkeypatch.setitem(_REGISTRY, name, spec)
    Faulty.instances.clear()
    monkeypatch.setattr(Faulty, "poisoned", False)
    return Faulty


@pytest.fixture
def one_thread():
    """Effective fields use torch's thread setting; on a busy 2-core machine two OpenMP threads
    made resnet20's ninety times slower than one, so the receptive-field tests pin one (and
    restore it)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
