"""No masking: the scratch baseline trains on intact images (zero masked patches)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from smsweep.method.masking.base import MaskingStrategy, check_patch_size, patch_grid


class NoMasking(MaskingStrategy):
    """Masks nothing. Scores are all zero and the ratio is fixed at 0."""

    name = "none"

    @classmethod
    def from_spec(cls, masking, fill) -> NoMasking:
        return cls(patch_size=masking.patch_size)

    def __init__(self, patch_size: int = 16) -> None:
        self.patch_size = check_patch_size(patch_size)
        self.ratio = 0.0

    def scores(
        self, images: Tensor, generator: torch.Generator, model: nn.Module | None = None
    ) -> Tensor:
        height, width = patch_grid(images, self.patch_size)
        return torch.zeros(images.shape[0], height, width, device=images.device)  # (B, h, w)
