"""GPU telemetry: what makes two GPUs, or two nights on one GPU, comparable.

- ``nvml``: NVIDIA's management library through pynvml (the optional extra
  ``nvidia-ml-py``) or, without it, the driver's ``libnvidia-ml.so.1`` through ctypes.
- ``gpu``: each GPU's state for env.json (identity, modes, power limits, clocks, throttle
  reasons, other processes, free memory; nvidia-smi where NVML cannot be loaded), the
  CUDA-related environment variables, and per-repeat samples and energy for the Record.

What ``compare`` makes of two runs' telemetry is ``bench.analyse.fairness``.
"""
