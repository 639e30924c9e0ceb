"""Reconstruction losses. Every loss is called as loss(prediction, target, pixel_mask) -> scalar,
with prediction and target (B, C, H, W) in [0, 1] and pixel_mask (B, 1, H, W) bool (True =
masked). `LOSSES` maps spec names to classes; `build_loss({"msssim_l1": 1.0, ...})` makes a
weighted sum.

MS-SSIM on small images: pytorch-msssim's `ms_ssim` asserts min(H, W) > (win_size - 1) * 16 for
any number of scales (so > 160 px with the 11x11 window). `ms_ssim` below is the same
computation (Gaussian window sigma 1.5, valid convolution, 2x average pooling between scales,
K = (0.01, 0.03)) with the number of scales chosen from the image size: the most scales L <= 5
with min(H, W) > (win_size - 1) * 2**(L - 1), weights = the first L of the default five,
renormalised to sum to 1. With win_size 11: 1-10 px impossible, 11-20 px 1 scale, 21-40 px 2,
41-80 px 3, 81-160 px 4, more 5. So 32x32 gets 2 scales and 64x64 3, with the paper's 11x11 window.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from smsweep.errors import SpecError

MSSSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003, as pytorch-msssim


class Loss(Protocol):
    def __call__(self, prediction: Tensor, target: Tensor, pixel_mask: Tensor) -> Tensor: ...


def msssim_levels(size: int, win_size: int = 11) -> int:
    """The most MS-SSIM scales (<= 5) an image whose smaller side is `size` supports."""
    levels = 0
    while levels < len(MSSSIM_WEIGHTS) and size > (win_size - 1) * 2**levels:
        levels += 1
    if levels == 0:
        raise SpecError(
            f"images of side {size} px are too small for SSIM with win_size={win_size}: "
            f"use images larger than {win_size - 1} px or a smaller win_size"
        )
    return levels


def _gaussian_window(win_size: int, sigma: float, like: Tensor) -> Tensor:
    offsets = torch.arange(win_size, dtype=like.dtype, device=like.device) - win_size // 2
    window = torch.exp(-(offsets**2) / (2 * sigma**2))
    return window / window.sum()  # (win,)


def _ssim_and_cs(x: Tensor, y: Tensor, window: Tensor) -> tuple[Tensor, Tensor]:
    """SSIM and contrast-structure per image and channel, valid Gaussian filtering: (B, C) each."""
    channels = x.shape[1]
    rows = window.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    cols = window.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(F.conv2d(t, rows, groups=channels), cols, groups=channels)

    c1, c2 = 0.01**2, 0.03**2  # data range 1
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    cs_map = (2 * cov + c2) / (var_x + var_y + c2)
    ssim_map = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1) * cs_map
    return ssim_map.flatten(2).mean(-1), cs_map.flatten(2).mean(-1)


def ms_ssim(x: Tensor, y: Tensor, win_size: int = 11, levels: int | None = None) -> Tensor:
    """Mean MS-SSIM of (B, C, H, W) images in [0, 1]; scales adapt to the size (module doc).

    Factors are clamped at 1e-6 rather than pytorch-msssim's relu at 0, so a negative
    contrast term cannot produce 0 ** w and NaN gradients.
    """
    levels = levels or msssim_levels(min(x.shape[-2:]), win_size)
    weights = x.new_tensor(MSSSIM_WEIGHTS[:levels])
    weights = weights / weights.sum()
    window = _gaussian_window(win_size, 1.5, x)
    factors = []
    for level in range(levels):
        ssim, cs = _ssim_and_cs(x, y, window)
        if level < levels - 1:
            factors.append(cs)
            padding = [side % 2 for side in x.shape[2:]]
            x = F.avg_pool2d(x, kernel_size=2, padding=padding)
            y = F.avg_pool2d(y, kernel_size=2, padding=padding)
    factors.append(ssim)
    stacked = torch.stack(factors).clamp(min=1e-6)  # (L, B, C)
    return torch.prod(stacked ** weights.view(-1, 1, 1), dim=0).mean()


class MSSSIML1Loss:
    """ssim_weight * (1 - MS-SSIM) + l1_weight * L1 over the whole image (SMIR's training loss).
    The mask is not used: the U-Net reconstructs every pixel."""

    def __init__(self, ssim_weight: float = 1.0, l1_weight: float = 1.0, win_size: int = 11):
        if ssim_weight < 0 or l1_weight < 0 or ssim_weight + l1_weight == 0:
            raise SpecError(
                f"ssim_weight and l1_weight must be >= 0 and not both 0, "
                f"got {ssim_weight!r} and {l1_weight!r}"
            )
        if not isinstance(win_size, int) or win_size < 3 or win_size % 2 == 0:
            raise SpecError(f"win_size must be an odd integer >= 3 (paper: 11), got {win_size!r}")
        self.ssim_weight, self.l1_weight, self.win_size = ssim_weight, l1_weight, win_size

    def __call__(self, prediction: Tensor, target: Tensor, pixel_mask: Tensor) -> Tensor:
        structural = 1.0 - ms_ssim(prediction, target, self.win_size)
        return self.ssim_weight * structural + self.l1_weight * (prediction - target).abs().mean()


class MaskedL1Loss:
    """Mean absolute error over masked pixels only (0, with a graph, when nothing is masked)."""

    def __call__(self, prediction: Tensor, target: Tensor, pixel_mask: Tensor) -> Tensor:
        weight = pixel_mask.to(prediction.dtype).expand_as(prediction)  # (B, C, H, W)
        return ((prediction - target).abs() * weight).sum() / weight.sum().clamp(min=1.0)


class FocalFrequencyLoss:
    """A2MIM's focal-frequency loss: mean(W * |F(pred) - F(target)|^2) over 2D FFTs (ortho),
    W = log(1 + |dF|) divided by its max per image and channel, detached (no gradient through W).
    """

    def __call__(self, prediction: Tensor, target: Tensor, pixel_mask: Tensor) -> Tensor:
        delta = torch.fft.fft2(prediction.float(), norm="ortho") - torch.fft.fft2(
            target.float(), norm="ortho"
        )  # (B, C, H, W) complex
        distance = delta.real**2 + delta.imag**2
        weight = torch.log1p(distance.sqrt()).detach()
        weight = weight / weight.amax(dim=(-2, -1), keepdim=True).clamp(min=1e-12)
        return (weight * distance).mean()


LOSSES: dict[str, type] = {
    "msssim_l1": MSSSIML1Loss,
    "masked_l1": MaskedL1Loss,
    "focal_frequency": FocalFrequencyLoss,
}


class WeightedLoss:
    """sum_i weight_i * loss_i; `components` gives the unweighted terms for logging."""

    def __init__(self, terms: Mapping[str, tuple[float, Loss]]) -> None:
        if not terms:
            raise SpecError(f"a loss needs at least one term; valid names: {sorted(LOSSES)}")
        self.terms = dict(terms)

    def components(
        self, prediction: Tensor, target: Tensor, pixel_mask: Tensor
    ) -> dict[str, Tensor]:
        return {
            name: loss(prediction, target, pixel_mask) for name, (_, loss) in self.terms.items()
        }

    def __call__(self, prediction: Tensor, target: Tensor, pixel_mask: Tensor) -> Tensor:
        parts = self.components(prediction, target, pixel_mask)
        return sum(weight * parts[name] for name, (weight, _) in self.terms.items())


def build_loss(weights: Mapping[str, float], **options: Mapping[str, object]) -> WeightedLoss:
    """{"msssim_l1": 1.0, "focal_frequency": 0.1} -> their weighted sum. `options` gives
    constructor arguments per name, e.g. msssim_l1={"win_size": 7}."""
    unknown = sorted(set(weights) - set(LOSSES)) + sorted(set(options) - set(weights))
    if unknown:
        raise SpecError(f"unknown or unweighted losses {unknown}; valid names: {sorted(LOSSES)}")
    for name, weight in weights.items():
        if not isinstance(weight, (int, float)) or weight < 0:
            raise SpecError(f"loss weight for {name!r} must be a number >= 0, got {weight!r}")
    return WeightedLoss(
        {
            name: (float(weight), LOSSES[name](**options.get(name, {})))
            for name, weight in weights.items()
        }
    )
