"""A torchrun worker for the data-parallel tests: ``convbench run`` as a rank runs it, plus

- models that misbehave on one rank only: ``rank1-error`` raises on rank 1; ``rank1-stall``
  sleeps on rank 1 in its second forward for ``STALL_S`` seconds (longer than the test's
  collective timeout), leaving rank 0 inside an all-reduce; ``rank0-slow`` sleeps as long
  on rank 0 in its first forward (a one-rank case outlasting the timeout is no fault);
- no report (its figures cost seconds; the two-node test checks a data-parallel report);
- every case's trained parameters saved per rank to ``OUT/rank<r>/<case>.pt`` (this rank's
  tensors: the whole parameter under ddp and zero1, the local shard under fsdp), so the test
  can compare them with one process training on the global batch.

Usage: ``torchrun --nproc-per-node 2 distributed_worker.py OUT run [convbench run flags]``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor

import models
from bench.cli import main
from bench.kinds.parallel import cases
from bench.kinds.step import runner
from bench.reporting import report

STALL_S = 4.0
SHAPE = (1, 8, 8)


class RankFault(nn.Module):
    """A linear classifier of 1x8x8 images whose forward misbehaves on one rank (not on meta)."""

    def __init__(self, fault: str, in_channels: int = 1, num_classes: int = 3) -> None:
        super().__init__()
        self.fault, self.calls = fault, 0
        self.head = nn.Linear(in_channels * 64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(x.flatten(1))
        if x.is_meta:
            return out
        self.calls += 1
        rank = dist.get_rank()
        if self.fault == "error" and rank == 1:
            raise ValueError("injected fault on rank 1")
        if (self.fault, rank, self.calls) in {("stall", 1, 2), ("slow", 0, 1)}:
            time.sleep(STALL_S)
        return out


for _name, _fault in (("rank1-error", "error"), ("rank1-stall", "stall"), ("rank0-slow", "slow")):
    models.register(_name, input_shape=SHAPE, num_classes=3, family="test")(
        lambda in_channels=1, num_classes=3, fault=_fault: RankFault(fault, in_channels, num_classes)
    )

OUT = Path(sys.argv[1])
trained: dict[str, nn.Module] = {}
build_for, run_case = cases.build_for, runner.run_case


def capturing_build(case, context, out, **kwargs):  # noqa: ANN001, ANN201
    module, optimizer, trainer = build_for(case, context, out, **kwargs)
    trained[case.case_id] = module
    return module, optimizer, trainer


def saving_run_case(case, context):  # noqa: ANN001, ANN201
    record = run_case(case, context)
    module = trained.pop(case.case_id, None)
    if module is not None and record.status == "ok":
        local = {
            name.removeprefix("module."): (p.to_local() if isinstance(p, DTensor) else p).detach().clone()
            for name, p in module.named_parameters()
        }
        folder = OUT / f"rank{dist.get_rank()}"
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(local, folder / (case.case_id.replace("/", "_") + ".pt"))
    return record


cases.build_for, runner.run_case = capturing_build, saving_run_case
report.write_report = lambda run_dir, parts=None: []
sys.exit(main(sys.argv[2:]))
