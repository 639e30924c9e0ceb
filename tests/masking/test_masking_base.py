"""top_k_mask, mask counts, PatchMask pixels."""

from __future__ import annotations

import pytest
import torch

from smsweep.masking import PatchMask, mask_count, top_k_mask, upsample_mask


@pytest.mark.parametrize(
    ("num_patches", "ratio", "expected"), [(16, 0.5, 8), (9, 0.5, 5), (10, 0.3, 3), (4, 0.1, 0)]
)
def test_mask_count_rounds_half_up(num_patches, ratio, expected):
    assert mask_count(num_patches, ratio) == expected


def test_top_k_mask_takes_the_highest_scores_exactly():
    scores = torch.rand(3, 5, 7, generator=torch.Generator().manual_seed(0))
    mask = top_k_mask(scores, 0.4)
    count = mask_count(35, 0.4)
    assert mask.dtype == torch.bool and mask.shape == (3, 5, 7)
    assert mask.flatten(1).sum(1).tolist() == [count] * 3
    for image_scores, image_mask in zip(scores, mask, strict=True):
        assert image_scores[image_mask].min() > image_scores[~image_mask].max()


def test_top_k_mask_breaks_ties_by_lower_index():
    scores = torch.zeros(1, 2, 3)
    scores[0, 1, 2] = 1.0
    mask = top_k_mask(scores, 0.5)  # 3 of 6: the top one, then ties in row-major order
    assert mask.flatten().tolist() == [True, True, False, False, False, True]


def test_pixels_paint_whole_patches():
    grid = torch.tensor([[[True, False], [False, True]]])
    pixels = PatchMask(grid, 3).pixels()
    assert pixels.shape == (1, 1, 6, 6)
    assert pixels[0, 0, :3, :3].all() and pixels[0, 0, 3:, 3:].all()
    assert not pixels[0, 0, :3, 3:].any() and not pixels[0, 0, 3:, :3].any()
    assert torch.equal(upsample_mask(grid, 3), pixels)
