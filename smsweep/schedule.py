"""Learning-rate schedules by optimizer step: linear warm-up, then constant or cosine decay to 0.

The rate is a pure function of the global step, so a resumed run needs no scheduler state: the
trial knows where it is (partition, epoch) and therefore which step comes next. An annealed rate
ends training on a smooth stretch of the loss surface: the last evaluation of a run is then a
much less noisy score than after a constant rate (a research sweep compares such scores).
"""

from __future__ import annotations

import math

from torch.optim import Optimizer

SCHEDULES = ("constant", "cosine")


def lr_factor(step: int, total: int, *, warmup: float, schedule: str) -> float:
    """The multiplier of the peak rate at `step` (0-based) of `total` steps.

    Warm-up: round(warmup * total) steps rising linearly to 1 (the first step already trains);
    then 1 (`constant`) or half a cosine from 1 towards 0, reached just after the last step.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")
    warm = round(warmup * total)
    if step < warm:
        return (step + 1) / (warm + 1)
    if schedule == "constant":
        return 1.0
    progress = (step - warm) / max(1, total - warm)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


class LearningRate:
    """Sets `optimizer`'s rate for a step: `peak * lr_factor(step, total, ...)`."""

    def __init__(
        self, optimizer: Optimizer, peak: float, total: int, *, warmup: float, schedule: str
    ) -> None:
        if total < 1:
            raise ValueError(f"a schedule needs at least one step, got total={total}")
        self.optimizer, self.peak, self.total = optimizer, peak, total
        self.warmup, self.schedule = warmup, schedule

    def __call__(self, step: int) -> float:
        rate = self.peak * lr_factor(step, self.total, warmup=self.warmup, schedule=self.schedule)
        for group in self.optimizer.param_groups:
            group["lr"] = rate
        return rate
