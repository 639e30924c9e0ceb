"""Scoring a partition's patches between partitions: in-process, or by a pool of Ray actors.

The unit of work is a block of `BLOCK` images in partition order, and image i's draws come only
from its seed (`MaskingStrategy.seeded_scores`). Actors and the in-process path run the same
function on the same blocks, so they return the same scores, hence the same masks. Weights go
through the object store once per partition; each actor loads them once and then scores the
blocks it is handed, one at a time, as it finishes the previous one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import ray
import torch
from ray.exceptions import RayActorError
from torch import Tensor, nn

from smsweep import build
from smsweep.config import SweepSpec
from smsweep.data import Source
from smsweep.data.datasets import image_tensor
from smsweep.data.transforms import pretrain_transform
from smsweep.faults import pause_for_a_kill
from smsweep.masking import MaskingStrategy

BLOCK = 16  # images per scoring task: small enough to balance two actors on a tiny partition
MAX_RESTARTS_PER_ACTOR = 3  # per partition, before scoring gives up


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
    actor_restarts: int = 0


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
    source, and the weights of the current partition.

    `exit_after_blocks` and `faults` are test-only fault injection: the actor process exits
    after scoring that many blocks, as a crashed or preempted actor would, or pauses for a kill.
    """

    def __init__(
        self,
        spec: SweepSpec,
        source: Source,
        exit_after_blocks: int | None = None,
        faults: dict | None = None,
    ) -> None:
        torch.manual_seed(0)  # architecture only: the weights arrive with `load`
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = build.reconstruction_model(spec).to(self.device).eval()
        self.strategy = build.masking_strategy(spec)
        self.source = source
        self.image_size = spec.data.image_size
        self.exit_after_blocks = exit_after_blocks
        self.faults = faults or {}
        self.blocks_scored = 0

    def load(self, weights: dict[str, Tensor]) -> None:
        self.model.load_state_dict(weights)

    def score(self, indices: list[int], seeds: list[int]) -> np.ndarray:
        if self.exit_after_blocks is not None and self.blocks_scored >= self.exit_after_blocks:
            os._exit(1)
        pause_for_a_kill(self.faults, "scoring")
        images = load_images(self.source, indices, self.image_size)
        self.blocks_scored += 1
        return score_block(self.strategy, self.model, images, seeds).numpy()


class ActorScorer:
    """A pool of scoring actors for one trial; create once, `score` every partition, `close`.

    Actors are placed with the SPREAD strategy: across nodes on a cluster, and outside the
    placement group of whoever creates them (a Train worker's group has no room for them; their
    CPUs are counted in the trial's demand by `smsweep.resources`). A block whose actor dies is
    given to a replacement actor: blocks are scored from their own seeds, so the masks do not
    change.
    """

    def __init__(
        self,
        spec: SweepSpec,
        source: Source,
        *,
        exit_after_blocks: int | None = None,
        faults: dict | None = None,
    ) -> None:
        resources = spec.resources
        self.remote = ray.remote(ScoringWorker).options(
            num_cpus=resources.cpus_per_actor,
            num_gpus=resources.gpus_per_actor,
            scheduling_strategy="SPREAD",
            max_restarts=0,
        )
        self.spec, self.source_ref = spec, ray.put(source)
        # Not waited for here: actors import torch and build the model while training goes on.
        self.faults = faults or {}
        self.actors = [
            self.remote.remote(spec, self.source_ref, exit_after_blocks, self.faults)
            for _ in range(resources.scoring_actors)
        ]

    def score(
        self, weights: dict[str, Tensor], indices: Sequence[int], seeds: Sequence[int]
    ) -> Scored:
        start = time.perf_counter()
        weights_ref = ray.put({key: value.detach().cpu() for key, value in weights.items()})
        restarts = 0
        loaded = [actor.load.remote(weights_ref) for actor in self.actors]
        for slot, done in enumerate(loaded):
            try:
                ray.get(done)
            except RayActorError:
                self._replace(slot, weights_ref)
                restarts += 1
        jobs = blocks(indices, seeds)
        results: list[np.ndarray | None] = [None] * len(jobs)
        waiting, idle = list(range(len(jobs))), list(range(len(self.actors)))
        running: dict[ray.ObjectRef, tuple[int, int]] = {}  # result -> (job, actor slot)
        while waiting or running:
            while waiting and idle:
                job, slot = waiting.pop(0), idle.pop(0)
                running[self.actors[slot].score.remote(*jobs[job])] = (job, slot)
            [ready], _ = ray.wait(list(running), num_returns=1)
            job, slot = running.pop(ready)
            try:
                results[job] = ray.get(ready)
            except RayActorError as error:
                restarts += 1
                if restarts > MAX_RESTARTS_PER_ACTOR * len(self.actors):
                    raise RuntimeError(
                        f"scoring actors died {restarts} times in one partition (last: {error}); "
                        "check the actors' memory (resources.cpus_per_actor / gpus_per_actor)"
                    ) from error
                self._replace(slot, weights_ref)
                waiting.insert(0, job)
            idle.append(slot)
        scores = torch.from_numpy(np.concatenate(results))
        return Scored(scores, time.perf_counter() - start, by_actors=True, actor_restarts=restarts)

    def _replace(self, slot: int, weights_ref: ray.ObjectRef) -> None:
        self.actors[slot] = self.remote.remote(self.spec, self.source_ref, None, self.faults)
        ray.get(self.actors[slot].load.remote(weights_ref))

    def close(self) -> None:
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
