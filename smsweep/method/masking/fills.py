"""What masked pixels are replaced with before the image reaches the model.

Every fill has one call shape: `fill(images, pixel_mask, generator) -> images`, with images
(B, C, H, W) in [0, 1] and pixel_mask (B, 1, H, W) bool (True = masked). Unmasked pixels are
returned unchanged. Fills that draw random numbers use `generator` (a CPU generator) so the
masked inputs are reproducible; the others ignore it and say so with `draws = False`, which lets
the selective scorer fill many images' variants in one call (a fill without the attribute is
treated as one that draws: called image by image, right after that image's masks are drawn).

The A2MIM mask token added inside the encoder (not at the input) lives in
`smsweep.method.models.MaskedUnet`; `TokenFill` is the input-level learnable token.
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from smsweep.errors import SpecError
from smsweep.method.masking.base import to_device


@runtime_checkable
class Fill(Protocol):
    def __call__(
        self, images: Tensor, pixel_mask: Tensor, generator: torch.Generator | None = None
    ) -> Tensor: ...


def _image_mean(images: Tensor) -> Tensor:
    return images.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)


class MeanFill:
    """Per-image, per-channel mean of the whole image (A2MIM, Mix-and-Mask): keeps the low
    frequencies of the input statistics so the model is not distracted by a colour shift."""

    draws = False

    def __call__(
        self, images: Tensor, pixel_mask: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        return torch.where(pixel_mask, _image_mean(images), images)

    def __repr__(self) -> str:
        return "MeanFill()"


class ZeroFill:
    """Zeros (black): the classic inpainting input."""

    draws = False

    def __call__(
        self, images: Tensor, pixel_mask: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        return images.masked_fill(pixel_mask, 0.0)

    def __repr__(self) -> str:
        return "ZeroFill()"


class NoiseFill:
    """Gaussian noise with each image's per-channel mean and std, clipped to [0, 1]."""

    draws = True

    def __call__(
        self, images: Tensor, pixel_mask: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        if generator is None:
            raise ValueError("NoiseFill draws noise: pass a seeded torch.Generator")
        noise = to_device(torch.randn(images.shape, generator=generator), images.device)
        noise = noise.to(images.dtype)
        std = images.std(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
        return torch.where(pixel_mask, (_image_mean(images) + std * noise).clamp(0, 1), images)

    def __repr__(self) -> str:
        return "NoiseFill()"


class BlurFill:
    """A strong Gaussian blur of the image (saliency-guided masking's "blurring"): removes
    high frequencies while avoiding the parasitic edges of a constant fill."""

    draws = False

    def __init__(self, sigma: float = 4.0) -> None:
        if not sigma > 0:
            raise SpecError(f"BlurFill sigma must be > 0 (pixels), got {sigma!r}")
        self.sigma = float(sigma)

    def __call__(
        self, images: Tensor, pixel_mask: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        return torch.where(pixel_mask, gaussian_blur(images, self.sigma), images)

    def __repr__(self) -> str:
        return f"BlurFill(sigma={self.sigma})"


class HighPassFill:
    """The image's high frequencies over its mean (saliency-guided masking's "high-pass
    filtering"): edges and texture stay, colour and shading go, without the parasitic edges of
    a constant fill."""

    draws = False

    def __init__(self, sigma: float = 2.0) -> None:
        if not sigma > 0:
            raise SpecError(f"HighPassFill sigma must be > 0 (pixels), got {sigma!r}")
        self.sigma = float(sigma)

    def __call__(
        self, images: Tensor, pixel_mask: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        detail = images - gaussian_blur(images, self.sigma) + _image_mean(images)
        return torch.where(pixel_mask, detail.clamp(0, 1), images)

    def __repr__(self) -> str:
        return f"HighPassFill(sigma={self.sigma})"


def gaussian_blur(images: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur, kernel 2*ceil(3 sigma)+1, replicate padding (any image size)."""
    radius = math.ceil(3 * sigma)
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    padded = F.pad(images, (radius, radius, radius, radius), mode="replicate")
    blurred = F.conv2d(padded, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
    return F.conv2d(blurred, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)


class TokenFill(nn.Module):
    """A learnable per-channel value at the input (a SimMIM-style mask token on pixels).

    It is a module: put its parameters in the optimizer with the model's.
    """

    draws = False

    def __init__(self, channels: int = 3, init: float = 0.5) -> None:
        super().__init__()
        if not isinstance(channels, int) or channels < 1:
            raise SpecError(f"TokenFill channels must be a positive integer, got {channels!r}")
        self.token = nn.Parameter(torch.full((1, channels, 1, 1), float(init)))

    def forward(
        self, images: Tensor, pixel_mask: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        return torch.where(pixel_mask, self.token.to(images.dtype), images)


FILLS: dict[str, type] = {
    "mean": MeanFill,
    "zero": ZeroFill,
    "noise": NoiseFill,
    "blur": BlurFill,
    "highpass": HighPassFill,
    "token": TokenFill,
}


def build_fill(name: str, **kwargs: object) -> Fill:
    """The fill registered as `name` (the YAML boundary); kwargs go to its constructor."""
    if name not in FILLS:
        raise SpecError(f"unknown fill {name!r}; valid fills: {sorted(FILLS)}")
    return FILLS[name](**kwargs)
