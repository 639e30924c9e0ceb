"""Selective masking (SMIR, arXiv 2512.06981): mask the patches the model reconstructs worst."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from smsweep.method.masking.base import MaskingStrategy
from smsweep.method.masking.fills import Fill, MeanFill
from smsweep.method.masking.scorer import check_scorer_settings, patch_loss_scores


class SelectiveMasking(MaskingStrategy):
    """The round(ratio * N) patches with the highest reconstruction loss.

    Scores come from `scorer.patch_loss_scores`: K = `samples` masked variants per image
    (`sampling` "random" as in the paper, or "complementary"), each masked at `ratio` and filled
    with `fill`, reconstructed by the model (eval mode, no grad, mode restored); the per-pixel
    loss ssim_weight * (1 - SSIM 3x3) + l1_weight * L1, with SSIM windows that stay inside the
    patch, is averaged per patch over the samples that masked it. Patches masked in none of the
    K samples all get the image's mean score (see `patch_loss_scores`); these ties are broken
    at random (`scores_can_tie`): per batch from the generator, after the scores; for masks made
    from `seeded_scores`, by `MaskTable.from_scores(..., tie_seeds=seeds)`.

    In SMIR the scoring model is the one trained on the previous partition, and the masks are
    computed once per partition; calling this strategy per batch with the current model works
    too but costs K forwards per image.
    """

    name = "selective"
    scores_can_tie = True  # the never-masked rule gives those patches one score

    @classmethod
    def from_spec(cls, masking, fill) -> SelectiveMasking:
        return cls(
            masking.patch_size,
            masking.ratio,
            samples=masking.samples,
            sampling=masking.sampling,
            fill=fill,
            ssim_weight=masking.ssim_weight,
            l1_weight=masking.l1_weight,
        )

    def __init__(
        self,
        patch_size: int = 16,
        ratio: float = 0.5,
        samples: int = 5,
        sampling: str = "random",
        fill: Fill | None = None,
        ssim_weight: float = 1.0,
        l1_weight: float = 1.0,
        chunk_size: int = 64,
    ) -> None:
        super().__init__(patch_size, ratio)
        check_scorer_settings(samples, sampling, ssim_weight, l1_weight, chunk_size)
        self.samples = samples
        self.sampling = sampling
        self.fill = fill if fill is not None else MeanFill()
        self.ssim_weight = float(ssim_weight)
        self.l1_weight = float(l1_weight)
        self.chunk_size = chunk_size

    def scores(
        self, images: Tensor, generator: torch.Generator, model: nn.Module | None = None
    ) -> Tensor:
        return self._scores(images, model, generator=generator)  # (B, h, w)

    def seeded_scores(
        self, images: Tensor, seeds: Sequence[int], model: nn.Module | None = None
    ) -> Tensor:
        return self._scores(images, model, seeds=seeds)  # (B, h, w), one forward for all B*K

    def _scores(
        self,
        images: Tensor,
        model: nn.Module | None,
        *,
        generator: torch.Generator | None = None,
        seeds: Sequence[int] | None = None,
    ) -> Tensor:
        return patch_loss_scores(
            self._require_model(model),
            images,
            patch_size=self.patch_size,
            ratio=self.ratio,
            samples=self.samples,
            fill=self.fill,
            generator=generator,
            seeds=seeds,
            sampling=self.sampling,
            ssim_weight=self.ssim_weight,
            l1_weight=self.l1_weight,
            chunk_size=self.chunk_size,
        )
