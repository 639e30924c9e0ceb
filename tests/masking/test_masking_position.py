"""Selective masks have no position artifacts: on i.i.d. noise reconstructed by a model that
returns its input, every patch is equally hard, so every grid row and the border ring must be
masked at the ratio.

Two artifacts this catches: ties between never-masked patches broken in row-major order (a
top-of-image bias), and SSIM windows that reach into visible neighbours everywhere but at the
image border (border patches look harder).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from smsweep.method.masking import SelectiveMasking
from smsweep.method.pretrain import MaskTable, derived_seed

IMAGES, SIZE, PATCH, RATIO = 256, 64, 8, 0.5
SIGMAS = 5  # a rate off by more than 5 binomial standard errors is a bias, not noise


class Identity(nn.Module):
    """Reconstructs the filled input as it is: every masked patch of noise is equally hard."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@pytest.fixture(scope="module")
def noise() -> torch.Tensor:
    return torch.rand(IMAGES, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


def tolerance(trials: int) -> float:
    """SIGMAS binomial standard errors of a rate measured over `trials` patches. Each image
    masks exactly round(ratio * N) patches, which only narrows the spread."""
    return SIGMAS * math.sqrt(RATIO * (1 - RATIO) / trials)


def assert_every_position_masked_at_the_ratio(grids: torch.Tensor) -> None:
    """grids: (B, h, w) bool masks of i.i.d. images."""
    images, height, width = grids.shape
    rate = grids.float().mean(dim=0)  # (h, w): how often each position is masked
    ring = torch.ones(height, width, dtype=torch.bool)
    ring[1:-1, 1:-1] = False
    row_rates = rate.mean(dim=1)  # (h,)
    border, interior = rate[ring].mean(), rate[~ring].mean()
    report = (
        f"rows {[round(r, 3) for r in row_rates.tolist()]}, "
        f"border {float(border):.3f}, interior {float(interior):.3f}"
    )
    row_tolerance = tolerance(images * width)
    assert ((row_rates - RATIO).abs() <= row_tolerance).all(), (report, row_tolerance)
    border_tolerance = tolerance(images * int(ring.sum()))
    interior_tolerance = tolerance(images * int((~ring).sum()))
    assert abs(float(border) - RATIO) <= border_tolerance, (report, border_tolerance)
    assert abs(float(interior) - RATIO) <= interior_tolerance, (report, interior_tolerance)


SETTINGS = pytest.mark.parametrize(
    ("sampling", "samples"),
    [(sampling, k) for sampling in ("random", "complementary") for k in (1, 3, 5)],
)


@SETTINGS
def test_seeded_scores_through_the_mask_table_mask_every_position_at_the_ratio(
    noise, sampling, samples
):
    strategy = SelectiveMasking(PATCH, RATIO, samples=samples, sampling=sampling)
    seeds = [derived_seed(0, index) for index in range(IMAGES)]
    scores = strategy.seeded_scores(noise, seeds, Identity())  # (B, h, w)
    table = MaskTable.from_scores(range(IMAGES), scores, RATIO, PATCH, tie_seeds=seeds)
    assert_every_position_masked_at_the_ratio(torch.stack(list(table.grids.values())))


@SETTINGS
def test_per_batch_masks_mask_every_position_at_the_ratio(noise, sampling, samples):
    strategy = SelectiveMasking(PATCH, RATIO, samples=samples, sampling=sampling)
    mask = strategy(noise, torch.Generator().manual_seed(1), Identity())
    assert_every_position_masked_at_the_ratio(mask.grid)
