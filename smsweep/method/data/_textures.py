"""`textures`: mosaics of irregular regions told apart by texture alone (texture segmentation).

Masked reconstruction learns local texture statistics; here that is exactly what segmentation
needs. Every image is a mosaic of smooth random blobs, each filled with its class's texture
family (stripes at a class-specific orientation, checks, dots, band-pass noise at a class-specific
scale, zigzags) with a random phase and a slight orientation and period jitter. Colour says
nothing: every texture is standardized (mean 0, std 1 over the image) and drawn with the one
colour pair of its image, so all classes share the same colour and brightness statistics.

Class 0, `background_blotches`, covers 35-60% of each image (~47% on average); the others share
the rest. With 3 or more classes the last, `rare_zigzag`, is a small blob in ~15% of the images,
so per-class effects show (with 2 classes there is no rare class). The classes survive the
pipelines' augmentations: a horizontal flip keeps horizontal and vertical stripes and turns
diagonal ones into the other diagonal (no other class has it), and the scale classes (blotches,
speckle) are more than 3x apart. Lengths scale with `image_size`; periods stay >= 3 px. A 64x64
image takes about a millisecond.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from smsweep.method.data.generated import GeneratedSource

if TYPE_CHECKING:
    from smsweep.spec.config import DataConfig

BACKGROUND = "background_blotches"
COMMON_TEXTURES = (
    "horizontal_stripes",
    "vertical_stripes",
    "checks",
    "dots",
    "fine_speckle",
    "diagonal_stripes",
)
RARE_TEXTURE = "rare_zigzag"
RARE_PROBABILITY = 0.15
BACKGROUND_SHARE = (0.35, 0.60)  # drawn per image
MIN_CLASSES, MAX_CLASSES = 2, 2 + len(COMMON_TEXTURES)  # background + common textures + rare

# A texture: pixel coordinates yy (S, 1), xx (1, S), image size, rng -> (S, S) float32 pattern.
Texture = Callable[[np.ndarray, np.ndarray, int, np.random.Generator], np.ndarray]


def _period(size: int, fraction: float, rng: np.random.Generator) -> float:
    """`fraction` of the image side, jittered by +-10%, never under 3 pixels."""
    return max(3.0, size * fraction * rng.uniform(0.9, 1.1))


def _rotated(yy: np.ndarray, xx: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates along (u) and across (v) the direction `angle`; both (S, S)."""
    u = xx * np.cos(angle) + yy * np.sin(angle)
    v = yy * np.cos(angle) - xx * np.sin(angle)
    return u, v


def _stripes(degrees: float, fraction: float) -> Texture:
    """A sine grating whose bars run at `degrees` (+-8), period `fraction` of the image side."""

    def draw(yy, xx, size, rng):
        angle = np.deg2rad(degrees + 90 + rng.uniform(-8, 8))  # the wave runs across the bars
        u, _ = _rotated(yy, xx, angle)
        return np.sin(2 * np.pi * u / _period(size, fraction, rng) + rng.uniform(0, 2 * np.pi))

    return draw


def _band_noise(fraction: float, waves: int = 12) -> Texture:
    """Isotropic band-pass noise: `waves` cosines in random directions at one scale."""

    def draw(yy, xx, size, rng):
        frequency = 2 * np.pi / _period(size, fraction, rng)
        angles = rng.uniform(0, np.pi, waves)
        scales = frequency * rng.uniform(0.85, 1.15, waves)
        phases = rng.uniform(0, 2 * np.pi, waves)
        # sum_k cos(a_k x + b_k y + phase_k), separated as one (S, waves) @ (waves, S) product.
        along_x = np.exp(1j * (np.outer(scales * np.cos(angles), xx.ravel()) + phases[:, None]))
        along_y = np.exp(1j * np.outer(yy.ravel(), scales * np.sin(angles)))
        return (along_y @ along_x).real.astype(np.float32)

    return draw


def _lattice(yy, xx, size, rng, fraction):
    """cos(u) + cos(v) of a randomly rotated square lattice, in [-2, 2]; (S, S)."""
    u, v = _rotated(yy, xx, rng.uniform(0, np.pi / 2))
    period = _period(size, fraction, rng)
    phase_u, phase_v = rng.uniform(0, 2 * np.pi, 2)
    return np.cos(2 * np.pi * u / period + phase_u) + np.cos(2 * np.pi * v / period + phase_v)


def _checks(yy, xx, size, rng):
    u, v = _rotated(yy, xx, rng.uniform(0, np.pi / 2))
    period = _period(size, 1 / 6, rng)  # one dark and one light square
    phase_u, phase_v = rng.uniform(0, 2 * np.pi, 2)
    return np.sign(
        np.sin(2 * np.pi * u / period + phase_u) * np.sin(2 * np.pi * v / period + phase_v)
    )


def _dots(yy, xx, size, rng):
    return (_lattice(yy, xx, size, rng, 1 / 8) > 1.0).astype(np.float32)


def _zigzag(yy, xx, size, rng):
    u, v = _rotated(yy, xx, rng.uniform(0, np.pi))
    period = _period(size, 1 / 8, rng)
    teeth = 1.5 * period
    triangle = np.abs((u / teeth + rng.uniform(0, 1)) % 1 - 0.5) * 2  # 0..1 along the bars
    return np.sin(2 * np.pi * (v + 0.8 * period * triangle) / period + rng.uniform(0, 2 * np.pi))


