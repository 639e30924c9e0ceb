"""Scoring a partition's patches between partitions: in-process, or by a pool of Ray actors.

The unit of work is a block of at most `BLOCK` images in partition order (fewer when that gives
every actor a block), and image i's draws come only from its seed
(`MaskingStrategy.seeded_scores`). Actors and the in-process path run the same function on the
same images, so they return the same scores, bit for bit (tests/test_trial.py), hence the same
masks: a score depends neither on the block it is in nor on the process. Weights go
through the object store once per partition, as NumPy arrays (which Ray hands to each actor
without copying or unpickling); an actor loads them with its first block of the partition and
then scores the blocks it is handed, one at a time, as it finishes the previous one.

Actors start while partition 0 trains. When a partition is to be scored before any actor has
started (partition 0 came from the cache, or trained in less time than an actor's start-up), the
calling process scores blocks itself, on the same kind of device as the actors, until one has:
it would otherwise sit idle, and the scores do not depend on who computed them.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import ray
import torch
from ray.exceptions import RayActorError
from torch import Tensor, nn

from smsweep import build, faults
from smsweep.config import SweepSpec
from smsweep.data import Source
from smsweep.data.datasets import image_tensor
from smsweep.data.transforms import pretrain_transform
from smsweep.masking import MaskingStrategy
from smsweep.precision import FLOAT32, Precision, resolve_precision

BLOCK = 16  # images per scoring task at most: 16 x K variants fill a forward chunk
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


class ScoringWorker:
    """A scoring actor's state: the model architecture and strategy built from the spec, the
    source, and the weights of the current partition."""

    def __init__(self, spec: SweepSpec, source: Source) -> None:
        faults.pause_for_a_kill("scoring:start")
        torch.manual_seed(0)  # architecture only: the weights arrive with `load`
        self.device = actor_device(spec)
        self.model = build.reconstruction_model(spec).to(self.device).eval()
        model = spec.model
        self.precision = resolve_precision(
            model.precision, self.device, channels_last=model.channels_last
        )
        self.strategy = build.masking_strategy(spec)
        self.source = source
        self.image_size = spec.data.image_size
        self.blocks_scored = 0
        self.weights_id: str | None = None  # object id of the weights loaded

    def ready(self) -> None:
        """Nothing: a call returns once the actor has been built (imports, model)."""

    def score(
        self, weights: list[ray.ObjectRef], indices: list[int], seeds: list[int]
    ) -> np.ndarray:
        """Scores of one block with the weights in `weights[0]` (a reference inside a list, so
        Ray passes it unresolved and the actor fetches it only when it changes)."""
        faults.actor_exits(self.blocks_scored)
        faults.pause_for_a_kill("scoring")
        if weights[0].hex() != self.weights_id:
            self._load(ray.get(weights[0]))
            self.weights_id = weights[0].hex()
        images = load_images(self.source, indices, self.image_size)
        self.blocks_scored += 1
        return score_block(self.strategy, self.model, images, seeds, self.precision).numpy()

    def _load(self, arrays: dict[str, np.ndarray]) -> None:
        with warnings.catch_warnings():
            # The arrays live read-only in Ray's object store; load_state_dict only reads them.
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            self.model.load_state_dict({key: torch.from_numpy(a) for key, a in arrays.items()})


def as_arrays(weights: dict[str, Tensor]) -> dict[str, np.ndarray]:
    """A state dict as C-ordered NumPy arrays on the CPU: Ray stores these out of band, and
    readers map them instead of unpickling copies (a few ms per partition, not tens)."""
    return {key: value.detach().cpu().contiguous().numpy() for key, value in weights.items()}


class ActorScorer:
    """A pool of scoring actors for one trial; create once, `score` every partition, `close`.

    Actors are placed with the SPREAD strategy: across nodes on a cluster, and outside the
    placement group of whoever creates them (a Train worker's group has no room for them; their
    CPUs are counted in the trial's demand by `smsweep.resources`). A block whose actor dies is
    given to a replacement actor: blocks are scored from their own seeds, so the masks do not
    change. Until the first actor has started, `score` scores blocks in the calling process when
    the model is on the actors' kind of device (`actor_device`); `wait_started` waits instead.
    """

    def __init__(self, spec: SweepSpec, source: Source) -> None:
        resources = spec.resources
        self.remote = ray.remote(ScoringWorker).options(
            num_cpus=resources.cpus_per_actor,
            num_gpus=resources.gpus_per_actor,
            scheduling_strategy="SPREAD",
            max_restarts=0,
        )
        self.spec, self.source, self.source_ref = spec, source, ray.put(source)
        self.strategy = build.masking_strategy(spec)  # for the blocks scored in this process
        # Not waited for here: actors import torch and build the model while training goes on.
        self.actors: list[ray.actor.ActorHandle] = []
        self.starting: dict[ray.ObjectRef, int] = {}  # `ready` call -> actor slot, until it returns
        self.restarts = 0  # actors replaced in the current `score` call
        self.started = False  # whether any actor of the pool has started
        for slot in range(resources.scoring_actors):
            self.actors.append(self._start(slot))

    def score(self, model: nn.Module, indices: Sequence[int], seeds: Sequence[int]) -> Scored:
        """Scores of `indices` with `model`'s weights: by the actors, and by this process until
        the first of them has started."""
        start = time.perf_counter()
        weights_ref = [ray.put(as_arrays(model.state_dict()))]
        stand_in = next(model.parameters()).device.type == actor_device(self.spec).type
        jobs = blocks(indices, seeds, len(self.actors))
        results: list[np.ndarray | None] = [None] * len(jobs)
        waiting = list(range(len(jobs)))
        idle = [slot for slot in range(len(self.actors)) if slot not in self.starting.values()]
        running: dict[ray.ObjectRef, tuple[int, int]] = {}  # result -> (job, actor slot)
        self.restarts = here = 0
        while waiting or running:
            self._check_starts(idle)
            while waiting and idle:
                job, slot = waiting.pop(0), idle.pop(0)
                running[self.actors[slot].score.remote(weights_ref, *jobs[job])] = (job, slot)
            if waiting and stand_in and not self.started:
                job = waiting.pop(0)
                results[job] = self._score_here(model, *jobs[job])
                here += 1
                continue
            # a result, or (with blocks waiting) an actor that has started
            [ready], _ = ray.wait([*running, *(self.starting if waiting else ())], num_returns=1)
            if ready not in running:
                continue
            job, slot = running.pop(ready)
            try:
                results[job] = ray.get(ready)
                idle.append(slot)
            except RayActorError as error:
                self._replace(slot, error)
                waiting.insert(0, job)
        scores = torch.from_numpy(np.concatenate(results))
        return Scored(
            scores,
            time.perf_counter() - start,
            by_actors=here < len(jobs),
            actor_restarts=self.restarts,
            blocks_in_process=here,
        )

    def wait_started(self) -> None:
        """Wait until every actor has started (their `ready` calls returned)."""
        self.restarts = 0
        while self.starting:
            ray.wait(list(self.starting), num_returns=len(self.starting))
            self._check_starts([])

    def close(self) -> None:
        for actor in self.actors:
            ray.kill(actor)
        self.actors, self.starting = [], {}

    def _start(self, slot: int) -> ray.actor.ActorHandle:
        actor = self.remote.remote(self.spec, self.source_ref)
        self.starting[actor.ready.remote()] = slot
        return actor

    def _check_starts(self, idle: list[int]) -> None:
        """Moves the actors that have started since the last check to `idle`, without waiting;
        replaces those that died starting."""
        if not self.starting:
            return
        started, _ = ray.wait(list(self.starting), num_returns=len(self.starting), timeout=0)
        for ref in started:
            slot = self.starting.pop(ref)
            try:
                ray.get(ref)
                idle.append(slot)
                self.started = True
            except RayActorError as error:
                self._replace(slot, error)

    def _replace(self, slot: int, error: RayActorError) -> None:
        """A new actor in the place of the one in `slot`, which died."""
        self.restarts += 1
        if self.restarts > MAX_RESTARTS_PER_ACTOR * len(self.actors):
            raise RuntimeError(
                f"scoring actors died {self.restarts} times in one partition (last: {error}); "
                "check the actors' memory (resources.cpus_per_actor / gpus_per_actor)"
            ) from error
        self.actors[slot] = self._start(slot)

    def _score_here(self, model: nn.Module, indices: list[int], seeds: list[int]) -> np.ndarray:
        """One block in this process, as an actor would score it (`ScoringWorker.score`)."""
        faults.pause_for_a_kill("scoring")
        device = next(model.parameters()).device
        settings = self.spec.model
        precision = resolve_precision(
            settings.precision, device, channels_last=settings.channels_last
        )
        images = load_images(self.source, indices, self.spec.data.image_size)
        return score_block(self.strategy, model, images, seeds, precision).numpy()
