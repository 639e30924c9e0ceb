"""Fine-tune repeats (`finetune.repeats`: F): one pretrained model fine-tuned F times, so that a
trial's score is not one fine-tune's luck (its head initialisation, batch orders, augmentation).

Fine-tune f draws its seeds from the repeat seed, its stream and f (`finetune_seed`); f = 0 draws
exactly the seeds of a trial without repeats, so F = 1 trains and reports as before, bit for bit,
and fine-tune 0 of an F = 4 trial is that same fine-tune. Each fine-tune also keeps its own
weights, optimizer state and torch (CPU) RNG state, so no fine-tune's draws depend on another's
(on a GPU, MRM's feature masks draw from the device's generator, which the fine-tunes share).

The F fine-tunes advance together, validation by validation, on one model and one optimizer:
before a fine-tune's stretch of steps its state is loaded into them, after it the state is
parked on the CPU (`Repeats.activate`). Fine-tune 0 runs last in every stretch, so between
validations the model holds fine-tune 0 (the weights a checkpoint exports) and the others are
parked; the parked states travel in the checkpoint (`TrialState.finetunes`), so a trial killed
between validations resumes with all F where they were. The cost: F times the fine-tuning
compute, and a checkpoint and host memory that hold F fine-tunes' weights and optimizer states.

`aggregate` turns the F validations into the trial's report: the mean of every score, the
per-fine-tune scores (`finetune/<f>/<metric>`) and their spread (`finetune/<metric>_sd`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from smsweep.trial.context import FINETUNE_REPEAT, PROBE, TrialContext

Parked = dict[str, Any]  # {"model": state dict, "optimizer": state dict, "torch_rng": tensor}
PROBE_RUN = -1  # `finetune_seed`'s index of the frozen-encoder probe (`finetune.probe`)


def finetune_seed(trial: TrialContext, stream: int, *parts: int, finetune: int) -> int:
    """The seed of fine-tune `finetune` for one stream (HEAD, FINETUNE, FINETUNE_SHUFFLE) and
    its indices: the seed a trial without repeats uses for fine-tune 0. The probe
    (`PROBE_RUN`) draws from streams of its own."""
    if finetune == PROBE_RUN:
        return trial.seeded(PROBE, stream, *parts)
    if finetune == 0:
        return trial.seeded(stream, *parts)
    return trial.seeded(FINETUNE_REPEAT, finetune, stream, *parts)


def on_cpu(value: Any) -> Any:
    """A copy of a state (nested dicts and lists of tensors) on the CPU: a state dict holds the
    live tensors, which the next fine-tune overwrites."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {key: on_cpu(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(on_cpu(item) for item in value)
    return value


class Repeats:
    """Which of the F fine-tunes the model and optimizer hold, and the others' parked states."""

    def __init__(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, parked: Sequence[Parked]
    ) -> None:
        self.model, self.optimizer = model, optimizer
        self.count = 1 + len(parked)
        self.parked: dict[int, Parked] = dict(enumerate(parked, start=1))
        self.resident = 0

    def order(self) -> list[int]:
        """The fine-tunes in the order each stretch runs them: fine-tune 0 last (it stays)."""
        return [*range(1, self.count), 0]

    def activate(self, finetune: int) -> None:
        """Park the fine-tune the model holds and load `finetune`'s weights, optimizer and RNG."""
        if finetune == self.resident:
            return
        self.parked[self.resident] = {
            "model": on_cpu(self.model.state_dict()),
            "optimizer": on_cpu(self.optimizer.state_dict()),
            "torch_rng": torch.get_rng_state(),
        }
        state = self.parked.pop(finetune)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        self.resident = finetune

    def checkpointed(self) -> list[Parked] | None:
        """Fine-tunes 1..F-1 (the model holds fine-tune 0), for the checkpoint; None when F = 1."""
        if self.count == 1:
            return None
        assert self.resident == 0, "a checkpoint is taken between stretches"
        return [self.parked[finetune] for finetune in range(1, self.count)]


def aggregate(measured: Sequence[dict[str, Any]], ranked: Iterable[str]) -> dict[str, Any]:
    """One report's numbers from the F fine-tunes' (`measured[f]`): each number's mean over the
    fine-tunes (seconds: their sum), and, for the `ranked` metrics (the score and what the
    search ranks by) that a fine-tune measures, each fine-tune's value as `finetune/<f>/<key>`
    and their sample standard deviation as `finetune/<key>_sd`. A value that is NaN in some
    fine-tunes (a class absent from both labels and predictions) is the mean of the others.
    With one fine-tune: its numbers as they are."""
    if len(measured) == 1:
        return dict(measured[0])
    merged: dict[str, Any] = {}
    for key in measured[0]:
        values = [float(one[key]) for one in measured]
        merged[key] = sum(values) if "seconds" in key else _mean(values)
    for key in dict.fromkeys(ranked):
        if key not in measured[0]:
            continue
        values = [float(one[key]) for one in measured]
        merged |= {f"finetune/{f}/{key}": value for f, value in enumerate(values)}
        merged[f"finetune/{key}_sd"] = _sd(values)
    return merged


def _mean(values: list[float]) -> float:
    finite = [value for value in values if not math.isnan(value)]
    return sum(finite) / len(finite) if finite else math.nan


def _sd(values: list[float]) -> float:
    finite = [value for value in values if not math.isnan(value)]
    if len(finite) < 2:
        return math.nan
    mean = sum(finite) / len(finite)
    return math.sqrt(sum((value - mean) ** 2 for value in finite) / (len(finite) - 1))
