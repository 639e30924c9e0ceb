"""The selective-masking score written literally, step by step as the SMIR paper describes it.

For each image, for each of the K samples: mask the sampled patches, reconstruct the single
masked image, cut every masked patch out of the reconstruction and the image, and compute its
per-pixel loss (1 - SSIM with a 3x3 window inside the patch) + L1; add the patch's mean loss to
its running sum. A patch's score is its sum divided by the number of samples that masked it
(never-masked patches: the mean of the image's masked-at-least-once patch scores).

It is slow on purpose and only exists so tests can hold `scorer.patch_loss_scores` to it. The
draws (masks, fill noise) come from the same functions in the same order, so both paths see the
same masked images; everything after the draws is computed independently here: masks are
painted patch by patch, each patch is cut out and zero-padded, and its SSIM windows are nine
explicit shifts, with a padded "inside the patch" indicator counting each window's pixels
(the vectorized path weights shifted slices of the whole image instead).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from smsweep.method.masking.base import evaluating, patch_grid
from smsweep.method.masking.fills import Fill
from smsweep.method.masking.loss_map import SSIM_C1, SSIM_C2
from smsweep.method.masking.scorer import (
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
                )[0].float()  # (C, H, W)
                masked = [
                    (row, col)
                    for row in range(height)
                    for col in range(width)
                    if grid[sample, row, col]
                ]
                recon_patches = torch.stack([_cut(recon, at, patch_size) for at in masked])
                image_patches = torch.stack([_cut(image, at, patch_size) for at in masked])
                losses = _literal_patch_losses(recon_patches, image_patches, ssim_weight, l1_weight)
                for (row, col), loss in zip(masked, losses.tolist(), strict=True):
                    sums[row][col] += loss
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


def _cut(image: Tensor, at: tuple[int, int], patch_size: int) -> Tensor:
    """The patch at grid position (row, col) of a (C, H, W) image: (C, p, p)."""
    row, col = at
    rows = slice(row * patch_size, (row + 1) * patch_size)
    cols = slice(col * patch_size, (col + 1) * patch_size)
    return image[:, rows, cols]


def _literal_patch_losses(
    recon: Tensor, target: Tensor, ssim_weight: float, l1_weight: float
) -> Tensor:
    """Patches cut out of the image, (M, C, p, p) pairs -> each patch's mean loss, (M,).

    Per pixel: weighted (1 - SSIM) and L1, averaged over channels, then over the patch's pixels.
    A pixel's SSIM window is its 3x3 neighbourhood inside its patch: each patch is padded with
    zeros, so a neighbour outside it adds nothing, and a padded indicator of "inside the patch"
    counts the pixels each window holds (9, 6 on an edge, 4 in a corner, 1 when p = 1).
    """
    size = recon.shape[-1]
    x = F.pad(recon, (1, 1, 1, 1))  # zeros around each patch: (M, C, p+2, p+2)
    y = F.pad(target, (1, 1, 1, 1))
    inside = F.pad(torch.ones(size, size, dtype=recon.dtype, device=recon.device), (1, 1, 1, 1))
    count = torch.zeros(size, size, dtype=recon.dtype, device=recon.device)
    sum_x = sum_y = sum_xx = sum_yy = sum_xy = torch.zeros_like(recon)
    for dy in range(3):
        for dx in range(3):
            window_x = x[..., dy : dy + size, dx : dx + size]
            window_y = y[..., dy : dy + size, dx : dx + size]
            count = count + inside[dy : dy + size, dx : dx + size]
            sum_x = sum_x + window_x
            sum_y = sum_y + window_y
            sum_xx = sum_xx + window_x * window_x
            sum_yy = sum_yy + window_y * window_y
            sum_xy = sum_xy + window_x * window_y
    mu_x, mu_y = sum_x / count, sum_y / count
    var_x = sum_xx / count - mu_x * mu_x
    var_y = sum_yy / count - mu_y * mu_y
    cov = sum_xy / count - mu_x * mu_y
    ssim = ((2 * mu_x * mu_y + SSIM_C1) * (2 * cov + SSIM_C2)) / (
        (mu_x * mu_x + mu_y * mu_y + SSIM_C1) * (var_x + var_y + SSIM_C2)
    )
    per_pixel = ssim_weight * (1 - ssim) + l1_weight * (recon - target).abs()  # (M, C, p, p)
    return per_pixel.mean(dim=1).mean(dim=(1, 2))
