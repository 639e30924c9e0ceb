"""Random masking (MAE): uniform noise scores, so the top k is a uniform random subset."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from smsweep.method.masking.base import MaskingStrategy, patch_grid, uniform_noise


class RandomMasking(MaskingStrategy):
    """Uniformly random patches, exactly round(ratio * N) per image, new draws every call."""

    name = "random"

    def scores(
        self, images: Tensor, generator: torch.Generator, model: nn.Module | None = None
    ) -> Tensor:
        height, width = patch_grid(images, self.patch_size)
        return uniform_noise((images.shape[0], height, width), generator, images)  # (B, h, w)
