"""Which machine a run measured: the key that ``previous`` and several-run baselines group by.

A host name is not a machine: pooled and containerised GPU hosts get a new one every night,
and a reused name can sit on a different GPU. A run's machine is, in order:

1. the name given with ``convbench run --machine NAME`` or the ``CONVBENCH_MACHINE``
   environment variable (a fleet's own name for a box, e.g. ``rack3-a100-1``);
2. else the device's identity: the CUDA device's UUID (``GPU-…``, as ``nvidia-smi -L`` prints
   it, from ``torch.cuda.get_device_properties(i).uuid``) for a CUDA run, the CPU's model name
   for a CPU run (CPU runs on identical CPUs are comparable).
"""

from __future__ import annotations

import os

import torch

ENV_VAR = "CONVBENCH_MACHINE"
MAX_LENGTH = 200


class MachineNameError(ValueError):
    """A machine name that is blank, too long or not printable."""


def machine_identity(device: torch.device, env: dict, name: str | None = None) -> str:
    """The machine a run on ``device`` is filed under: ``name``, else ``$CONVBENCH_MACHINE``,
    else ``GPU-<uuid>`` of the CUDA device or ``CPU <model>`` from ``env`` (``collect_env()``).
    Raises MachineNameError for a given name that is blank, over MAX_LENGTH characters or
    holds a control character inside it (a newline would split the tables it is printed in;
    surrounding whitespace, such as a file's final newline, is stripped)."""
    given = name if name is not None else os.environ.get(ENV_VAR)
    if given is not None:
        source = "--machine" if name is not None else ENV_VAR
        if not given.strip():
            raise MachineNameError(f"{source} {given[:40]!r} is blank: expected a name of 1 to {MAX_LENGTH} characters")
        if len(given) > MAX_LENGTH or not given.strip().isprintable():
            raise MachineNameError(
                f"{source} {given[:40]!r}: expected a name of 1 to {MAX_LENGTH} printable characters"
            )
        return given.strip()
    if device.type == "cuda":
        return f"GPU-{torch.cuda.get_device_properties(device).uuid}"
    return f"CPU {env.get('cpu', {}).get('model') or 'unknown'}"
