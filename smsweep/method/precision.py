"""How forward passes run: bf16 autocast or float32, NHWC or NCHW; for the trial and the bench.

Only the forwards are autocast: the weights and the optimizer's steps stay float32 (no `.half()`,
and bf16 has float32's range, so no gradient scaler), and every loss and loss map is computed in
float32 from the model's output cast back (`output.float()`), outside the autocast region. On a
GPU the bench found a bf16 loss map slower and its SSIM unsound (docs/performance.md).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import nn

ModelT = TypeVar("ModelT", bound=nn.Module)


@dataclass(frozen=True)
class Precision:
    bf16_autocast: bool = False
    channels_last: bool = False

    def context(self, device: torch.device) -> contextlib.AbstractContextManager:
        """The forward's autocast region on `device` (a no-op in float32)."""
        if self.bf16_autocast:
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def apply(self, model: ModelT) -> ModelT:
        """The model in this layout (inputs stay NCHW, as in a trial: the first convolution
        converts them)."""
        if self.channels_last:
            return model.to(memory_format=torch.channels_last)
        return model

    def __str__(self) -> str:
        parts = ["bf16 autocast" if self.bf16_autocast else "float32"]
        if self.channels_last:
            parts.append("channels_last")
        return " + ".join(parts)


FLOAT32 = Precision()  # no autocast, the layout the model is in: the default of every loop


def bf16_is_fast(device: torch.device) -> bool:
    """Whether `device` runs bf16 natively: a CUDA device of compute capability 8.0 or later
    (torch.cuda.is_bf16_supported without emulation, which would be slower than float32)."""
    if device.type != "cuda":
        return False
    with torch.cuda.device(device):
        return torch.cuda.is_bf16_supported(including_emulation=False)


def resolve_precision(setting: str, device: torch.device, *, channels_last: bool) -> Precision:
    """`model.precision` on `device`: auto is bf16 autocast where the device runs bf16 natively
    and float32 elsewhere (CPUs); bf16 autocasts on any device (torch autocasts on the CPU too);
    fp32 never autocasts."""
    if setting not in ("auto", "fp32", "bf16"):
        raise ValueError(f"unknown precision {setting!r}; choose one of: auto, fp32, bf16")
    bf16 = setting == "bf16" or (setting == "auto" and bf16_is_fast(device))
    return Precision(bf16_autocast=bf16, channels_last=channels_last)
