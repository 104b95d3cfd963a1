"""The process world of a data-parallel run: who this process is, its default process group,
and a side channel through the rendezvous store that survives a broken collective.

Every rank is a process started by ``torch.distributed.run`` (torchrun), which puts
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in its
environment. The default process group uses NCCL on CUDA and gloo on the CPU.

Results and failures travel through the default group's key-value store (a TCPStore), not
through collectives: a rank that failed in the middle of a step leaves its peers inside an
all-reduce that will never complete, and any further collective on that communicator would
pair with the wrong operation. Store keys are named per case and rank, so a late or lost
rank cannot be mistaken for another.
"""

from __future__ import annotations

import datetime
import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench import defaults

if TYPE_CHECKING:  # torch is imported where it is used, so that `convbench --help` stays quick
    import torch
    import torch.distributed as dist

#: Seconds a collective (and a wait for another rank's result) may take before the case is
#: recorded as ``timeout``.
DEFAULT_TIMEOUT_S = defaults.COLLECTIVE_TIMEOUT_S
#: The environment variable torchrun sets in every worker; its presence means "launched".
LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launched() -> bool:
    """True in a process started by torchrun (or any launcher that sets its variables)."""
    return all(name in os.environ for name in LAUNCH_VARIABLES)


def backend_for(device: torch.device) -> str:
    """``nccl`` for CUDA devices, ``gloo`` for the CPU."""
    return "nccl" if device.type == "cuda" else "gloo"


@dataclass
class World:
    """This process's place in the run and the channel it reports through."""

    rank: int
    world_size: int
    local_rank: int
    backend: str
    timeout_s: float
    store: dist.Store

    @property
    def timeout(self) -> datetime.timedelta:
        return datetime.timedelta(seconds=self.timeout_s)

    def post(self, key: str, value: object) -> None:
        """Publish ``value`` (JSON-serialisable) under ``key`` for the other ranks."""
        self.store.set(key, json.dumps(value))

    def collect(self, keys: list[str], timeout_s: float) -> dict[str, object]:
        """The values posted under ``keys``; keys not posted within ``timeout_s`` seconds are
        left out of the result (their rank is lost or hung), never waited on for longer."""
        found: dict[str, object] = {}
        try:
            self.store.wait(keys, datetime.timedelta(seconds=timeout_s))
        except RuntimeError:  # DistStoreError on a timeout
            pass  # some never came; take the ones that did
        for key in keys:
            if self.store.check([key]):
                found[key] = json.loads(self.store.get(key))
        return found

    def wait(self, key: str) -> None:
        """Block until ``key`` is posted, however long that takes: a rank waiting for rank 0 to
        finish a case (if rank 0 dies, torchrun ends this process too)."""
        self.store.wait([key], datetime.timedelta(days=1))

    def share(self, key: str, value: str) -> str:
        """Rank 0's ``value`` on every rank (the others wait for it)."""
        if self.rank == 0:
            self.store.set(key, value)
        return self.store.get(key).decode()

    def ticket(self, key: str) -> int:
        """A number that grows with every call on any rank for the same ``key``: the order in
        which ranks got here (the first rank to fail gets 1)."""
        return int(self.store.add(key, 1))


def join(device: torch.device, timeout_s: float = DEFAULT_TIMEOUT_S) -> World:
    """Join the launched world: start the default process group (NCCL on CUDA, gloo on the
    CPU); ``timeout_s`` bounds each case's collectives and the wait for the ranks' results.

    Raises:
        RuntimeError: not started by torchrun (its environment variables are missing).
    """
    import torch
    import torch.distributed as dist

    if not launched():
        raise RuntimeError(f"not started by torchrun: {', '.join(LAUNCH_VARIABLES)} must be set")
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    backend = backend_for(device)
    # PyTorch's NCCL watchdog ends the process on a timed-out collective by default (3);
    # 2 aborts the communicator only, so the timeout fails the case and the sweep goes on.
    os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "2")
    if not dist.is_initialized():
        device_id = torch.device("cuda", local_rank) if device.type == "cuda" else None
        # The default group only starts the run and carries the store; ranks may reach it
        # seconds apart (imports), so it keeps the generous default even under a short timeout.
        startup = datetime.timedelta(seconds=max(timeout_s, DEFAULT_TIMEOUT_S))
        dist.init_process_group(backend, timeout=startup, rank=rank, world_size=world_size, device_id=device_id)
    # The default group's store is the rendezvous store every rank already shares; the
    # collectives of a case may break, this channel does not.
    store = dist.distributed_c10d._get_default_store()
    return World(rank, world_size, local_rank, backend, timeout_s, store)


def leave() -> None:
    """Tear down the default process group, if there is one (each rank, at the end of the run)."""
    if not launched():
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
