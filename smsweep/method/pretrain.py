"""Masked-image-modeling pretraining on one partition: the pure training step, no Ray.

Where each batch's mask comes from:
- partition 0, and every partition of a model-free strategy (random, block, mixed): drawn per
  batch from a generator seeded by (seed, partition, epoch), so masks change every step;
- later partitions of a strategy that needs the model (selective, saliency, saliency_hard): a
  `MaskTable` computed once, before the partition, with the model as it stood after the previous
  partition (SMIR) — by the scoring actors or in-process, with identical results.

Pretraining reads images through a fixed resize and centre crop (no augmentation), for every
strategy: a precomputed mask then covers exactly the pixels it was scored on, and all strategies
see the same pixels, so they compare fairly. `data.augment` applies to fine-tuning.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from smsweep.method.losses import WeightedLoss
from smsweep.method.masking import MaskingStrategy, PatchMask, top_k_mask
from smsweep.method.masking.base import random_tie_keys, to_device
from smsweep.method.masking.fills import Fill
from smsweep.method.precision import FLOAT32, Precision

MaskSource = Callable[[Tensor, Tensor, torch.Generator], PatchMask]  # (images, indices, gen)


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite: training cannot continue from this state."""


def derived_seed(*parts: int) -> int:
    """A well-mixed 31-bit seed for one purpose, e.g. (seed, stream, partition, epoch)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] >> 1)


TIE_BREAK_STREAM = 7  # derived_seed(image seed, TIE_BREAK_STREAM) seeds that image's tie breaks


@dataclass(frozen=True)
class MaskTable:
    """Precomputed masks of one partition: source index -> (h, w) bool grid."""

    grids: Mapping[int, Tensor]
    patch_size: int

    @classmethod
    def from_scores(
        cls,
        indices: Sequence[int],
        scores: Tensor,
        ratio: float,
        patch_size: int,
        *,
        tie_seeds: Sequence[int] | None = None,
    ) -> MaskTable:
        """scores (n, h, w) of `indices`, in order -> the top round(ratio * N) of each image.

        tie_seeds: one int per image, its scoring seed. Equal scores (selective's never-masked
        patches) are then ranked by a random permutation drawn from
        derived_seed(seed, TIE_BREAK_STREAM): a stream apart from the scorer's draws with that
        seed, and an image's mask depends on its own seed only, whichever process scored it.
        None means no ties are expected (continuous scores): any tie goes to the lower
        row-major index, a bias towards the top of the image.
        """
        tie_keys = None
        if tie_seeds is not None:
            if len(tie_seeds) != len(indices):
                raise ValueError(
                    f"got {len(tie_seeds)} tie_seeds for {len(indices)} images: pass each "
                    "image's scoring seed, in the order of `indices`"
                )
            generators = [
                torch.Generator().manual_seed(derived_seed(seed, TIE_BREAK_STREAM))
                for seed in tie_seeds
            ]
            tie_keys = random_tie_keys(tuple(scores.shape[1:]), generators, scores.device)
        grids = top_k_mask(scores, ratio, tie_keys)  # (n, h, w)
        return cls({int(i): grid for i, grid in zip(indices, grids, strict=True)}, patch_size)

    def __call__(self, images: Tensor, indices: Tensor, generator: torch.Generator) -> PatchMask:
        grid = to_device(torch.stack([self.grids[int(i)] for i in indices]), images.device)
        return PatchMask(grid, self.patch_size)

    def same_as(self, other: MaskTable) -> bool:
        return (
            self.patch_size == other.patch_size
            and self.grids.keys() == other.grids.keys()
            and all(torch.equal(self.grids[i], other.grids[i]) for i in self.grids)
        )


def drawn_once(
    strategy: MaskingStrategy, indices: Sequence[int], seeds: Sequence[int], image_size: int
) -> MaskTable:
    """One mask per image for a whole partition from a model-free strategy (`refresh:
    partition`), image i's from its own seed: the control for masks scored once per partition,
    differing from them only in which patches are masked. Strategies with several patch sizes
    (mixed) store every mask on the finest grid that holds them all."""
    if strategy.needs_model:
        raise ValueError(f"{strategy.name} masks are scored with the model, not drawn")
    common = math.gcd(*(size for size, _ in strategy.configs))
    blank = torch.zeros(1, 3, image_size, image_size)  # model-free strategies read only the shape
    grids = {}
    for index, seed in zip(indices, seeds, strict=True):
        mask = strategy(blank, torch.Generator().manual_seed(int(seed)))
        factor = mask.patch_size // common
        grid = mask.grid[0].repeat_interleave(factor, 0).repeat_interleave(factor, 1)  # (h, w)
        grids[int(index)] = grid
    return MaskTable(grids, common)


def per_batch_masks(strategy: MaskingStrategy) -> MaskSource:
    """Fresh masks from a model-free strategy for every batch."""

    def masks(images: Tensor, indices: Tensor, generator: torch.Generator) -> PatchMask:
        return strategy(images, generator)

    return masks


def pretrain_step(
    model: nn.Module,
    images: Tensor,
    mask: PatchMask,
    *,
    fill: Fill,
    loss: WeightedLoss,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    precision: Precision = FLOAT32,
) -> float:
    """One optimizer step of masked reconstruction; returns the loss.

    images (B, C, H, W) in [0, 1]; the model gets the filled images and the pixel mask
    (MaskedUnet adds its token there) and reconstructs the whole image. The forward runs in
    `precision`; the loss is computed in float32, outside autocast (its SSIM convolutions would
    otherwise run in bf16).
    """
    pixel_mask = mask.pixels().to(images.device)  # (B, 1, H, W)
    inputs = fill(images, pixel_mask, generator)
    with precision.context(images.device):
        reconstruction = model(inputs, pixel_mask)
    value = loss(reconstruction.float(), images, pixel_mask)
    # One host sync per step, here: the check needs the value before the step (the weights stay
    # as they were), and the same number is returned, so the host does not wait again after
    # the step and can prepare the next batch while a GPU runs this backward pass.
    number = float(value.detach())
    if not math.isfinite(number):
        raise NonFiniteLoss(
            f"pretraining loss is {number}: lower pretrain.lr or check the images "
            "(all-constant images or NaNs in the data)"
        )
    optimizer.zero_grad(set_to_none=True)
    value.backward()
    optimizer.step()
    return number


def train_partition(
    model: nn.Module,
    batches: Callable[[int], Iterable[tuple[Tensor, Tensor]]],
    masks: MaskSource,
    *,
    steps: int,
    fill: Fill,
    loss: WeightedLoss,
    optimizer: torch.optim.Optimizer,
    mask_seed: Callable[[int], int],
    learning_rate: Callable[[int], float] | None = None,
    first_step: int = 0,
    precision: Precision = FLOAT32,
) -> float:
    """`steps` optimizer steps on one partition, pass after pass; returns the mean loss over the
    last pass's worth of steps (one pass, or all the steps when there are fewer).

    batches(epoch) yields (images, source indices) already on the model's device, for pass
    `epoch`; mask_seed(epoch) seeds that pass's mask and fill draws, so a resumed run draws what
    an uninterrupted one did. learning_rate(step) sets the optimizer's rate before each step;
    steps are numbered from `first_step` (the schedule's position when the partition starts).
    `precision`: how the forwards run (`pretrain_step`).
    """
    model.train()

    def step(images: Tensor, indices: Tensor, generator: torch.Generator) -> float:
        return pretrain_step(
            model,
            images,
            masks(images, indices, generator),
            fill=fill,
            loss=loss,
            optimizer=optimizer,
            generator=generator,
            precision=precision,
        )

    return run_passes(batches, step, steps, mask_seed, learning_rate, first_step)


def run_passes(
    batches: Callable[[int], Iterable[tuple[Tensor, Tensor]]],
    step: Callable[[Tensor, Tensor, torch.Generator], float],
    steps: int,
    mask_seed: Callable[[int], int],
    learning_rate: Callable[[int], float] | None = None,
    first_step: int = 0,
) -> float:
    """`steps` calls of step(images, indices, generator), pass after pass over batches(epoch),
    each pass with its own generator from mask_seed(epoch); learning_rate(step) before each.
    Returns the mean loss over the last pass's worth of steps (one pass, or all the steps when
    there are fewer). Every pretraining objective trains a partition through it."""
    recent: deque[tuple[float, int]] = deque()  # (loss, images) of the last pass's steps
    taken, epoch, per_pass = 0, 0, None
    while taken < steps:
        generator = torch.Generator().manual_seed(mask_seed(epoch))
        in_pass = 0
        for images, indices in batches(epoch):
            if learning_rate is not None:
                learning_rate(first_step + taken)
            recent.append((step(images, indices, generator), images.shape[0]))
            taken, in_pass = taken + 1, in_pass + 1
            if taken == steps:
                break
        if in_pass == 0:
            raise ValueError("a pretraining partition has no images: lower pretrain.partitions")
        per_pass = per_pass or in_pass
        while len(recent) > per_pass:
            recent.popleft()
        epoch += 1
    total = sum(value * count for value, count in recent)
    return total / max(1, sum(count for _, count in recent)) if recent else math.nan
