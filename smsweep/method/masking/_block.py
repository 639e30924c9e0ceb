"""Blockwise masking (BEiT, arXiv 2106.08254, Algorithm 1): random rectangles of patches.

Rectangles with area in [min_block_patches, patches still to mask] and aspect ratio in
[min_aspect, 1/min_aspect] (log-uniform) are added until the count is reached. BEiT's loop may
stop short (it gives up after 10 attempts without progress); the scores then fill the gap: block
patches score 1 + noise/2, the others noise/2, and `top_k_mask` takes exactly round(ratio * N).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from smsweep.errors import SpecError
from smsweep.method.masking.base import (
    MaskingStrategy,
    mask_count,
    patch_grid,
    to_device,
    uniform_noise,
)

_ATTEMPTS = 10  # BEiT's attempts per block before giving up


class BlockMasking(MaskingStrategy):
    """Contiguous blocks of patches, BEiT-style, exactly round(ratio * N) patches per image."""

    name = "block"

    def __init__(
        self,
        patch_size: int = 16,
        ratio: float = 0.5,
        min_block_patches: int = 4,
        min_aspect: float = 0.3,
    ) -> None:
        super().__init__(patch_size, ratio)
        if not isinstance(min_block_patches, int) or min_block_patches < 1:
            raise SpecError(f"min_block_patches must be an integer >= 1, got {min_block_patches!r}")
        if not 0.0 < min_aspect <= 1.0:
            raise SpecError(f"min_aspect must be in (0, 1] (BEiT: 0.3), got {min_aspect!r}")
        self.min_block_patches = min_block_patches
        self.min_aspect = float(min_aspect)

    def scores(
        self, images: Tensor, generator: torch.Generator, model: nn.Module | None = None
    ) -> Tensor:
        height, width = patch_grid(images, self.patch_size)
        target = mask_count(height * width, self.ratio)
        blocks = torch.stack(
            [self._blocks(height, width, target, generator) for _ in range(images.shape[0])]
        )  # (B, h, w) bool
        noise = uniform_noise((images.shape[0], height, width), generator, images)
        return to_device(blocks, images.device).float() + 0.5 * noise

    def _blocks(self, height: int, width: int, target: int, generator: torch.Generator) -> Tensor:
        """One image's union of rectangles: (h, w) bool with at most `target` True."""
        mask = torch.zeros(height, width, dtype=torch.bool)
        count = 0
        while count < target:
            added = self._add_block(mask, target - count, generator)
            if added == 0:
                break
            count += added
        return mask

    def _add_block(self, mask: Tensor, budget: int, generator: torch.Generator) -> int:
        """Try to add one rectangle adding 1..budget new patches; return how many it added."""
        height, width = mask.shape
        log_aspect = (math.log(self.min_aspect), -math.log(self.min_aspect))
        for _ in range(_ATTEMPTS):
            area_draw, aspect_draw = torch.rand(2, generator=generator).tolist()
            area = self.min_block_patches + (budget - self.min_block_patches) * area_draw
            aspect = math.exp(log_aspect[0] + (log_aspect[1] - log_aspect[0]) * aspect_draw)
            block_h = round(math.sqrt(area * aspect))
            block_w = round(math.sqrt(area / aspect))
            if 0 < block_h < height and 0 < block_w < width:
                top = int(torch.randint(0, height - block_h + 1, (1,), generator=generator))
                left = int(torch.randint(0, width - block_w + 1, (1,), generator=generator))
                window = mask[top : top + block_h, left : left + block_w]
                new = block_h * block_w - int(window.sum())
                if 0 < new <= budget:
                    window.fill_(True)
                    return new
        return 0
