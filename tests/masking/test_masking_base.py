"""top_k_mask, mask counts, PatchMask pixels."""

from __future__ import annotations

import pytest
import torch

from smsweep.method.masking import PatchMask, mask_count, top_k_mask, upsample_mask
from smsweep.method.masking.base import random_tie_keys


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


def one_top_patch() -> torch.Tensor:
    scores = torch.zeros(1, 2, 3)  # (B, h, w): five tied patches and one top patch
    scores[0, 1, 2] = 1.0
    return scores


def test_top_k_mask_without_tie_keys_breaks_ties_by_lower_index():
    mask = top_k_mask(one_top_patch(), 0.5)  # 3 of 6: the top one, then ties in row-major order
    assert mask.flatten().tolist() == [True, True, False, False, False, True]


def test_tie_keys_break_ties_and_never_override_scores():
    keys = torch.tensor([[[5, 4, 3], [0, 1, 2]]])  # among equal scores, the lower key first
    mask = top_k_mask(one_top_patch(), 0.5, keys)  # the top one (key 2), then keys 0 and 1
    assert mask.flatten().tolist() == [False, False, False, True, True, True]
    continuous = torch.rand(3, 5, 7, generator=torch.Generator().manual_seed(0))
    shuffled = random_tie_keys((5, 7), [torch.Generator().manual_seed(1)] * 3, continuous.device)
    assert torch.equal(top_k_mask(continuous, 0.4, shuffled), top_k_mask(continuous, 0.4))


def test_top_k_mask_rejects_tie_keys_of_another_shape():
    with pytest.raises(ValueError, match="one key per patch"):
        top_k_mask(torch.zeros(2, 3, 3), 0.5, torch.zeros(2, 9))


def test_random_tie_keys_are_a_seeded_permutation_per_image():
    generators = [torch.Generator().manual_seed(seed) for seed in (0, 1)]
    keys = random_tie_keys((3, 4), generators, torch.device("cpu"))  # (B, h, w)
    assert keys.shape == (2, 3, 4)
    for image_keys in keys:
        assert sorted(image_keys.flatten().tolist()) == list(range(12))
    again = random_tie_keys((3, 4), [torch.Generator().manual_seed(1)], torch.device("cpu"))
    assert torch.equal(again[0], keys[1])  # image 1's keys come from its own generator only
    assert not torch.equal(keys[0], keys[1])


def test_pixels_paint_whole_patches():
    grid = torch.tensor([[[True, False], [False, True]]])
    pixels = PatchMask(grid, 3).pixels()
    assert pixels.shape == (1, 1, 6, 6)
    assert pixels[0, 0, :3, :3].all() and pixels[0, 0, 3:, 3:].all()
    assert not pixels[0, 0, :3, 3:].any() and not pixels[0, 0, 3:, :3].any()
    assert torch.equal(upsample_mask(grid, 3), pixels)
