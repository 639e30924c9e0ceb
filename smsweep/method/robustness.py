"""Robustness by factor (A2MIM measures it the ImageNet-X way): the final model's mIoU on the
validation split under one seeded shift per factor of variation.

Every shift takes a batch on any device, images float32 (B, 3, S, S) in [0, 1] and masks int64
(B, S, S) with 255 = ignore, and returns the shifted pair. Its draws come from the generator it is
given (CPU), so a shift is deterministic from its seed; only `scale` moves pixels, and it moves
the mask with the image (nearest neighbour, 255 where the image is padded). `severity` in (0, 1]
sets how strong each shift is. The seed follows the data (spec.seed), not the repeat, so every
trial of a sweep is scored on the same shifted images: robustness differences are paired.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from smsweep.method.data import IGNORE_INDEX
from smsweep.method.finetune import confusion_matrix, segmentation_metrics
from smsweep.method.precision import FLOAT32, Precision
from smsweep.spec.names import FACTORS, ROBUST_MEAN, ROBUST_PREFIX

Shift = Callable[[Tensor, Tensor, float, torch.Generator], tuple[Tensor, Tensor]]


def _uniform(shape: tuple[int, ...], generator: torch.Generator, like: Tensor) -> Tensor:
    return torch.rand(shape, generator=generator).to(like.device)


def _signs(count: int, generator: torch.Generator) -> Tensor:
    return torch.randint(0, 2, (count,), generator=generator).float() * 2 - 1


def occlusion(images: Tensor, masks: Tensor, severity: float, generator: torch.Generator):
    """Grey squares of side S/8 at random places, as many as would cover severity/2 of the
    image; the labels stay (the occluded object is still there, as in ImageNet-X)."""
    batch, _, size, _ = images.shape
    side = max(1, size // 8)
    count = max(1, round(severity * 0.5 * (size / side) ** 2))
    corners = torch.randint(0, size - side + 1, (batch, count, 2), generator=generator)
    corners = corners.to(images.device)
    pixels = torch.arange(size, device=images.device)
    rows = (pixels >= corners[..., :1]) & (pixels < corners[..., :1] + side)  # (B, n, S)
    cols = (pixels >= corners[..., 1:]) & (pixels < corners[..., 1:] + side)
    covered = (rows[..., :, None] & cols[..., None, :]).any(dim=1)  # (B, S, S)
    return images.masked_fill(covered[:, None], 0.5), masks


_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def colour(images: Tensor, masks: Tensor, severity: float, generator: torch.Generator):
    """Hue rotated by +-severity x 180 degrees, saturation and brightness scaled by
    1 +- severity/2 (signs drawn per image), in YIQ space."""
    batch = images.shape[0]
    angle = _signs(batch, generator) * severity * math.pi
    saturation = 1 + _signs(batch, generator) * severity / 2
    brightness = 1 + _signs(batch, generator) * severity / 2
    to_yiq = _TO_YIQ.to(images.device)
    yiq = torch.einsum("ij,bjhw->bihw", to_yiq, images)
    cos, sin = torch.cos(angle).to(images.device), torch.sin(angle).to(images.device)
    i, q = yiq[:, 1], yiq[:, 2]
    chroma = saturation.to(images.device)[:, None, None]
    rotated = torch.stack(
        [
            yiq[:, 0],
            chroma * (cos[:, None, None] * i - sin[:, None, None] * q),
            chroma * (sin[:, None, None] * i + cos[:, None, None] * q),
        ],
        dim=1,
    )
    rgb = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(to_yiq), rotated)
    return (rgb * brightness.to(images.device)[:, None, None, None]).clamp(0, 1), masks


def _gaussian_blur(images: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of (B, C, S, S), reflect-padded."""
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    padded = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    across = F.conv2d(padded, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
    return F.conv2d(across, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)


def blur(images: Tensor, masks: Tensor, severity: float, generator: torch.Generator):
    """Gaussian blur with sigma = severity x S/32 pixels (2 px at 64 px, severity 1)."""
    sigma = max(0.3, severity * images.shape[-1] / 32)
    return _gaussian_blur(images, sigma).clamp(0, 1), masks


def noise(images: Tensor, masks: Tensor, severity: float, generator: torch.Generator):
    """Gaussian pixel noise of standard deviation severity x 0.16 (clipped to [0, 1])."""
    drawn = torch.randn(images.shape, generator=generator).to(images.device)
    return (images + severity * 0.16 * drawn).clamp(0, 1), masks


def scale(images: Tensor, masks: Tensor, severity: float, generator: torch.Generator):
    """Zoom in or out (drawn per image) by 1 + severity: zooming in crops a random window,
    zooming out shrinks the image into the centre and pads (image 0, mask 255 = ignored). The
    mask is sampled on the same grid (nearest neighbour), so labels follow their pixels."""
    batch, _, size, _ = images.shape
    zoom = (1 + severity) ** _signs(batch, generator)  # > 1: zoom in
    room = (1 - 1 / zoom).clamp(min=0)  # how far a zoomed-in window can move
    shift = (_uniform((batch, 2), generator, zoom) * 2 - 1) * room[:, None]
    theta = torch.zeros(batch, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / zoom
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, [batch, 1, size, size], align_corners=False).to(images.device)
    shifted = F.grid_sample(images, grid, mode="bilinear", align_corners=False)
    labels = (masks[:, None].float() + 1).to(images.dtype)  # 0 after sampling = outside
    sampled = F.grid_sample(labels, grid, mode="nearest", align_corners=False)[:, 0].long() - 1
    sampled[sampled < 0] = IGNORE_INDEX
    return shifted.clamp(0, 1), sampled


def texture(images: Tensor, masks: Tensor, severity: float, generator: torch.Generator):
    """The fine detail (image minus a 1-pixel Gaussian blur) damped by 1 - severity and replaced
    in the same measure by band-pass noise of the detail's energy: texture statistics change,
    shapes, colours and labels stay."""
    base = _gaussian_blur(images, 1.0)
    detail = images - base
    drawn = torch.randn((images.shape[0], 1, *images.shape[2:]), generator=generator)
    band = drawn.to(images.device) - _gaussian_blur(drawn.to(images.device), 1.0)
    band = band / band.std(dim=(2, 3), keepdim=True).clamp(min=1e-6)
    energy = detail.std(dim=(1, 2, 3), keepdim=True)
    shifted = base + (1 - severity) * detail + severity * energy * band
    return shifted.clamp(0, 1), masks


SHIFTS: dict[str, Shift] = {
    "occlusion": occlusion,
    "colour": colour,
    "blur": blur,
    "noise": noise,
    "scale": scale,
    "texture": texture,
}


def shift_seed(seed: int, factor: str, batch: int) -> int:
    """The seed of one batch's shift: (seed, factor, batch), well mixed."""
    stream = FACTORS.index(factor)
    return int(np.random.SeedSequence((seed, 7, stream, batch)).generate_state(1)[0])


def shifted(
    batches: Iterable[tuple[Tensor, Tensor]], factor: str, severity: float, seed: int
) -> Iterable[tuple[Tensor, Tensor]]:
    """`batches` under the shift of `factor`, batch k drawn from `shift_seed(seed, factor, k)`."""
    shift = SHIFTS[factor]
    for number, (images, masks) in enumerate(batches):
        generator = torch.Generator().manual_seed(shift_seed(seed, factor, number))
        yield shift(images, masks, severity, generator)


def robust_metrics(
    model: torch.nn.Module,
    batches: Callable[[], Iterable[tuple[Tensor, Tensor]]],
    class_names: tuple[str, ...],
    *,
    factors: Iterable[str],
    severity: float,
    seed: int,
    precision: Precision = FLOAT32,
) -> dict[str, float]:
    """`robust/miou/<factor>` for every factor and their mean `robust/miou_mean`; `batches()`
    gives the validation batches afresh for each factor."""
    metrics = {}
    for factor in factors:
        confusion = confusion_matrix(
            model, shifted(batches(), factor, severity, seed), len(class_names), precision
        )
        metrics[ROBUST_PREFIX + factor] = segmentation_metrics(confusion, class_names)["miou"]
    values = [v for v in metrics.values() if math.isfinite(v)]
    metrics[ROBUST_MEAN] = sum(values) / len(values) if values else math.nan
    return metrics
