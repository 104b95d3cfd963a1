"""Data-parallel runs: every case on N processes started by ``torch.distributed.run``
(torchrun), one process group per case, one Record per case written by rank 0.

- ``world``: the launched world, the default process group and a store-based side channel;
- ``strategies``: ``ddp``, ``zero1`` (ZeroRedundancyOptimizer) and ``fsdp`` (FSDP2);
- ``cases``: one case on the first ``world_size`` ranks, merged into one Record;
- ``launch``: the ``convbench run`` flags, the relaunch through torchrun, the worker's set-up;
- ``figures``: scaling efficiency, optimizer state per rank, Adam against SGDM per rank.

Importing this package does not import torch. Its strategies are a dimension of a training-step
suite's grid (``bench.kinds.step.suite.STRATEGIES``).
"""
