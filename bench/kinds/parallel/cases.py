"""Running one case data-parallel on the first ``world_size`` ranks, and merging the ranks'
measurements into one Record on rank 0.

Every rank runs the single-process runner's own ``run_case`` (same Trainer, warm-up, clock,
memory meter and fault handling) with a builder that spreads the model and optimizer over a
fresh process group for the case (``strategies.parallelize``). ``batch_size`` is the batch of
one rank; the ranks' batches are consecutive slices of one global batch of
``batch_size × world_size`` samples, made once from the same seed on every rank, so the run
trains on exactly what one process would train on with the global batch.

Each rank then posts its Record through the store (``world.World.post``); rank 0 merges them:

- step time: per step, the slowest rank's time (the ranks meet in every all-reduce, so a
  step lasts as long as its slowest rank); median, IQR and minimum over those;
- ``throughput``: ``batch_size`` / step time (one rank's samples per second);
  ``global_throughput``: ``batch_size × world_size`` / step time;
- ``scaling_efficiency``: global throughput / (world size × the global throughput of the
  same case at world size 1 in the same run), i.e. weak scaling at a fixed per-rank batch
  (the batch per GPU stays, the global batch grows with the ranks);
- memory: per-rank lists (``rank_*``), and in the single-rank fields the largest over the
  ranks (the rank that must fit decides);
- ``final_loss``: the mean of the ranks' last losses, the loss of the global batch.

A rank that fails (exception, out of memory, non-finite loss) posts first, with a ticket
from the store that orders the failures, then tears down the case's process group, which
makes its peers' pending collectives fail at once on gloo instead of waiting for the timeout;
the case's Record takes the first failure's status and message. A rank that sends nothing
within the collective timeout is recorded as ``timeout``. Either way the next case gets a
new process group.

Ranks other than 0 wait for rank 0 to finish each case (the ranks' reports merged)
before starting the next: a rank with no part in a case (world size 1) would otherwise sit
in the next case's group creation for as long as the case takes, and time out there.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from typing import NoReturn

import torch
import torch.distributed as dist
from torch import nn

import models
import optimizers
from bench.kinds.parallel.strategies import parallelize
from bench.kinds.parallel.world import World
from bench.kinds.step import runner
from bench.kinds.step.suite import Case
from bench.kinds.step.trainer import Trainer
from bench.measure import data, memory, timing
from bench.record import ParallelFigures, Record

#: The fields each rank sends rank 0, besides its status and error.
RANK_FIELDS = (
    "step_time_samples_ms",
    "param_bytes",
    "grad_bytes",
    "optimizer_state_bytes",
    "peak_memory_bytes",
    "static_memory_bytes",
    "activation_bytes",
    "final_loss",
)
#: Fields whose largest value over the ranks goes in the Record's single-rank field.
LARGEST_OVER_RANKS = RANK_FIELDS[1:7]
#: Fields the parallel figures keep per rank (``rank_param_bytes``...).
RANK_MEMORY_FIELDS = RANK_FIELDS[1:5]


def rank_slice(batch: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Rank ``rank``'s consecutive share of a global batch (dimension 0 divides evenly)."""
    share = batch.shape[0] // world_size
    return batch[rank * share : (rank + 1) * share]


def build_for(
    case: Case, context: runner.RunContext, out: dict, *, world: World, group: dist.ProcessGroup
) -> tuple[nn.Module, torch.optim.Optimizer, Trainer]:
    """``runner.build`` for a data-parallel case: this rank's slice of the global batch, the
    model wrapped for ``case.strategy`` over ``group``; returns what the runner measures (the
    wrapped module and the optimizer holding this rank's state) and the Trainer."""
    device = context.device
    torch.manual_seed(0)
    global_batches = data.make_batches(
        case.dataset,
        case.input_shape,
        case.num_classes,
        case.batch_size * case.world_size,
        case.warmup + case.repeats * case.steps,
        torch.device("cpu"),  # the global batch exists once per host, not once per GPU
        context.data_root,
        context.download,
    )
    batches = [
        (rank_slice(x, world.rank, case.world_size).to(device), rank_slice(y, world.rank, case.world_size).to(device))
        for x, y in global_batches
    ]
    model = models.build(case.model, in_channels=case.input_shape[0], num_classes=case.num_classes)
    out["params"] = sum(p.numel() for p in model.parameters())
    if case.sync_batchnorm:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model, process_group=group)
    model = model.to(device)
    if case.channels_last:
        model = model.to(memory_format=torch.channels_last)
        batches = [(x.contiguous(memory_format=torch.channels_last), y) for x, y in batches]
    parallel = parallelize(case.strategy, model, case.optimizer, group, device)
    out["param_bytes"] = memory.param_bytes(parallel.module)  # this rank's shard under fsdp
    out["hyperparameters"] = optimizers.hyperparameters(parallel.local_optimizer)
    module = torch.compile(parallel.module) if case.compile else parallel.module
    trainer = Trainer(module, parallel.optimizer, batches, case.precision, device)
    return parallel.module, parallel.local_optimizer, trainer


