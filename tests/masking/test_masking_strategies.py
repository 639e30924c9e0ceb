"""Strategy-specific behaviour: saliency splits, mixed configs, block contiguity."""

from __future__ import annotations

import pytest
import scipy.ndimage
import torch
from torch import nn

from smsweep.errors import SpecError
from smsweep.method.masking import (
    BlockMasking,
    HardSaliencyMasking,
    MixedMasking,
    RandomMasking,
    SaliencyMasking,
    foreground_fraction,
    mask_count,
)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class _FeaturesAreTheImage(nn.Module):
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x]


class PixelSaliencyModel(nn.Module):
    """Its encoder's deepest feature map is the image: bright pixels are the foreground."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = _FeaturesAreTheImage()


def _bright_square(rows: slice, cols: slice, count: int = 2) -> torch.Tensor:
    images = torch.zeros(count, 3, 64, 64)
    images[:, :, rows, cols] = 1.0
    return images


@pytest.mark.parametrize("seed", range(4))
def test_saliency_splits_in_proportion_to_areas(seed):
    images = _bright_square(slice(0, 32), slice(0, 32))  # 16 of 64 patches (p=8) foreground
    mask = SaliencyMasking(patch_size=8, ratio=0.5)(images, seeded(seed), PixelSaliencyModel())
    foreground = mask.grid[:, :4, :4].flatten(1).sum(1)
    assert foreground.tolist() == [8, 8]  # round(32 * 16 / 64)
    assert mask.num_masked.tolist() == [32, 32]


def test_saliency_hard_masks_foreground_first():
    images = _bright_square(slice(0, 32), slice(0, 32))
    model = PixelSaliencyModel()
    hard = HardSaliencyMasking(patch_size=8, ratio=0.5)(images, seeded(0), model)
    assert hard.grid[:, :4, :4].all()  # all 16 foreground patches, then 16 background ones
    assert hard.num_masked.tolist() == [32, 32]
    few = HardSaliencyMasking(patch_size=8, ratio=0.125)(images, seeded(0), model)
    assert few.grid[:, :4, :4].flatten(1).sum(1).tolist() == [8, 8]
    assert not few.grid[:, 4:].any() and not few.grid[:, :, 4:].any()


def test_largest_component_drops_the_smaller_blob():
    images = _bright_square(slice(0, 32), slice(0, 32))
    images[:, :, 48:56, 48:56] = 1.0  # a second, one-patch blob
    model = PixelSaliencyModel()
    all_blobs = foreground_fraction(model, images, 8, largest_component=False)
    largest = foreground_fraction(model, images, 8, largest_component=True)
    assert int(all_blobs[0].sum()) == 17 and int(largest[0].sum()) == 16
    assert largest[0, 6, 6] == 0


@pytest.mark.parametrize("hard", [False, True])
def test_saliency_with_a_real_encoder_follows_the_rule(tiny_model, images, hard):
    cls = HardSaliencyMasking if hard else SaliencyMasking
    strategy = cls(patch_size=8, ratio=0.5, largest_component=False)
    mask = strategy(images, seeded(1), tiny_model)
    foreground = foreground_fraction(tiny_model, images, 8) >= 0.5
    k = mask_count(64, 0.5)
    for grid, fg in zip(mask.grid, foreground, strict=True):
        num_fg = int(fg.sum())
        expected = min(k, num_fg) if hard else int(k * num_fg / 64 + 0.5)
        assert 0 < num_fg < 64
        assert int((grid & fg).sum()) == expected


def test_mixed_uses_both_configs_with_their_counts():
    strategy = MixedMasking(first=(8, 0.25), second=(16, 0.5), second_probability=0.5)
    images = torch.rand(1, 3, 32, 32)
    generator = seeded(0)
    seen = {8: 0, 16: 0}
    for _ in range(200):
        mask = strategy(images, generator)
        seen[mask.patch_size] += 1
        expected = {8: mask_count(16, 0.25), 16: mask_count(4, 0.5)}[mask.patch_size]
        assert int(mask.num_masked[0]) == expected
    assert 70 < seen[8] < 130 and seen[8] + seen[16] == 200
    always_first = MixedMasking(first=(8, 0.25), second=(16, 0.5), second_probability=0.0)
    assert all(always_first(images, generator).patch_size == 8 for _ in range(20))


def test_mixed_rejects_bad_pairs():
    with pytest.raises(SpecError, match="pair"):
        MixedMasking(first=(8,))
    with pytest.raises(SpecError, match="second ratio"):
        MixedMasking(second=(8, 1.5))


def _components(grid: torch.Tensor) -> float:
    return sum(scipy.ndimage.label(g.numpy())[1] for g in grid) / len(grid)


def test_block_masks_are_contiguous_compared_to_random():
    images = torch.rand(4, 3, 128, 128)  # 16x16 patches of 8 px
    block = BlockMasking(patch_size=8, ratio=0.4)(images, seeded(0))
    random = RandomMasking(patch_size=8, ratio=0.4)(images, seeded(0))
    assert block.num_masked.tolist() == [mask_count(256, 0.4)] * 4
    assert _components(block.grid) < 0.5 * _components(random.grid)
