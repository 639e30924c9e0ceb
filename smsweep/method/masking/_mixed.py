"""Mix-and-Mask: each batch is randomly masked with one of two (patch size, ratio) configs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from smsweep.errors import SpecError
from smsweep.method.masking._random import RandomMasking
from smsweep.method.masking.base import MaskingStrategy, PatchMask, check_patch_size, check_ratio


class MixedMasking(MaskingStrategy):
    """Random masking whose (patch size, ratio) is drawn per batch: `second` with probability
    `second_probability`, else `first`. The returned PatchMask carries the chosen patch size."""

    name = "mixed"

    @classmethod
    def from_spec(cls, masking, fill) -> MixedMasking:
        return cls(
            first=(masking.patch_size, masking.ratio),
            second=(masking.mixed.patch_size, masking.mixed.ratio),
            second_probability=masking.mixed.probability,
        )

    def __init__(
        self,
        first: Sequence[float] = (16, 0.5),
        second: Sequence[float] = (32, 0.5),
        second_probability: float = 0.5,
    ) -> None:
        self.choices = (_random_from_pair(first, "first"), _random_from_pair(second, "second"))
        if not 0.0 <= second_probability <= 1.0:
            raise SpecError(f"second_probability must be in [0, 1], got {second_probability!r}")
        self.second_probability = float(second_probability)

    @property
    def configs(self) -> tuple[tuple[int, float], ...]:
        return tuple((choice.patch_size, choice.ratio) for choice in self.choices)

    def choose(self, generator: torch.Generator) -> RandomMasking:
        """Draw this batch's config (one uniform draw from `generator`)."""
        second = float(torch.rand(1, generator=generator)) < self.second_probability
        return self.choices[1] if second else self.choices[0]

    def scores(
        self, images: Tensor, generator: torch.Generator, model: nn.Module | None = None
    ) -> Tensor:
        """The chosen config's scores, (B, H/p, W/p): the grid shape tells which p was drawn.
        Use `__call__` to get a mask with its patch size."""
        return self.choose(generator).scores(images, generator, model)

    def seeded_scores(
        self, images: Tensor, seeds: Sequence[int], model: nn.Module | None = None
    ) -> Tensor:
        raise TypeError(
            "mixed masking draws its (patch size, ratio) once per batch, so per-image scores "
            "would mix grid shapes: call it per batch, strategy(images, generator)"
        )

    def __call__(
        self, images: Tensor, generator: torch.Generator, model: nn.Module | None = None
    ) -> PatchMask:
        return self.choose(generator)(images, generator, model)


def _random_from_pair(pair: Sequence[float], which: str) -> RandomMasking:
    if len(pair) != 2:
        raise SpecError(f"{which} must be a (patch_size, ratio) pair, got {pair!r}")
    patch_size, ratio = pair
    return RandomMasking(check_patch_size(patch_size), check_ratio(ratio, name=f"{which} ratio"))
