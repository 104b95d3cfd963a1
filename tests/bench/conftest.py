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
        return out


@pytest.fixture
def fault_models(monkeypatch):
    """Registers ``oom-net``, ``error-net``, ``nan-net``, ``interrupt-net``, ``sigterm-net``
    and ``ok-net`` (no fault) for the test."""
    for fault in ("oom", "error", "nan", "interrupt", "sigterm", "ok"):

        def builder(in_channels: int = 1, num_classes: int = 3, fault: str = fault) -> nn.Module:
            return Faulty(fault, in_channels, num_classes)

        name = f"{fault}-net"
        monkeypatch.setitem(_REGISTRY, name, ModelSpec(name, builder, SHAPE, 3, "test"))
    Faulty.instances.clear()
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
