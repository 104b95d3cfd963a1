"""The training step every training-step case times: ``Trainer``.

Forward under autocast, loss, backward through the GradScaler, optimizer step, gradients
zeroed in place; detailed mode times the three phases apart. Losses and GradScaler's
found-inf flags stay on the device until ``check_finite`` reads them all in one transfer.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.measure.faults import Diverged

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Trainer:
    """One training step, split into the phases that detailed mode times separately."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        batches: Sequence[tuple[Tensor, Tensor]],
        precision: str,
        device: torch.device,
    ) -> None:
        self.model, self.optimizer = model, optimizer
        self.batches = itertools.cycle(batches)
        self.first_batch = batches[0]  # what the first step trains on (bench.kinds.step.autotune reads it)
        dtype = AUTOCAST_DTYPES.get(precision)
        # No autocast context at all in float32: even a disabled one costs microseconds a step.
        self.autocast = functools.partial(torch.autocast, device.type, dtype=dtype) if dtype else contextlib.nullcontext
        # fp16 needs loss scaling; for other precisions the disabled scaler passes through.
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        self.loss: Tensor | None = None
        self.losses: list[Tensor] = []  # checked for non-finite values between repeats
        self.checked = 0  # steps whose loss has been checked
        # GradScaler's verdict on each step since the last check (non-zero: it found inf/NaN
        # gradients and skipped the update), kept on the device until the check reads it.
        self.found_inf: list[Tensor] = []
        self.skipped = 0  # checked steps whose optimizer update GradScaler skipped

    def forward(self) -> None:
        images, labels = next(self.batches)
        with self.autocast():
            self.loss = F.cross_entropy(self.model(images), labels)
        self.losses.append(self.loss.detach())

    def backward(self) -> None:
        self.scaler.scale(self.loss).backward()

    def update(self) -> None:
        self.scaler.step(self.optimizer)
        if self.scaler.is_enabled():
            found = self.scaler._found_inf_per_device(self.optimizer).values()
            self.found_inf.append(functools.reduce(torch.add, found))  # one device: no kernel
        self.scaler.update()
        # In place rather than set to None: gradients then stay allocated between steps,
        # so params + grads + optimizer state are the static memory and the rest is activations.
        self.optimizer.zero_grad(set_to_none=False)

    def step(self) -> None:
        self.forward()
        self.backward()
        self.update()

    def check_finite(self) -> float:
        """The last loss; raises Diverged if a loss since the last check was not finite.
        Adds the steps since the last check whose update GradScaler skipped to ``skipped``;
        losses and skip flags come to the host in one transfer."""
        count = len(self.losses)
        both = torch.cat([torch.stack(self.losses).float(), *(f.float().reshape(1) for f in self.found_inf)]).cpu()
        self.losses.clear()
        self.found_inf.clear()
        losses, found_inf = both[:count], both[count:]
        finite = torch.isfinite(losses)
        if not bool(finite.all()):
            first = int((~finite).nonzero()[0])
            raise Diverged(f"the loss became {losses[first].item()} at step {self.checked + first + 1}")
        self.checked += count
        self.skipped += int((found_inf != 0).sum())
        return float(losses[-1])