TEXTURES: dict[str, Texture] = {
    BACKGROUND: _band_noise(1 / 6),
    "horizontal_stripes": _stripes(0, 1 / 8),
    "vertical_stripes": _stripes(90, 1 / 8),
    "checks": _checks,
    "dots": _dots,
    "fine_speckle": _band_noise(1 / 20),
    "diagonal_stripes": _stripes(45, 1 / 8),
    RARE_TEXTURE: _zigzag,
}


@dataclass(frozen=True)
class TexturesSource(GeneratedSource):
    """`num_images` texture mosaics of `image_size` pixels with `num_classes` classes (2..8)."""

    kind = "textures"
    prefix = "texture"
    min_classes, max_classes = MIN_CLASSES, MAX_CLASSES
    default_rare_share = RARE_PROBABILITY

    @property
    def has_rare(self) -> bool:
        return self.num_classes >= 3

    @property
    def class_names(self) -> tuple[str, ...]:
        if not self.has_rare:
            return (BACKGROUND, COMMON_TEXTURES[0])
        return (BACKGROUND, *COMMON_TEXTURES[: self.num_classes - 2], RARE_TEXTURE)

    def _make(self, i: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        size = self.image_size
        common = self.num_classes - 2 if self.has_rare else 1
        mask = _region_map(rng, size, common)
        if self.has_rare and rng.random() < self.rare_probability:
            mask[_rare_blob(rng, size)] = self.num_classes - 1
        yy, xx = np.ogrid[0:size, 0:size]
        yy, xx = yy.astype(np.float32), xx.astype(np.float32)  # (S, 1), (1, S)
        pattern = np.zeros((size, size), np.float32)  # each class's standardized texture
        for class_id in np.unique(mask).tolist():
            field = TEXTURES[self.class_names[class_id]](yy, xx, size, rng)
            field = (field - field.mean()) / max(float(field.std()), 1e-6)
            pattern[mask == class_id] = field[mask == class_id]
        return _colourize(rng, pattern, yy, xx), mask


def open_textures(cfg: DataConfig, *, seed: int = 0) -> TexturesSource:
    """The textures source for `cfg` (`cfg.path` is ignored)."""
    return TexturesSource(cfg.num_images, cfg.image_size, cfg.num_classes, seed, cfg.rare_share)


def _smooth_field(rng: np.random.Generator, size: int, nodes: int) -> np.ndarray:
    """A smooth random field (S, S): Gaussian bumps of random height on a (nodes+2)^2 grid."""
    centres = (np.arange(-1, nodes + 1, dtype=np.float32) + 0.5) * size / nodes
    pixels = np.arange(size, dtype=np.float32)[:, None]
    weights = np.exp(-0.5 * ((pixels - centres) / (0.6 * size / nodes)) ** 2)  # (S, nodes+2)
    heights = rng.normal(size=(nodes + 2, nodes + 2)).astype(np.float32)
    return weights @ heights @ weights.T


def _region_map(rng: np.random.Generator, size: int, common: int) -> np.ndarray:
    """Class ids (S, S) uint8: background (0) blobs on a share drawn from BACKGROUND_SHARE, the
    rest split into 2-4 irregular regions, each of a class drawn from 1..common."""
    background = _smooth_field(rng, size, 4) + 0.35 * _smooth_field(rng, size, 9)
    background_pixels = int(rng.uniform(*BACKGROUND_SHARE) * size * size)
    threshold = np.partition(background.ravel(), background_pixels)[background_pixels]
    regions = np.stack([_smooth_field(rng, size, 3) for _ in range(int(rng.integers(2, 5)))])
    region_classes = rng.integers(1, common + 1, len(regions)).astype(np.uint8)
    mask = region_classes[np.argmax(regions, axis=0)]  # (S, S)
    mask[background < threshold] = 0
    return mask


def _rare_blob(rng: np.random.Generator, size: int) -> np.ndarray:
    """A small irregular blob (S, S) bool: a disk whose radius wobbles with the angle."""
    radius = size * rng.uniform(0.09, 0.13)
    cy, cx = rng.uniform(radius, size - radius, 2)
    yy, xx = np.ogrid[0:size, 0:size]
    dy, dx = yy - cy, xx - cx
    angle = np.arctan2(dy, dx)
    wobble = 1 + sum(
        rng.uniform(0, 0.2) * np.cos(k * angle + rng.uniform(0, 2 * np.pi)) for k in (2, 3)
    )
    return np.hypot(dy, dx) <= radius * wobble


def _colourize(
    rng: np.random.Generator, pattern: np.ndarray, yy: np.ndarray, xx: np.ndarray
) -> np.ndarray:
    """RGB uint8 (S, S, 3) of a standardized pattern (S, S), drawn with one colour pair for the
    whole image (`middle` -+ `direction` / 2), a mild shading gradient and sensor noise."""
    size = pattern.shape[0]
    middle = rng.uniform(85, 170, 3).astype(np.float32)
    direction = rng.uniform(-1, 1, 3).astype(np.float32)
    direction *= rng.uniform(120, 180) / max(float(np.linalg.norm(direction)), 1e-6)
    shade_angle = rng.uniform(0, 2 * np.pi)
    shade = 12 * (np.cos(shade_angle) * xx + np.sin(shade_angle) * yy) / size  # (S, S)
    level = np.clip(0.2 * pattern, -0.5, 0.5)  # std 0.2, clipped at 2.5 std: inside the pair
    image = middle + level[:, :, None] * direction + shade[:, :, None]  # (S, S, 3)
    image += rng.normal(0.0, 4.0, image.shape).astype(np.float32)  # sensor noise
    return np.clip(image, 0, 255).astype(np.uint8)
