"""Learning-rate schedules by optimizer step: linear warm-up, then constant or cosine decay to 0.

The rate is a pure function of the global step, so a resumed run needs no scheduler state: the
trial knows where it is (partition, epoch) and therefore which step comes next. An annealed rate
ends training on a smooth stretch of the loss surface: the last evaluation of a run is then a
much less noisy score than after a constant rate (a research sweep compares such scores).
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
from torch import nn
from torch.optim import Optimizer

SCHEDULES = ("constant", "cosine")


class Optimisation(Protocol):
    """What `optimization` reads: pretrain and finetune settings both have these."""

    lr: float
    weight_decay: float
    warmup: float
    schedule: str


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


def optimization(
    model: nn.Module, settings: Optimisation, total_steps: int
) -> tuple[torch.optim.AdamW, LearningRate]:
    """AdamW over the model's trainable parameters and its rate by step, from a phase's settings
    (`pretrain` or `finetune`)."""
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=settings.lr,
        weight_decay=settings.weight_decay,
    )
    rate = LearningRate(
        optimizer, settings.lr, total_steps, warmup=settings.warmup, schedule=settings.schedule
    )
    return optimizer, rate
