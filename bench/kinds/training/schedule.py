"""Learning-rate schedules: a factor per training step that scales the optimizer's ``lr``.

The optimizers stay as their equations write them; a schedule only sets each param group's
``lr`` to (the recipe's lr) x ``factor(k)`` before step k (k = 0, 1, ...), through
``torch.optim.lr_scheduler.LambdaLR``, which works with any ``torch.optim.Optimizer``.

- ``constant``: 1 throughout.
- ``step``: ``gamma`` ** (how many of ``milestones`` step k has reached), milestones being
  fractions of the budget of T steps (k / T >= m), so the schedule keeps its shape when the
  budget changes: He et al. 2016 divide lr 0.1 by 10 at 32k and 48k of 64k iterations,
  milestones [0.5, 0.75].
- ``onecycle``: a triangle over the whole budget of T steps, as in the CIFAR-10 speed runs
  (Smith & Topin 2017, Page 2018): rising linearly to 1 over the first W = ``warmup`` x T
  steps, factor (k + 1) / W, then falling linearly, factor (T - k) / (T - W), to 1 / (T - W)
  at the last step.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass

import torch

SCHEDULES = ("constant", "step", "onecycle")


@dataclass(frozen=True)
class Schedule:
    """A schedule by name with its settings: ``milestones`` (fractions of the budget in
    (0, 1), ascending) and ``gamma``
    for ``step``; ``warmup`` (fraction of the budget, in (0, 1)) for ``onecycle``."""

    name: str = "constant"
    milestones: tuple[float, ...] = ()
    gamma: float = 0.1
    warmup: float = 0.25

    def __post_init__(self) -> None:
        if self.name not in SCHEDULES:
            raise ValueError(f"schedule {self.name!r} is not one of {', '.join(SCHEDULES)}")
        if list(self.milestones) != sorted(self.milestones) or any(not 0 < m < 1 for m in self.milestones):
            raise ValueError(
                f"milestones must be fractions of the budget in (0, 1), ascending, got {list(self.milestones)}"
            )
        if not 0 < self.gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1], got {self.gamma}")
        if not 0 < self.warmup < 1:
            raise ValueError(f"warmup must be a fraction in (0, 1), got {self.warmup}")

    def settings(self) -> dict:
        """What the record keeps: the name and the settings that apply to it."""
        if self.name == "step":
            return {"name": self.name, "milestones": list(self.milestones), "gamma": self.gamma}
        if self.name == "onecycle":
            return {"name": self.name, "warmup": self.warmup}
        return {"name": self.name}

    def factor(self, total_steps: int) -> Callable[[int], float]:
        """k -> the lr factor of step k (0-based) of a budget of ``total_steps`` steps."""
        if self.name == "step":
            return lambda k: self.gamma ** bisect.bisect_right(self.milestones, k / total_steps)
        if self.name == "onecycle":
            rise = min(max(1, round(self.warmup * total_steps)), total_steps - 1)
            return lambda k: (k + 1) / rise if k < rise else (total_steps - k) / (total_steps - rise)
        return lambda k: 1.0

    def scheduler(self, optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
        """A LambdaLR to ``step()`` after every optimizer step; it sets step 0's lr at once."""
        return torch.optim.lr_scheduler.LambdaLR(optimizer, self.factor(total_steps))
