"""Mask galleries: one row per image — image | loss map | selected mask | reconstruction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from smsweep.method.masking import PatchMask
from smsweep.method.masking.base import evaluating
from smsweep.method.masking.fills import Fill
from smsweep.method.masking.loss_map import pixel_loss_map
from smsweep.method.precision import FLOAT32, Precision

GAP = 2  # pixels between tiles


def gallery_rows(
    model: nn.Module,
    images: Tensor,
    mask: PatchMask,
    fill: Fill,
    generator: torch.Generator,
    precision: Precision = FLOAT32,
) -> np.ndarray:
    """The gallery of `images` (n, 3, H, W) under `mask`, as uint8 (n*(H+GAP), 4*(W+GAP), 3).

    The loss map is the per-pixel (1 - SSIM 3x3) + L1 of the model's reconstruction (the
    quantity selective masking ranks patches by), scaled to its maximum; the mask column shows
    masked patches dimmed to black. The forward runs in `precision`, the loss map in float32.
    """
    pixel_mask = mask.pixels().to(images.device)  # (n, 1, H, W)
    with evaluating(model), precision.context(images.device):
        reconstruction = model(fill(images, pixel_mask, generator), pixel_mask)
    reconstruction = reconstruction.float().clamp(0, 1)
    loss = pixel_loss_map(reconstruction, images, patch_size=mask.patch_size)  # (n, H, W)
    loss = (loss / loss.amax(dim=(1, 2), keepdim=True).clamp(min=1e-8)).unsqueeze(1)
    heat = torch.cat([loss, loss**2, (1 - loss) * 0.3], dim=1)  # dark blue -> orange/white
    masked = images * (~pixel_mask) + 0.15 * images * pixel_mask
    columns = [images, heat, masked, reconstruction]
    tiles = torch.stack(columns, dim=1).float().cpu()  # (n, 4, 3, H, W)
    grid = torch.nn.functional.pad(tiles, (0, GAP, 0, GAP), value=1.0)
    n, cols, channels, height, width = grid.shape
    grid = grid.permute(0, 3, 1, 4, 2).reshape(n * height, cols * width, channels)
    return (grid.numpy() * 255).round().astype(np.uint8)


def save_gallery(rows: np.ndarray, path: Path, min_tile: int = 128) -> Path:
    """Write the gallery as PNG, small tiles enlarged (nearest) to about `min_tile` pixels."""
    scale = max(1, -(-min_tile * 4 // rows.shape[1]))
    image = Image.fromarray(rows)
    if scale > 1:
        image = image.resize((rows.shape[1] * scale, rows.shape[0] * scale), Image.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