def is_timeout(message: str | None) -> bool:
    """Whether a failure message is a collective's (or the store's) timeout."""
    return message is not None and ("timed out" in message.lower() or "timeout" in message.lower())


class DistributedRunner:
    """Runs the cases of one run in order on every rank; rank 0 gets the merged Records.

    ``baseline`` keeps, per case configuration without its world size, the global throughput
    at world size 1, from which later cases' scaling efficiency is computed.
    """

    def __init__(self, world: World) -> None:
        self.world = world
        self.index = 0
        self.baseline: dict[str, float] = {}

    def __call__(self, case: Case, context: runner.RunContext) -> Record | None:
        """Run ``case`` on ranks 0 … world_size − 1 (the others only take part in creating its
        process group); the merged Record on rank 0, None elsewhere."""
        world, self.index = self.world, self.index + 1
        prefix = f"convbench/{context.run_id}/case{self.index}"
        members = list(range(case.world_size))
        group, fault = None, None
        try:
            # Every rank creates every group, so all agree on its name and none is reused.
            group = dist.new_group(members, timeout=world.timeout)
        except Exception as error:  # noqa: BLE001  (a rank that never arrived: the case's result)
            fault = error
        local: Record | None = None
        if world.rank in members:
            build = functools.partial(build_for, world=world, group=group) if fault is None else _raiser(fault)
            local = runner.run_case(case, dataclasses.replace(context, builder=build))
            flat = local.to_dict()
            report = {"status": local.status, "error": local.error, **{k: flat[k] for k in RANK_FIELDS}}
            if local.status != "ok":
                report["status"] = "timeout" if is_timeout(local.error) else local.status
                report["order"] = world.ticket(f"{prefix}/failures")
            world.post(f"{prefix}/rank{world.rank}", report)
        if group is not None and group != dist.GroupMember.NON_GROUP_MEMBER:
            dist.destroy_process_group(group)
        if world.rank != 0:
            world.wait(f"{prefix}/done")
            return None
        keys = [f"{prefix}/rank{rank}" for rank in members]
        posted = world.collect(keys, world.timeout_s)
        reports = [posted.get(key) for key in keys]
        try:
            return self.merge(local, reports, case)
        finally:
            world.post(f"{prefix}/done", True)

    def merge(self, local: Record, reports: Sequence[dict | None], case: Case) -> Record:
        """Rank 0's Record with the ranks' reports folded in (see the module docstring): its
        parallel figures, and the step time and memory over all ranks."""
        world_size = case.world_size
        missing = {
            "status": "timeout",
            "error": f"sent no result within the collective timeout of {self.world.timeout_s:g} s (hung or lost)",
        }
        reports = [report if report is not None else missing for report in reports]
        parallel = ParallelFigures(
            backend=self.world.backend,
            collective_timeout_s=self.world.timeout_s,
            global_batch_size=case.batch_size * world_size,
            rank_status=[report["status"] for report in reports],
            **{f"rank_{name}": [report.get(name) for report in reports] for name in RANK_MEMORY_FIELDS},
        )
        failed = [
            (report.get("order", math.inf), rank) for rank, report in enumerate(reports) if report["status"] != "ok"
        ]
        if failed:
            _, rank = min(failed)
            first = reports[rank]
            error = f"rank {rank} of {world_size}: {first['error']}"
            return dataclasses.replace(local, status=first["status"], error=error, parallel=parallel)
        changes: dict = {name: max(report[name] for report in reports) for name in LARGEST_OVER_RANKS}
        changes["final_loss"] = sum(report["final_loss"] for report in reports) / world_size
        per_rank = [report["step_time_samples_ms"] for report in reports]
        parallel.rank_step_time_ms = [timing.summarize(samples).median for samples in per_rank]
        slowest = [max(step) for step in zip(*per_rank, strict=True)]
        summary = timing.summarize(slowest)
        changes["step_time_samples_ms"] = slowest
        changes["step_time_ms"], changes["step_time_iqr_ms"] = summary.median, summary.iqr
        changes["step_time_min_ms"] = summary.min
        changes["throughput"] = case.batch_size / (summary.median / 1e3)
        parallel.global_throughput = parallel.global_batch_size / (summary.median / 1e3)
        changes["state_bytes_per_param"] = changes["optimizer_state_bytes"] / local.static_memory.params
        key = _scaling_key(case)
        if world_size == 1:
            self.baseline[key] = parallel.global_throughput
        if key in self.baseline:
            parallel.scaling_efficiency = parallel.global_throughput / (world_size * self.baseline[key])
        return dataclasses.replace(local.with_fields(**changes), parallel=parallel)


def _scaling_key(case: Case) -> str:
    """The case without its world size: cases that differ only there scale into each other."""
    return dataclasses.replace(case, world_size=1).case_id


def _raiser(fault: Exception) -> Callable[..., NoReturn]:
    """A builder that fails the case with ``fault`` (its process group could not be made)."""

    def builder(*_: object) -> NoReturn:
        raise fault

    return builder
