"""The selective-masking score written literally, step by step as the SMIR paper describes it.

For each image, for each of the K samples: mask the sampled patches, reconstruct the single
masked image, compute the per-pixel loss (1 - SSIM with a 3x3 window) + L1; for each patch masked
in that sample, add the mean loss over its pixels to the patch's running sum. A patch's score is
its sum divided by the number of samples that masked it (never-masked patches: the mean of the
image's masked-at-least-once patch scores).

It is slow on purpose and only exists so tests can hold `scorer.patch_loss_scores` to it. The
draws (masks, fill noise) come from the same functions in the same order, so both paths see the
same masked images; everything after the draws is computed independently here: the SSIM window
sums are nine explicit shifts instead of a pooling op, masks are painted patch by patch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from smsweep.masking.base import evaluating, patch_grid
from smsweep.masking.fills import Fill
from smsweep.masking.scorer import (
    SSIM_C1,
    SSIM_C2,
    per_image_generators,
    reconstruct,
    sample_masks,
)


def reference_patch_loss_scores(
    model: nn.Module,
    images: Tensor,
    *,
    patch_size: int,
    ratio: float,
    samples: int,
    fill: Fill,
    generator: torch.Generator | None = None,
    sampling: str = "random",
    ssim_weight: float = 1.0,
    l1_weight: float = 1.0,
    seeds: Sequence[int] | None = None,
) -> Tensor:
    """Same contract as `scorer.patch_loss_scores`, with loops: (B, H/p, W/p) float32."""
    height, width = patch_grid(images, patch_size)
    generators = per_image_generators(images.shape[0], generator, seeds)
    all_scores = []
    with evaluating(model):
        for image, image_generator in zip(images, generators, strict=True):
            grid = sample_masks(
                (height, width),
                ratio=ratio,
                samples=samples,
                sampling=sampling,
                generator=image_generator,
            )  # (K, h, w) bool
            pixel_masks = torch.zeros(samples, 1, *image.shape[1:], dtype=torch.bool)
            for sample in range(samples):
                for row in range(height):
                    for col in range(width):
                        if grid[sample, row, col]:
                            pixel_masks[
                                sample,
                                0,
                                row * patch_size : (row + 1) * patch_size,
                                col * patch_size : (col + 1) * patch_size,
                            ] = True
            pixel_masks = pixel_masks.to(images.device)
            # The fill sees the image's K variants at once, as in the vectorized path, so random
            # fills draw the same numbers.
            targets = image.unsqueeze(0).expand(samples, -1, -1, -1)
            filled = fill(targets, pixel_masks, image_generator)

            sums = [[0.0] * width for _ in range(height)]
            counts = [[0] * width for _ in range(height)]
            for sample in range(samples):
                recon = reconstruct(
                    model, filled[sample : sample + 1], pixel_masks[sample : sample + 1]
                )
                loss = _literal_loss_map(recon[0].float(), image, ssim_weight, l1_weight)  # (H, W)
                for row in range(height):
                    for col in range(width):
                        if grid[sample, row, col]:
                            patch = loss[
                                row * patch_size : (row + 1) * patch_size,
                                col * patch_size : (col + 1) * patch_size,
                            ]
                            sums[row][col] += float(patch.mean())
                            counts[row][col] += 1
            all_scores.append(_scores_with_rule(sums, counts))
    return torch.tensor(all_scores, dtype=torch.float32, device=images.device)


def _scores_with_rule(sums: list[list[float]], counts: list[list[int]]) -> list[list[float]]:
    """Mean per masked patch; never-masked patches get the mean of the masked ones."""
    seen = [
        total / count
        for sum_row, count_row in zip(sums, counts, strict=True)
        for total, count in zip(sum_row, count_row, strict=True)
        if count > 0
    ]
    fallback = sum(seen) / len(seen) if seen else 0.0
    return [
        [
            total / count if count > 0 else fallback
            for total, count in zip(sum_row, count_row, strict=True)
        ]
        for sum_row, count_row in zip(sums, counts, strict=True)
    ]


def _literal_loss_map(
    recon: Tensor, target: Tensor, ssim_weight: float, l1_weight: float
) -> Tensor:
    """(C, H, W) pair -> (H, W): (1 - SSIM) and L1, weighted, averaged over channels."""
    x = F.pad(recon.unsqueeze(0), (1, 1, 1, 1), mode="reflect")[0]  # (C, H+2, W+2)
    y = F.pad(target.unsqueeze(0), (1, 1, 1, 1), mode="reflect")[0]
    height, width = recon.shape[-2:]
    sum_x = sum_y = sum_xx = sum_yy = sum_xy = torch.zeros_like(recon)
    for dy in range(3):
        for dx in range(3):
            window_x = x[:, dy : dy + height, dx : dx + width]
            window_y = y[:, dy : dy + height, dx : dx + width]
            sum_x = sum_x + window_x
            sum_y = sum_y + window_y
            sum_xx = sum_xx + window_x * window_x
            sum_yy = sum_yy + window_y * window_y
            sum_xy = sum_xy + window_x * window_y
    mu_x, mu_y = sum_x / 9, sum_y / 9
    var_x = sum_xx / 9 - mu_x * mu_x
    var_y = sum_yy / 9 - mu_y * mu_y
    cov = sum_xy / 9 - mu_x * mu_y
    ssim = ((2 * mu_x * mu_y + SSIM_C1) * (2 * cov + SSIM_C2)) / (
        (mu_x * mu_x + mu_y * mu_y + SSIM_C1) * (var_x + var_y + SSIM_C2)
    )
    per_pixel = ssim_weight * (1 - ssim) + l1_weight * (recon - target).abs()  # (C, H, W)
    return per_pixel.mean(dim=0)
