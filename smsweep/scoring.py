"""Scoring a partition's patches between partitions: in-process, or by a pool of Ray actors.

The unit of work is a block of `BLOCK` images in partition order, and image i's draws come only
from its seed (`MaskingStrategy.seeded_scores`). Actors and the in-process path run the same
function on the same blocks, so they return the same scores, hence the same masks. Weights go
through the object store once per partition; each actor loads them once and then scores the
blocks ActorPool hands it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import ray
import torch
from ray.util.actor_pool import ActorPool
from torch import Tensor, nn

from smsweep import build
from smsweep.config import SweepSpec
from smsweep.data import Source
from smsweep.data.datasets import image_tensor
from smsweep.data.transforms import pretrain_transform
from smsweep.masking import MaskingStrategy

BLOCK = 16  # images per scoring task: small enough to balance two actors on a tiny partition


def load_images(source: Source, indices: Sequence[int], image_size: int) -> Tensor:
    """The pretraining view of `indices` (fixed resize + centre crop): (n, 3, S, S) in [0, 1]."""
    transform = pretrain_transform(image_size, augment=False)
    return torch.stack([image_tensor(transform(image=source.load(i)[0])["image"]) for i in indices])


def score_block(
    strategy: MaskingStrategy,
    model: nn.Module,
    images: Tensor,
    seeds: Sequence[int],
) -> Tensor:
    """Per-patch scores of one block: (n, h, w) float32 on the CPU."""
    device = next(model.parameters()).device
    return strategy.seeded_scores(images.to(device), seeds, model).float().cpu()


def blocks(indices: Sequence[int], seeds: Sequence[int]) -> list[tuple[list[int], list[int]]]:
    return [
        (list(indices[start : start + BLOCK]), list(seeds[start : start + BLOCK]))
        for start in range(0, len(indices), BLOCK)
    ]


@dataclass(frozen=True)
class Scored:
    scores: Tensor  # (n, h, w), in the order of the indices asked for
    seconds: float
    by_actors: bool


def score_in_process(
    strategy: MaskingStrategy,
    model: nn.Module,
    source: Source,
    indices: Sequence[int],
    seeds: Sequence[int],
    image_size: int,
) -> Scored:
    start = time.perf_counter()
    parts = [
        score_block(strategy, model, load_images(source, block, image_size), block_seeds)
        for block, block_seeds in blocks(indices, seeds)
    ]
    return Scored(torch.cat(parts), time.perf_counter() - start, by_actors=False)


class ScoringWorker:
    """A scoring actor's state: the model architecture and strategy built from the spec, the
    source, and the weights of the current partition."""

    def __init__(self, spec: SweepSpec, source: Source) -> None:
        torch.manual_seed(0)  # architecture only: the weights arrive with `load`
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = build.reconstruction_model(spec).to(self.device).eval()
        self.strategy = build.masking_strategy(spec)
        self.source = source
        self.image_size = spec.data.image_size

    def load(self, weights: dict[str, Tensor]) -> None:
        self.model.load_state_dict(weights)

    def score(self, indices: list[int], seeds: list[int]) -> np.ndarray:
        images = load_images(self.source, indices, self.image_size)
        return score_block(self.strategy, self.model, images, seeds).numpy()

    def ready(self) -> bool:
        return True


class ActorScorer:
    """A pool of scoring actors for one trial; create once, `score` every partition, `close`.

    Actors are placed with the SPREAD strategy: across nodes on a cluster, and outside the
    placement group of whoever creates them (a Train worker's group has no room for them; their
    CPUs are counted in the trial's demand by `smsweep.resources`).
    """

    def __init__(self, spec: SweepSpec, source: Source) -> None:
        resources = spec.resources
        remote = ray.remote(ScoringWorker).options(
            num_cpus=resources.cpus_per_actor,
            num_gpus=resources.gpus_per_actor,
            scheduling_strategy="SPREAD",
            max_restarts=0,
        )
        source_ref = ray.put(source)
        # Not waited for here: actors import torch and build the model while training goes on.
        self.actors = [remote.remote(spec, source_ref) for _ in range(resources.scoring_actors)]

    def score(
        self, weights: dict[str, Tensor], indices: Sequence[int], seeds: Sequence[int]
    ) -> Scored:
        start = time.perf_counter()
        weights_ref = ray.put({key: value.detach().cpu() for key, value in weights.items()})
        ray.get([actor.load.remote(weights_ref) for actor in self.actors])
        pool = ActorPool(self.actors)
        parts = pool.map(lambda actor, job: actor.score.remote(*job), blocks(indices, seeds))
        scores = torch.from_numpy(np.concatenate(list(parts)))
        return Scored(scores, time.perf_counter() - start, by_actors=True)

    def close(self) -> None:
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
