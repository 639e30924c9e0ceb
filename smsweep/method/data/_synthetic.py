"""`synthetic`: procedural scenes, generated lazily in `load(i)` and deterministic from (seed, i).

A smooth background (class 0: a gradient plus low-frequency waves) under 2-4 shapes. Each class has
its own shape *and* texture, and every instance gets random colours, size, rotation and position,
so the class is told by shape and texture, not colour. The last class, `rare_star`, appears in
~12% of the images (`data.rare_share`) and is small: per-class effects (the paper's gains on weak
classes) show on it.
All lengths scale with `image_size`. A 64x64 image takes well under a millisecond or two.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from smsweep.method.data.generated import GeneratedSource

if TYPE_CHECKING:
    from smsweep.spec.config import DataConfig

COMMON_SHAPES = ("disk", "square", "triangle", "ellipse", "ring", "cross")
RARE_SHAPE = "rare_star"
RARE_PROBABILITY = 0.12
COMMON_RADIUS = (0.10, 0.22)  # an instance's radius, as a share of the image's side
RARE_RADIUS = (0.08, 0.11)
MIN_CLASSES, MAX_CLASSES = 3, 2 + len(COMMON_SHAPES)  # background + common shapes + rare

# Shape tests in the instance's rotated frame: a, b (pixels from the centre), radius -> inside.
Shape = Callable[[np.ndarray, np.ndarray, float], np.ndarray]
# Textures: a, b, image_size, rng -> values in [0, 1] that blend the instance's two colours.
Texture = Callable[[np.ndarray, np.ndarray, int, np.random.Generator], np.ndarray]


def _polygon(sides: int, apothem_ratio: float) -> Shape:
    angles = np.pi / 2 + 2 * np.pi * np.arange(sides) / sides

    def inside(a: np.ndarray, b: np.ndarray, radius: float) -> np.ndarray:
        projections = [a * np.cos(t) + b * np.sin(t) for t in angles]
        return np.max(projections, axis=0) <= radius * apothem_ratio

    return inside


SHAPES: dict[str, Shape] = {
    "disk": lambda a, b, r: a**2 + b**2 <= r**2,
    "square": _polygon(4, 0.75),
    "triangle": _polygon(3, 0.55),
    "ellipse": lambda a, b, r: (a / r) ** 2 + (b / (0.5 * r)) ** 2 <= 1,
    "ring": lambda a, b, r: ((0.55 * r) ** 2 <= a**2 + b**2) & (a**2 + b**2 <= r**2),
    "cross": lambda a, b, r: (
        ((np.abs(a) <= 0.3 * r) & (np.abs(b) <= r)) | ((np.abs(b) <= 0.3 * r) & (np.abs(a) <= r))
    ),
    RARE_SHAPE: lambda a, b, r: np.hypot(a, b) <= r * (0.7 + 0.3 * np.cos(5 * np.arctan2(b, a))),
}

TEXTURES: dict[str, Texture] = {
    "disk": lambda a, b, s, rng: (np.sin(2 * np.pi * a / (s / 16)) > 0).astype(np.float32),
    "square": lambda a, b, s, rng: (np.floor(a / (s / 12)) + np.floor(b / (s / 12))) % 2,
    "triangle": lambda a, b, s, rng: (
        ((a % (s / 10)) - s / 20) ** 2 + ((b % (s / 10)) - s / 20) ** 2 < (s / 30) ** 2
    ).astype(np.float32),
    "ellipse": lambda a, b, s, rng: rng.random(a.shape, dtype=np.float32),
    "ring": lambda a, b, s, rng: np.full(a.shape, 0.25, np.float32),
    "cross": lambda a, b, s, rng: np.clip(0.5 + a / (s / 4), 0, 1),
    RARE_SHAPE: lambda a, b, s, rng: (np.sin(2 * np.pi * np.hypot(a, b) / (s / 20)) > 0).astype(
        np.float32
    ),
}


@dataclass(frozen=True)
class SyntheticSource(GeneratedSource):
    """`num_images` scenes of `image_size` pixels with `num_classes` classes (3..8), all labeled."""

    kind = "synthetic"
    prefix = "synth"
    min_classes, max_classes = MIN_CLASSES, MAX_CLASSES
    default_rare_share = RARE_PROBABILITY

    @property
    def class_names(self) -> tuple[str, ...]:
        return ("background", *COMMON_SHAPES[: self.num_classes - 2], RARE_SHAPE)

    def _make(self, i: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        size = self.image_size
        image = _background(rng, size)  # (S, S, 3) float32, 0..255
        mask = np.zeros((size, size), np.uint8)
        common = self.num_classes - 2
        for _ in range(int(rng.integers(2, 5))):
            class_id = int(rng.integers(1, common + 1))
            radius = size * rng.uniform(*COMMON_RADIUS)
            _draw(image, mask, rng, COMMON_SHAPES[class_id - 1], class_id, radius)
        if rng.random() < self.rare_probability:  # drawn last: never occluded
            radius = size * rng.uniform(*RARE_RADIUS)
            _draw(image, mask, rng, RARE_SHAPE, self.num_classes - 1, radius)
        image += rng.normal(0.0, 4.0, image.shape).astype(np.float32)  # sensor noise
        return np.clip(image, 0, 255).astype(np.uint8), mask


def open_synthetic(cfg: DataConfig, *, seed: int = 0) -> SyntheticSource:
    """The synthetic source for `cfg` (`cfg.path` is ignored)."""
    return SyntheticSource(cfg.num_images, cfg.image_size, cfg.num_classes, seed, cfg.rare_share)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.ogrid[0:size, 0:size]
    yy, xx = yy.astype(np.float32) / size, xx.astype(np.float32) / size  # (S, 1), (1, S)
    angle = rng.uniform(0, 2 * np.pi)
    field = 50 * (np.cos(angle) * xx + np.sin(angle) * yy - 0.5)  # gradient
    for _ in range(2):  # low-frequency waves, 1-3 cycles per image
        fy, fx = rng.uniform(1, 3, size=2)
        field = field + 15 * np.sin(2 * np.pi * (fx * xx + fy * yy) + rng.uniform(0, 2 * np.pi))
    base = rng.uniform(60, 200, size=3).astype(np.float32)
    tint = rng.uniform(0.5, 1.0, size=3).astype(np.float32)
    return base + field[:, :, None] * tint  # (S, S, 3)


def _draw(
    image: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    shape: str,
    class_id: int,
    radius: float,
) -> None:
    """Paint one textured instance into `image` and its class id into `mask`, in place."""
    size = image.shape[0]
    cy, cx = rng.uniform(0.5 * radius, size - 0.5 * radius, size=2)  # at least ~half visible
    angle = rng.uniform(0, 2 * np.pi)
    reach = 1.15 * radius  # every shape fits in this circle (square corners: 1.06 r)
    y0, y1 = max(0, int(cy - reach)), min(size, int(cy + reach) + 2)
    x0, x1 = max(0, int(cx - reach)), min(size, int(cx + reach) + 2)
    v, u = np.ogrid[y0:y1, x0:x1]
    v, u = v.astype(np.float32) - cy, u.astype(np.float32) - cx  # (h, 1), (1, w)
    a = u * np.cos(angle) + v * np.sin(angle)  # (h, w) rotated frame
    b = v * np.cos(angle) - u * np.sin(angle)
    inside = SHAPES[shape](a, b, radius)
    texture = TEXTURES[shape](a, b, size, rng)[inside][:, None]  # (n, 1) in [0, 1]
    dark = rng.uniform(0, 255, size=3).astype(np.float32)
    light = (dark + 128) % 256  # 128 apart per channel: the texture always shows
    image[y0:y1, x0:x1][inside] = dark * (1 - texture) + light * texture
    mask[y0:y1, x0:x1][inside] = class_id
