"""The per-pixel loss map: SSIM windows stay inside each patch, so a patch's loss is its own."""

from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn.functional as F

from smsweep.method.masking.loss_map import (
    SSIM_C1,
    compiled_patch_mean_losses,
    patch_mean_losses,
    pixel_loss_map,
    ssim_map,
    window_sums,
)


def noise(*shape: int, seed: int) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def test_window_counts_are_the_pixels_of_the_window_inside_the_patch():
    x = torch.full((1, 1, 8, 8), 0.5)
    (sum_x, *_), count = window_sums(x, x, patch_size=4)
    expected_row = torch.tensor([2.0, 3.0, 3.0, 2.0] * 2)  # edge, inside, inside, edge
    assert torch.equal(count, expected_row[:, None] * expected_row[None, :])  # 4, 6 or 9
    assert torch.equal(sum_x[0, 0], 0.5 * count)
    _, single = window_sums(x, x, patch_size=1)
    assert torch.equal(single, torch.ones(8, 8))


def test_a_patch_loss_depends_on_its_own_pixels_only():
    reconstruction, target = noise(1, 3, 32, 32, seed=0), noise(1, 3, 32, 32, seed=1)
    loss = pixel_loss_map(reconstruction, target, patch_size=8)  # (1, H, W)
    inside = (slice(None), slice(8, 16), slice(16, 24))  # grid position (1, 2)
    changed_reconstruction, changed_target = reconstruction.clone(), target.clone()
    outside = torch.ones(32, 32, dtype=torch.bool)
    outside[8:16, 16:24] = False
    changed_reconstruction[..., outside] = noise(1, 3, int(outside.sum()), seed=2)
    changed_target[..., outside] = noise(1, 3, int(outside.sum()), seed=3)
    changed = pixel_loss_map(changed_reconstruction, changed_target, patch_size=8)
    assert torch.equal(changed[inside], loss[inside])
    assert not torch.equal(changed[:, outside], loss[:, outside])


def test_a_patch_at_the_border_scores_like_the_same_patch_inside():
    reconstruction, target = noise(1, 3, 24, 24, seed=4), noise(1, 3, 24, 24, seed=5)
    patch_reconstruction, patch_target = noise(1, 3, 8, 8, seed=6), noise(1, 3, 8, 8, seed=7)
    corner, centre = (slice(0, 8), slice(0, 8)), (slice(8, 16), slice(8, 16))
    for rows, cols in (corner, centre):
        reconstruction[..., rows, cols] = patch_reconstruction
        target[..., rows, cols] = patch_target
    loss = pixel_loss_map(reconstruction, target, patch_size=8)  # (1, H, W)
    torch.testing.assert_close(loss[:, 0:8, 0:8], loss[:, 8:16, 8:16], rtol=0, atol=1e-7)


def test_without_a_patch_size_the_whole_image_is_one_patch():
    reconstruction, target = noise(2, 3, 16, 16, seed=8), noise(2, 3, 16, 16, seed=9)
    torch.testing.assert_close(
        pixel_loss_map(reconstruction, target),
        pixel_loss_map(reconstruction, target, patch_size=16),
        rtol=0,
        atol=0,
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_pixel_patches_compare_luminance_only(dtype):
    x, y = noise(1, 3, 4, 4, seed=10).to(dtype), noise(1, 3, 4, 4, seed=11).to(dtype)
    luminance = (2 * x * y + SSIM_C1) / (x * x + y * y + SSIM_C1)  # no variance in one pixel
    torch.testing.assert_close(ssim_map(x, y, patch_size=1), luminance)


def test_the_out_of_place_patch_means_are_the_loss_map_s():
    x, y = noise(3, 3, 24, 32, seed=1), noise(3, 3, 24, 32, seed=2)
    eager = F.avg_pool2d(pixel_loss_map(x, y, 0.7, 1.3, patch_size=8).unsqueeze(1), 8)
    means = patch_mean_losses(x, y, 0.7, 1.3, patch_size=8)
    torch.testing.assert_close(means, eager.squeeze(1), atol=1e-6, rtol=0)


@pytest.mark.skipif(shutil.which("g++") is None, reason="torch.compile on a CPU needs g++")
def test_the_compiled_patch_means_are_the_loss_map_s():
    """One small compile (about 20 s on 2 cores): what the scorer runs on a GPU."""
    x, y = noise(2, 3, 16, 16, seed=3), noise(2, 3, 16, 16, seed=4)
    eager = F.avg_pool2d(pixel_loss_map(x, y, 1.0, 1.0, patch_size=8).unsqueeze(1), 8)
    compiled = compiled_patch_mean_losses()(x, y, 1.0, 1.0, patch_size=8)
    torch.testing.assert_close(compiled, eager.squeeze(1), atol=1e-6, rtol=0)
