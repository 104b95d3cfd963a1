"""Measuring a case: the runner and its clocks, memory meters and trackers, the device's
precision settings and faults, host syncs, FLOPs and peaks, bandwidth, the environment and
the machine, case isolation, stop signals.

- ``runner``: one case end to end (build, warm up, time, memory, the memory pass) -> Record.
- ``timing``, ``host``: CUDA-event and host clocks; host syncs and enqueue time per step.
- ``memory``, ``memory_breakdown``, ``memory_pass``, ``max_batch``, ``memguard``: allocator
  and resident-set meters, the tensor-level breakdown and its prediction on fake tensors, the
  largest batch that fits, the CPU's address-space cap.
- ``precision``, ``faults``, ``isolation``: TF32/AMP settings, what an exception means for a
  case, cases in processes of their own.
- ``flops``, ``peaks``: FLOPs per sample and the dense peak for MFU.
- ``bandwidth``, ``optimizer_step``: the memory-bandwidth limit and ``convbench optim``'s cases.
- ``data``, ``env``, ``machine``, ``load``, ``stopping``: datasets, env.json, machine
  identity, other load on the machine, SIGINT/SIGTERM between records.
"""
