"""albumentations pipelines: uint8 (H, W, 3) images of any size -> (S, S, 3) uint8.

- pretraining: RandomResizedCrop + flip + mild colour jitter (MAE-style), or a deterministic
  resize of the short side + centre crop. No padding: padded pixels would be reconstruction targets.
- fine-tuning (train): long side to S, random scale 0.75-1.5, pad to S (mask 255), random crop,
  flip, colour jitter. Evaluation: long side to S and pad to S (image 0, mask 255 = ignored): the
  whole image is evaluated, and training sees the same scale on average.
Masks are always resized with nearest neighbour; downscaling uses area interpolation (no aliasing
from 2048-px Cityscapes frames).

Randomness: a Compose keeps its own generators (not numpy's or torch's global state). The datasets
in `datasets.py` reseed the pipeline per item from (seed, epoch, index), which makes augmentation
independent of DataLoader workers and order. `reseeded` does that for one call.
"""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no version check over the network

import albumentations as A
import cv2
import numpy as np

from smsweep.method.data.base import IGNORE_INDEX

SCALE = (0.35, 1.0)  # pretraining crop area, as a fraction of the image (MAE uses 0.2-1)


def _color_jitter() -> A.ColorJitter:
    return A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, p=0.5)


def pretrain_transform(image_size: int, augment: bool) -> A.Compose:
    """Image-only pipeline for masked-image-modeling pretraining."""
    size = _check_size(image_size)
    if augment:
        steps = [
            A.RandomResizedCrop(size=(size, size), scale=SCALE, area_for_downscale="image"),
            A.HorizontalFlip(p=0.5),
            _color_jitter(),
        ]
    else:
        steps = [
            A.SmallestMaxSize(max_size=size, area_for_downscale="image"),
            A.CenterCrop(height=size, width=size),
        ]
    return A.Compose(steps)


def finetune_transform(image_size: int, train: bool, augment: bool) -> A.Compose:
    """Image + mask pipeline for fine-tuning; without `train` and `augment`: `eval_transform`."""
    size = _check_size(image_size)
    if not (train and augment):
        return eval_transform(size)
    steps = [
        A.LongestMaxSize(max_size=size, area_for_downscale="image"),
        A.RandomScale(scale_limit=(-0.25, 0.5), area_for_downscale="image", p=1.0),
        _pad(size),
        A.RandomCrop(height=size, width=size),
        A.HorizontalFlip(p=0.5),
        _color_jitter(),
    ]
    return A.Compose(steps, mask_interpolation=cv2.INTER_NEAREST)


def eval_transform(image_size: int) -> A.Compose:
    """Deterministic: long side to `image_size`, then pad (mask 255) to a square."""
    size = _check_size(image_size)
    steps = [A.LongestMaxSize(max_size=size, area_for_downscale="image"), _pad(size)]
    return A.Compose(steps, mask_interpolation=cv2.INTER_NEAREST)


def reseeded(transform: A.Compose, seed: int) -> A.Compose:
    """`transform` with its generators reset from `seed` (cheap: ~0.3 ms)."""
    transform.set_random_seed(seed)
    return transform


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed for one item of one epoch, well mixed (SeedSequence), never negative."""
    return int(np.random.SeedSequence((seed, epoch, index)).generate_state(1)[0])


def _pad(size: int) -> A.PadIfNeeded:
    return A.PadIfNeeded(
        min_height=size,
        min_width=size,
        border_mode=cv2.BORDER_CONSTANT,
        fill=0,
        fill_mask=IGNORE_INDEX,
    )


def _check_size(image_size: int) -> int:
    if image_size < 8:
        raise ValueError(f"image_size is {image_size}; use at least 8 (data.image_size)")
    return int(image_size)
