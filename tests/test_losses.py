"""Reconstruction losses: MS-SSIM scale adaptation, agreement with pytorch-msssim, gradients."""

from __future__ import annotations

import pytest
import pytorch_msssim
import torch

from smsweep.errors import SpecError
from smsweep.method.losses import (
    FocalFrequencyLoss,
    MaskedL1Loss,
    MSSSIML1Loss,
    build_loss,
    ms_ssim,
    msssim_levels,
)
from smsweep.method.models import tiny_unet


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _pair(size: int, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    target = torch.rand(batch, 3, size, size, generator=seeded(0))
    noisy = (target + 0.1 * torch.randn(target.shape, generator=seeded(1))).clamp(0, 1)
    return noisy, target


@pytest.mark.parametrize(
    ("size", "levels"), [(11, 1), (20, 1), (21, 2), (32, 2), (64, 3), (161, 5)]
)
def test_levels_adapt_to_the_image_size(size, levels):
    assert msssim_levels(size, win_size=11) == levels


def test_too_small_images_are_a_spec_error():
    with pytest.raises(SpecError, match="smaller win_size"):
        msssim_levels(10, win_size=11)


def test_ms_ssim_matches_pytorch_msssim_where_it_applies():
    prediction, target = _pair(176, batch=1)  # > (11 - 1) * 16: all five scales
    expected = pytorch_msssim.ms_ssim(prediction, target, data_range=1.0)
    torch.testing.assert_close(ms_ssim(prediction, target), expected, atol=1e-5, rtol=0)
    prediction, target = _pair(32)
    single = pytorch_msssim.ssim(prediction, target, data_range=1.0)
    torch.testing.assert_close(ms_ssim(prediction, target, levels=1), single, atol=1e-5, rtol=0)


@pytest.mark.parametrize("size", [32, 64])
def test_msssim_l1_trains_a_unet_at_small_sizes(size):
    torch.manual_seed(0)
    model = tiny_unet()
    images = torch.rand(2, 3, size, size, generator=seeded(2))
    mask = torch.zeros(2, 1, size, size, dtype=torch.bool)
    loss = build_loss({"msssim_l1": 1.0, "focal_frequency": 0.1, "masked_l1": 1.0})(
        model(images), images, mask
    )
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_identical_images_cost_nothing():
    _, target = _pair(32)
    mask = torch.ones(2, 1, 32, 32, dtype=torch.bool)
    for loss in (MSSSIML1Loss(), MaskedL1Loss(), FocalFrequencyLoss()):
        assert float(loss(target, target, mask)) == pytest.approx(0.0, abs=1e-6)


def test_masked_l1_only_counts_masked_pixels():
    target = torch.zeros(1, 2, 2, 2)
    prediction = torch.tensor([[[[1.0, 9.0], [9.0, 9.0]], [[3.0, 9.0], [9.0, 9.0]]]])
    mask = torch.tensor([[[[True, False], [False, False]]]])
    assert float(MaskedL1Loss()(prediction, target, mask)) == 2.0  # (1 + 3) / 2 channels
    nothing = MaskedL1Loss()(prediction.requires_grad_(), target, torch.zeros_like(mask))
    nothing.backward()
    assert float(nothing.detach()) == 0.0


def test_focal_frequency_weights_are_detached():
    prediction, target = _pair(16)
    prediction.requires_grad_(True)
    FocalFrequencyLoss()(prediction, target, None).backward()
    # with W held constant, d/dx mean(W |dF|^2) = 2 W-weighted residual; compare to autograd
    reference = prediction.detach().clone().requires_grad_(True)
    delta = torch.fft.fft2(reference, norm="ortho") - torch.fft.fft2(target, norm="ortho")
    distance = delta.real**2 + delta.imag**2
    weight = torch.log1p(distance.sqrt()).detach()
    weight = weight / weight.amax(dim=(-2, -1), keepdim=True)
    (weight * distance).mean().backward()
    torch.testing.assert_close(prediction.grad, reference.grad)


def test_weighted_sum_and_components():
    prediction, target = _pair(32)
    mask = torch.rand(2, 1, 32, 32, generator=seeded(3)) > 0.5
    loss = build_loss({"msssim_l1": 1.0, "focal_frequency": 0.5}, msssim_l1={"win_size": 7})
    parts = loss.components(prediction, target, mask)
    assert set(parts) == {"msssim_l1", "focal_frequency"}
    torch.testing.assert_close(
        loss(prediction, target, mask), parts["msssim_l1"] + 0.5 * parts["focal_frequency"]
    )


@pytest.mark.parametrize(
    ("weights", "options", "match"),
    [
        ({"perceptual": 1.0}, {}, "valid names"),
        ({"msssim_l1": -1.0}, {}, ">= 0"),
        ({"msssim_l1": 1.0}, {"masked_l1": {}}, "unweighted"),
        ({"msssim_l1": 1.0}, {"msssim_l1": {"win_size": 4}}, "odd integer"),
    ],
)
def test_bad_loss_specs_are_spec_errors(weights, options, match):
    with pytest.raises(SpecError, match=match):
        build_loss(weights, **options)
