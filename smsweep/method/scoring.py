"""Scoring a partition's patches between partitions, without Ray: the pure part that the
trial's process and the scoring actors (`smsweep.engines.scoring_actors`) share.

The unit of work is a block of at most `BLOCK` images in partition order (fewer when that gives
every actor a block), and image i's draws come only from its seed
(`MaskingStrategy.seeded_scores`). Actors and the in-process path run the same function on the
same images, so they return the same scores, bit for bit (tests/test_trial.py), hence the same
masks: a score depends neither on the block it is in nor on the process.

A scorer is anything with `score(model, indices, seeds) -> Scored`: `InProcessScorer` here, or
`scoring_actors.ActorScorer`; the trial's pretraining phase is handed one and never asks which.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from smsweep.method.data import Source
from smsweep.method.data.datasets import image_tensor
from smsweep.method.data.transforms import pretrain_transform
from smsweep.method.masking import MaskingStrategy
from smsweep.method.precision import FLOAT32, Precision
from smsweep.spec.config import SweepSpec

BLOCK = 16  # images per scoring task at most: 16 x K variants fill a forward chunk


def load_images(source: Source, indices: Sequence[int], image_size: int) -> Tensor:
    """The pretraining view of `indices` (fixed resize + centre crop): (n, 3, S, S) in [0, 1]."""
    transform = pretrain_transform(image_size, augment=False)
    return torch.stack([image_tensor(transform(image=source.load(i)[0])["image"]) for i in indices])


def score_block(
    strategy: MaskingStrategy,
    model: nn.Module,
    images: Tensor,
    seeds: Sequence[int],
    precision: Precision = FLOAT32,
) -> Tensor:
    """Per-patch scores of one block: (n, h, w) float32 on the CPU. The model's forwards run in
    `precision`; the scorers cast their output to float32 before any loss map."""
    device = next(model.parameters()).device
    with precision.context(device):
        scores = strategy.seeded_scores(images.to(device), seeds, model)
    return scores.float().cpu()


def blocks(
    indices: Sequence[int], seeds: Sequence[int], workers: int = 1
) -> list[tuple[list[int], list[int]]]:
    """(indices, seeds) blocks of at most BLOCK images, small enough that each of `workers`
    gets one (a 16-image partition and 2 actors: two blocks of 8). Scores do not depend on it."""
    size = max(1, min(BLOCK, math.ceil(len(indices) / workers)))
    return [
        (list(indices[start : start + size]), list(seeds[start : start + size]))
        for start in range(0, len(indices), size)
    ]


@dataclass(frozen=True)
class Scored:
    scores: Tensor  # (n, h, w), in the order of the indices asked for
    seconds: float
    by_actors: bool  # actors scored at least one block
    actor_restarts: int = 0
    blocks_in_process: int = 0  # blocks the caller scored before the first actor started


def score_in_process(
    strategy: MaskingStrategy,
    model: nn.Module,
    source: Source,
    indices: Sequence[int],
    seeds: Sequence[int],
    image_size: int,
    precision: Precision = FLOAT32,
) -> Scored:
    start = time.perf_counter()
    parts = [
        score_block(strategy, model, load_images(source, block, image_size), block_seeds, precision)
        for block, block_seeds in blocks(indices, seeds)
    ]
    return Scored(torch.cat(parts), time.perf_counter() - start, by_actors=False)


def actor_device(spec: SweepSpec) -> torch.device:
    """Where scoring actors compute: a GPU when they reserve one (`resources.gpus_per_actor`),
    else the CPU (Ray leaves a GPU visible to an actor that reserved none)."""
    return torch.device("cuda" if spec.resources.gpus_per_actor > 0 else "cpu")


class InProcessScorer:
    """Scores in the trial's own process (no actors): `resources.scoring_actors: 0`, and every
    rank but 0 of a data-parallel trial never calls it."""

    actors: tuple[()] = ()

    def __init__(
        self, strategy: MaskingStrategy, source: Source, image_size: int, precision: Precision
    ) -> None:
        self.strategy, self.source = strategy, source
        self.image_size, self.precision = image_size, precision

    def score(self, model: nn.Module, indices: Sequence[int], seeds: Sequence[int]) -> Scored:
        return score_in_process(
            self.strategy, model, self.source, indices, seeds, self.image_size, self.precision
        )

    def close(self) -> None:
        """Nothing to release."""
