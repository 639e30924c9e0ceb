"""Fills: unmasked pixels untouched, masked ones replaced as documented, registry, gradients."""

from __future__ import annotations

import pickle

import pytest
import torch

from smsweep.errors import SpecError
from smsweep.method.masking import FILLS, build_fill
from smsweep.method.masking.fills import TokenFill, gaussian_blur


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def masked() -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.rand(2, 3, 16, 16, generator=seeded(0))
    pixel_mask = torch.zeros(2, 1, 16, 16, dtype=torch.bool)
    pixel_mask[:, :, :8, :8] = True
    return images, pixel_mask


@pytest.mark.parametrize("name", sorted(FILLS))
def test_fill_keeps_unmasked_pixels_and_is_reproducible(name, masked):
    images, pixel_mask = masked
    fill = pickle.loads(pickle.dumps(build_fill(name)))
    out = fill(images, pixel_mask, seeded(1))
    assert out.shape == images.shape
    keep = ~pixel_mask.expand_as(images)
    assert torch.equal(out[keep], images[keep])
    assert not torch.equal(out, images)
    assert torch.equal(out, fill(images, pixel_mask, seeded(1)))


def test_mean_zero_and_blur_values(masked):
    images, pixel_mask = masked
    mean = build_fill("mean")(images, pixel_mask)
    torch.testing.assert_close(mean[1, 2, 0, 0], images[1, 2].mean())
    assert build_fill("zero")(images, pixel_mask)[:, :, :8, :8].abs().sum() == 0
    flat = torch.full((1, 1, 20, 20), 0.3)
    torch.testing.assert_close(gaussian_blur(flat, 4.0), flat)  # replicate padding: no dark rim


def test_token_fill_learns(masked):
    images, pixel_mask = masked
    fill = TokenFill(channels=3)
    fill(images, pixel_mask).sum().backward()
    assert fill.token.grad is not None and fill.token.grad.abs().sum() > 0


def test_noise_fill_needs_a_generator(masked):
    with pytest.raises(ValueError, match="Generator"):
        build_fill("noise")(*masked)


def test_unknown_fill_lists_valid_names():
    with pytest.raises(SpecError, match="valid fills"):
        build_fill("checker")
