"""The measurements that need Ray: scoring actors, 2 against 1 (`measure_actors`), and one tiny
real trial's fits and fixed overhead (`measure_trial`, which ends with the partition-0 cache's
saving, `cache_saving`); `measure_ray` runs them all. `_pid` and
`_block_forwards` run inside the scoring actors, so they stay module-level functions.
"""

from __future__ import annotations

import math
import os
import statistics
import tempfile
import time
from typing import Any

import torch

from smsweep.bench.inputs import TRIAL_SPEC, Sizes, forward_floor
from smsweep.bench.timing import CpuMeter, _progress


def actor_spec(sizes: Sizes, actors: int):
    """A spec whose reconstruction model and selective strategy are the bench's, with `actors`
    scoring actors of 1 CPU each."""
    from smsweep.spec.load import validate_spec

    return validate_spec(
        {
            "name": "bench-actors",
            "seed": sizes.seed,
            "data": {
                "image_size": sizes.image_size,
                "num_images": max(sizes.partition_images, 16),
                "num_classes": 5,
            },
            "model": {
                "encoder": sizes.encoder,
                "encoder_depth": sizes.encoder_depth,
                "decoder_channels": list(sizes.decoder_channels),
                "channels_last": sizes.channels_last,
            },
            "masking": {
                "strategy": "selective",
                "patch_size": sizes.patch_size,
                "ratio": sizes.ratio,
                "samples": sizes.samples,
                "fill": "mean",
            },
            "resources": {"scoring_actors": actors, "cpus_per_actor": 1},
        }
    )


def measure_actors(sizes: Sizes) -> dict[str, Any]:
    """Seconds of `ActorScorer.score` on one partition with 1 and with 2 actors.

    The two pools cannot coexist on 2 CPUs, so they alternate over `actor_cycles` cycles
    (1 then 2 actors, then 2 then 1, ...); each pool is started, warmed up with one untimed call
    (which waits for its actors to start), timed, and closed. The ratio is the median of the
    per-cycle ratios, so a slow phase of the machine does not land on one pool only.

    The ceiling: in the same pools, the actors run only the model's forwards on the same number
    of variants (split between the actors as the blocks are): what 2 processes on this machine
    can gain over 1 on the work itself, before any scoring or Ray overhead.
    """
    import ray

    from smsweep.engines.scoring_actors import ActorScorer
    from smsweep.method import build
    from smsweep.method.data import open_source
    from smsweep.method.pretrain import derived_seed
    from smsweep.method.scoring import blocks
    from smsweep.trial.context import SCORING

    spec = actor_spec(sizes, 1)
    source = open_source(spec.data, seed=spec.seed)
    torch.manual_seed(sizes.seed)
    model = build.reconstruction_model(spec)
    indices = list(range(sizes.partition_images))
    seeds = [derived_seed(spec.seed, SCORING, i) for i in indices]
    calls = max(2, math.ceil(sizes.repeats / sizes.actor_cycles))  # timed calls per pool
    seconds: dict[int, list[float]] = {1: [], 2: []}  # per-cycle medians
    ceiling: dict[int, list[float]] = {1: [], 2: []}  # per-cycle medians, forwards only
    units = len(blocks(indices, seeds, 2))  # forward units: one per block
    every: dict[int, list[float]] = {1: [], 2: []}  # every timed call
    usage = {actors: {"wall": 0.0, "actors": 0.0, "others": 0.0} for actors in (1, 2)}
    scores = {}
    for cycle in range(sizes.actor_cycles):
        for actors in (1, 2) if cycle % 2 == 0 else (2, 1):
            _progress(
                f"actors: cycle {cycle + 1}/{sizes.actor_cycles}, scoring {len(indices)} images "
                f"with {actors} actor(s), {calls} timed calls"
            )
            scorer = ActorScorer(actor_spec(sizes, actors), source)
            try:
                scorer.wait_started()  # else this process would score until they have
                scorer.score(model, indices, seeds)  # warm-up: each actor loads the weights
                pids = ray.get([actor.__ray_call__.remote(_pid) for actor in scorer.actors])
                meter = CpuMeter([*pids, os.getpid()])
                timed = []
                for _ in range(calls):
                    start = time.perf_counter()
                    with meter:
                        scores[actors] = scorer.score(model, indices, seeds).scores
                    timed.append(time.perf_counter() - start)
                shares = [len(range(slot, units, actors)) for slot in range(actors)]
                forwards = []
                for _ in range(calls + 1):  # the first is a warm-up
                    start = time.perf_counter()
                    ray.get(
                        [
                            actor.__ray_call__.remote(_block_forwards, sizes, share)
                            for actor, share in zip(scorer.actors, shares, strict=True)
                        ]
                    )
                    forwards.append(time.perf_counter() - start)
                ceiling[actors].append(statistics.median(forwards[1:]))
            finally:
                scorer.close()
            seconds[actors].append(statistics.median(timed))
            every[actors] += timed
            if meter.ok:
                usage[actors]["wall"] += meter.wall
                usage[actors]["actors"] += meter.cpu_seconds(pids)
                usage[actors]["others"] += meter.other_seconds()
    ratios = [one / two for one, two in zip(seconds[1], seconds[2], strict=True)]
    ceilings = [one / two for one, two in zip(ceiling[1], ceiling[2], strict=True)]
    results: dict[str, Any] = {
        "actors_2_vs_1": statistics.median(ratios),
        "actors_2_vs_1_per_cycle": [round(ratio, 3) for ratio in ratios],
        "actors_2_vs_1_ceiling": statistics.median(ceilings),
        "actor_torch_threads": _actor_torch_threads(),
        "actor_scores_match": bool(torch.allclose(scores[1], scores[2], rtol=0, atol=1e-6)),
    }
    for actors in (1, 2):
        results[f"actor_ms_per_image_{actors}"] = (
            1000 * statistics.median(every[actors]) / len(indices)
        )
        # CPUs the actors kept busy while scoring (ideal: 1 per actor), and everything else.
        wall = usage[actors]["wall"]
        results[f"actor_busy_cpus_{actors}"] = (
            round(usage[actors]["actors"] / wall, 2) if wall else None
        )
        results[f"other_cpus_actors_{actors}"] = (
            round(usage[actors]["others"] / wall, 2) if wall else None
        )
    return results


