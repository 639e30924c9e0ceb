"""The scoring actors of a trial: a pool of Ray actors that score a partition's patches with
the pure scorer of `smsweep.method.scoring`, handed to the trial's pretraining phase.

The unit of work is a block of images (`scoring.blocks`), and image i's draws come only from its
seed, so actors and the trial's own process return the same scores, bit for bit
(tests/test_trial.py). Weights go through the object store once per partition, as NumPy arrays
(which Ray hands to each actor without copying or unpickling); an actor loads them with its first
block of the partition and then scores the blocks it is handed, one at a time.

Actors start while partition 0 trains. When a partition is to be scored before any actor has
started (partition 0 came from the cache, or trained in less time than an actor's start-up), the
calling process scores blocks itself, on the same kind of device as the actors, until one has.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence

import numpy as np
import ray
import torch
from ray.exceptions import RayActorError
from torch import Tensor, nn

from smsweep import faults
from smsweep.method import build
from smsweep.method.data import Source
from smsweep.method.precision import resolve_precision
from smsweep.method.scoring import Scored, actor_device, blocks, load_images, score_block
from smsweep.spec.config import SweepSpec

MAX_RESTARTS_PER_ACTOR = 3  # per partition, before scoring gives up


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
    CPUs are counted in the trial's demand by `smsweep.trial.resources`). A block whose actor dies
    is given to a replacement actor: blocks are scored from their own seeds, so the masks do not
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
