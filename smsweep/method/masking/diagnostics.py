"""Mechanism diagnostics: where do masks fall relative to the labels?

The SMIR claim is that selective masks favour semantically hard regions (boundaries, textures,
rare classes). These pure functions measure that on labeled images, so a sweep can log it per
partition: the share of masked patches that touch a class boundary (against the share of all
patches, the random-masking expectation) and each class's share of masked vs. all pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from smsweep.method.masking.base import PatchMask


def boundary_patches(labels: Tensor, patch_size: int, ignore_index: int = 255) -> Tensor:
    """Patches holding >= 2 distinct non-ignore labels: labels (B, H, W) long -> (B, h, w) bool."""
    classes = [int(c) for c in torch.unique(labels) if int(c) != ignore_index]
    distinct = torch.zeros(
        labels.shape[0],
        labels.shape[1] // patch_size,
        labels.shape[2] // patch_size,
        dtype=torch.long,
        device=labels.device,
    )
    for value in classes:  # one pooled map per class present, not per patch
        present = F.max_pool2d((labels == value).float().unsqueeze(1), patch_size)  # (B, 1, h, w)
        distinct += present.squeeze(1).long()
    return distinct >= 2


def mask_diagnostics(labels: Tensor, mask: PatchMask, ignore_index: int = 255) -> dict[str, float]:
    """Diagnostics of one batch: labels (B, H, W) long (ignore_index = unlabeled) and its mask.

    Returns
    - "boundary_fraction": masked patches touching a boundary / masked patches (nan if none
      is masked);
    - "boundary_fraction_all": patches touching a boundary / all patches (what random masking
      gives in expectation);
    - for every class c present: "mask_share/c" = masked pixels of class c / masked labeled
      pixels (nan if no labeled pixel is masked), and "image_share/c" = pixels of class c /
      labeled pixels. Ignored pixels count in neither denominator.
    """
    pixels = mask.pixels().squeeze(1).to(labels.device)  # (B, H, W) bool
    if labels.shape != pixels.shape:
        raise ValueError(
            f"labels {tuple(labels.shape)} and mask pixels {tuple(pixels.shape)} differ in "
            f"shape: pass the labels of the masked images"
        )
    grid = mask.grid.to(labels.device)
    boundary = boundary_patches(labels, mask.patch_size, ignore_index)
    masked = int(grid.sum())
    result = {
        "boundary_fraction": float((boundary & grid).sum()) / masked if masked else float("nan"),
        "boundary_fraction_all": float(boundary.float().mean()),
    }
    labeled = labels != ignore_index
    masked_labeled = int((pixels & labeled).sum())
    total_labeled = int(labeled.sum())
    for value in sorted(int(c) for c in torch.unique(labels[labeled])):
        of_class = labels == value
        in_mask = int((of_class & pixels).sum())
        result[f"mask_share/{value}"] = in_mask / masked_labeled if masked_labeled else float("nan")
        result[f"image_share/{value}"] = int(of_class.sum()) / total_labeled
    return result
