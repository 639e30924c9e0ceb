"""Saliency-guided masking (arXiv 2309.12757) with SCDA saliency from the current encoder.

SCDA: sum the encoder's deepest feature map over channels; foreground = positions above the
spatial mean (optionally only the largest 4-connected component, via scipy.ndimage.label). The
foreground is brought to pixels (nearest), and a patch is foreground when at least half of its
pixels are.

`saliency`: the k = round(ratio * N) masked patches are split between foreground and background
in proportion to their areas, k_fg = round(k * N_fg / N) (clamped so both groups can supply
their share), random within each group. `saliency_hard`: foreground first, k_fg = min(k, N_fg),
the rest from the background (the paper's hard views: most of the object hidden).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.ndimage
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from smsweep.method.masking.base import (
    MaskingStrategy,
    evaluating,
    mask_count,
    patch_grid,
    uniform_noise,
)


class SaliencyMasking(MaskingStrategy):
    """Masked patches split between foreground and background in proportion to their areas."""

    name = "saliency"
    hard = False

    @classmethod
    def from_spec(cls, masking, fill) -> SaliencyMasking:
        return cls(masking.patch_size, masking.ratio, masking.largest_component)

    def __init__(
        self, patch_size: int = 16, ratio: float = 0.5, largest_component: bool = True
    ) -> None:
        super().__init__(patch_size, ratio)
        self.largest_component = bool(largest_component)

    def scores(
        self, images: Tensor, generator: torch.Generator, model: nn.Module | None = None
    ) -> Tensor:
        height, width = patch_grid(images, self.patch_size)
        noise = uniform_noise((images.shape[0], height * width), generator, images)  # (B, N)
        return self._scores(images, model, noise)

    def seeded_scores(
        self, images: Tensor, seeds: Sequence[int], model: nn.Module | None = None
    ) -> Tensor:
        """One encoder forward for the batch; each image's noise from its own seed."""
        if len(seeds) != images.shape[0]:
            raise ValueError(f"got {len(seeds)} seeds for {images.shape[0]} images")
        height, width = patch_grid(images, self.patch_size)
        noise = torch.cat(
            [
                uniform_noise((1, height * width), torch.Generator().manual_seed(int(s)), images)
                for s in seeds
            ]
        )  # (B, N)
        return self._scores(images, model, noise)

    def _scores(self, images: Tensor, model: nn.Module | None, noise: Tensor) -> Tensor:
        height, width = patch_grid(images, self.patch_size)
        fraction = foreground_fraction(
            self._require_model(model), images, self.patch_size, self.largest_component
        )
        foreground = (fraction >= 0.5).flatten(1)  # (B, N)
        num_patches = height * width
        count = mask_count(num_patches, self.ratio)
        num_foreground = foreground.sum(dim=1)  # (B,)
        if self.hard:
            k_foreground = num_foreground.clamp(max=count)
        else:
            proportional = torch.floor(count * num_foreground / num_patches + 0.5).long()
            lowest = (count - (num_patches - num_foreground)).clamp(min=0)
            k_foreground = torch.minimum(torch.maximum(proportional, lowest), num_foreground)
        chosen = _pick_in_group(noise, foreground, k_foreground) | _pick_in_group(
            noise, ~foreground, count - k_foreground
        )
        return (chosen.float() + 0.5 * noise).view(-1, height, width)  # chosen ones rank first


class HardSaliencyMasking(SaliencyMasking):
    """Foreground patches first (random among them), background only if there are too few."""

    name = "saliency_hard"
    hard = True


def foreground_fraction(
    model: nn.Module, images: Tensor, patch_size: int, largest_component: bool = False
) -> Tensor:
    """SCDA foreground share of each patch: images (B, C, H, W) -> (B, H/p, W/p) in [0, 1].

    `model.encoder(images)[-1]` must be the deepest feature map (smp encoders, MaskedUnet).
    Runs in eval mode without grad and restores the model's mode.
    """
    with evaluating(model):
        deepest = model.encoder(images)[-1]  # (B, C', h', w')
    activation = deepest.float().sum(dim=1)  # (B, h', w')
    foreground = activation > activation.mean(dim=(1, 2), keepdim=True)
    if largest_component:
        foreground = largest_components(foreground)
    pixels = F.interpolate(foreground[:, None].float(), size=images.shape[-2:], mode="nearest")
    return F.avg_pool2d(pixels, patch_size).squeeze(1)


def largest_components(masks: Tensor) -> Tensor:
    """Keep only the largest 4-connected component of each (B, h, w) bool mask."""
    kept = []
    for mask in masks.cpu().numpy():
        labels, count = scipy.ndimage.label(mask)
        if count > 1:
            sizes = np.bincount(labels.ravel())[1:]  # background label 0 dropped
            mask = labels == 1 + int(np.argmax(sizes))
        kept.append(torch.from_numpy(np.asarray(mask, dtype=bool)))
    return torch.stack(kept).to(masks.device)


def _pick_in_group(noise: Tensor, group: Tensor, count: Tensor) -> Tensor:
    """`count[b]` random members of `group[b]`: noise, group (B, N), count (B,) -> (B, N) bool."""
    key = torch.where(group, noise, torch.full_like(noise, -1.0))  # non-members sort last
    rank = key.argsort(dim=1, descending=True).argsort(dim=1)  # 0 = highest noise
    return group & (rank < count[:, None])
