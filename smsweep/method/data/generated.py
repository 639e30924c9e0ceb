"""What the generated sources (`synthetic`, `textures`) share: their settings and checks, the
Source protocol around one `_make(i, rng)`, and a per-process memory of the images they draw.

The memory: an image takes ~1 ms to draw, which is a tenth of a 64-px training step on two CPU
cores, and a trial reads each image dozens of times (every pass, every validation). Kept up to a
byte budget, oldest out first; the arrays are read-only, so a caller that would change one in
place fails loudly instead of changing the cache."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from smsweep.errors import SpecError
from smsweep.method.data.base import Split

BUDGET_BYTES = 256 * 2**20
_remembered: OrderedDict[Hashable, tuple[np.ndarray, np.ndarray]] = OrderedDict()
_held = 0


def remembered(
    key: Hashable, generate: Callable[[], tuple[np.ndarray, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray]:
    """`generate()`'s (image, mask), made once per `key` in this process while they fit."""
    global _held
    found = _remembered.get(key)
    if found is not None:
        _remembered.move_to_end(key)
        return found
    image, mask = generate()
    for array in (image, mask):
        array.flags.writeable = False
    size = image.nbytes + mask.nbytes
    if size <= BUDGET_BYTES:
        _remembered[key] = (image, mask)
        _held += size
        while _held > BUDGET_BYTES:
            _, (old_image, old_mask) = _remembered.popitem(last=False)
            _held -= old_image.nbytes + old_mask.nbytes
    return image, mask


@dataclass(frozen=True)
class GeneratedSource:
    """`num_images` labelled images of `image_size` pixels with `num_classes` classes, drawn from
    (seed, i). A subclass names its `kind`, its class range and `class_names`, and draws image i
    in `_make(i, rng)`: (image (S, S, 3) uint8, mask (S, S) uint8)."""

    num_images: int
    image_size: int
    num_classes: int = 5
    seed: int = 0
    rare_share: float | None = None  # images holding the rare class; None: the source's own

    kind: ClassVar[str]  # the data.source name, in messages
    prefix: ClassVar[str]  # of image names
    min_classes: ClassVar[int]
    max_classes: ClassVar[int]
    default_rare_share: ClassVar[float]

    @property
    def rare_probability(self) -> float:
        """The chance that an image holds the rare class (`data.rare_share`)."""
        return self.default_rare_share if self.rare_share is None else self.rare_share

    def __post_init__(self) -> None:
        if not self.min_classes <= self.num_classes <= self.max_classes:
            raise SpecError(
                f"data.num_classes {self.num_classes} is out of range for the "
                f"{self.kind} source; use {self.min_classes}..{self.max_classes}"
            )
        if self.num_images < 1:
            raise SpecError(f"data.num_images is {self.num_images}; use at least 1")
        if self.image_size < 16:
            raise SpecError(f"data.image_size is {self.image_size}; use at least 16")
        if self.seed < 0:
            raise SpecError(f"seed is {self.seed}; use a non-negative integer")
        if self.rare_share is not None and not 0 < self.rare_share <= 1:
            raise SpecError(f"data.rare_share is {self.rare_share}; use a share in (0, 1]")

    def __len__(self) -> int:
        return self.num_images

    def has_mask(self, i: int) -> bool:
        return True

    def name(self, i: int) -> str:
        return f"{self.prefix}_{i:07d}"

    def official_split(self, i: int) -> Split | None:
        return None

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Image i (read-only arrays), generated once per process (`remembered`)."""
        key = (
            type(self).__name__,
            self.num_images,
            self.image_size,
            self.num_classes,
            self.seed,
            self.rare_share,
            i,
        )
        return remembered(key, lambda: self._generate(i))

    def _generate(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= i < self.num_images:
            raise IndexError(f"image {i} is out of range for {self.num_images} {self.kind} images")
        return self._make(i, np.random.default_rng((self.seed, i)))

    def _make(self, i: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError
