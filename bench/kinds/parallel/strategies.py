"""Data-parallel strategies: how a model and its registry optimizer are spread over the
ranks of one process group. Each is PyTorch's own implementation, driven as its documentation
describes; nothing here reimplements a collective.

- ``ddp``: ``torch.nn.parallel.DistributedDataParallel``. Every rank keeps the whole model,
  its gradients and the whole optimizer state; gradients are averaged by bucketed all-reduce
  during backward (Li et al., "PyTorch Distributed: Experiences on Accelerating Data Parallel
  Training", VLDB 2020).
- ``zero1``: DDP for the gradients, with ``torch.distributed.optim.ZeroRedundancyOptimizer``
  around the registry optimizer (textbook ones included): each rank keeps the optimizer state
  of its partition of the parameters only, steps that partition and broadcasts it (ZeRO
  stage 1, Rajbhandari et al., SC 2020). The partition is of whole parameters, greedily
  balanced by size, so a rank's share of the state is 1/N up to one parameter's state.
- ``fsdp``: FSDP2, ``torch.distributed.fsdp.fully_shard`` on every direct child of the model
  that has parameters and then on the model itself: parameters, gradients and optimizer state
  are all sharded (each a ``DTensor`` whose local shard is 1/N, rounded up per tensor);
  parameters are all-gathered for forward and backward, gradients reduce-scattered. Works
  with gloo on the CPU as well as with NCCL.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.optim import ZeroRedundancyOptimizer
from torch.nn.parallel import DistributedDataParallel

import optimizers
from bench.checks import STRATEGIES


@dataclass
class Parallel:
    """A model and optimizer spread over a process group.

    ``module`` and ``optimizer`` are what training calls (forward, ``step``);
    ``local_optimizer`` holds the state this rank keeps (for ``zero1`` the inner optimizer of
    its partition, otherwise ``optimizer`` itself), which is what its memory is counted from.
    """

    module: nn.Module
    optimizer: torch.optim.Optimizer
    local_optimizer: torch.optim.Optimizer


def parallelize(
    strategy: str, model: nn.Module, optimizer_name: str, group: dist.ProcessGroup, device: torch.device
) -> Parallel:
    """Wrap ``model`` (already on ``device``, identical on every rank) for ``strategy`` over
    ``group`` and build the registry optimizer ``optimizer_name`` with its default
    hyperparameters.

    Raises:
        ValueError: ``strategy`` is not one of STRATEGIES.
    """
    device_ids = [device] if device.type == "cuda" else None
    if strategy == "ddp":
        module = DistributedDataParallel(model, device_ids=device_ids, process_group=group)
        optimizer = optimizers.build(optimizer_name, module.parameters())
        return Parallel(module, optimizer, optimizer)
    if strategy == "zero1":
        module = DistributedDataParallel(model, device_ids=device_ids, process_group=group)
        sharded = ZeroRedundancyOptimizer(
            module.parameters(),
            optimizer_class=functools.partial(optimizers.build, optimizer_name),
            process_group=group,
        )
        return Parallel(module, sharded, sharded.optim)
    if strategy == "fsdp":
        mesh = DeviceMesh.from_group(group, device.type)
        for child in model.children():
            if any(True for _ in child.parameters()):
                fully_shard(child, mesh=mesh)
        fully_shard(model, mesh=mesh)
        optimizer = optimizers.build(optimizer_name, model.parameters())
        return Parallel(model, optimizer, optimizer)
    raise ValueError(f"strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}")