def _pid(actor: object) -> int:
    return os.getpid()


def _block_forwards(worker: Any, sizes: Sizes, blocks_count: int) -> None:
    """In a scoring actor: the model's forwards of `blocks_count` blocks of BLOCK x K variants,
    chunk_size at a time, and nothing else."""
    from smsweep.method.scoring import BLOCK

    variants = torch.rand(BLOCK * sizes.samples, 3, sizes.image_size, sizes.image_size)
    masks = torch.zeros(variants.shape[0], 1, *variants.shape[-2:], dtype=torch.bool)
    for _ in range(blocks_count):
        forward_floor(worker.model, variants, masks, sizes.chunk_size)


def _actor_torch_threads() -> int:
    """torch's thread count in a Ray worker with 1 CPU, as the scoring actors have: Ray sets
    OMP_NUM_THREADS to the worker's CPUs."""
    import ray

    @ray.remote(num_cpus=1)
    def threads() -> int:
        return torch.get_num_threads()

    return ray.get(threads.remote())


def measure_trial() -> dict[str, Any]:
    """The tiny trial under Ray Train (one fit), then the same trial in the calling process
    (`resources.train_workers: 0`, one CPU for it): wall, compute and fixed overhead of each."""
    from smsweep.engines.train import run_trial
    from smsweep.spec.load import validate_spec

    resources = TRIAL_SPEC["resources"]
    in_process = {**TRIAL_SPEC, "resources": {**resources, "train_workers": 0, "cpus_per_trial": 1}}
    results: dict[str, Any] = {}
    for raw, suffix, what in (
        (TRIAL_SPEC, "", "under Ray Train"),
        (in_process, "_in_process", "in this process (train_workers: 0)"),
    ):
        _progress(f"trial: one tiny real trial {what} (2 partitions, 1 fine-tuning epoch)")
        with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as storage:
            start = time.perf_counter()
            outcome = run_trial(validate_spec(raw), storage_path=storage, run_name="bench-trial")
            wall = time.perf_counter() - start
        compute = float(outcome.metrics["compute_seconds"])
        results |= {
            f"trial_wall{suffix}_s": wall,
            f"trial_compute{suffix}_s": compute,
            f"trial_fixed_overhead{suffix}_s": wall - compute,
        }
        if not suffix:
            # counted where run_trial starts a fit; tests/test_trial.py checks the count against
            # the TrainController actors Ray started
            results["trainer_fits_per_trial"] = outcome.trainer_fits
    from smsweep.bench.cache_saving import measure_partition0_cache  # runnable alone too

    return results | measure_partition0_cache()


def measure_ray(sizes: Sizes) -> dict[str, Any]:
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        _progress("starting a local Ray instance")
        ray.init(num_cpus=max(2, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False)
    try:
        return measure_actors(sizes) | measure_trial()
    finally:
        if started_here:
            ray.shutdown()
