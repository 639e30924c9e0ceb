"""What one trial needs from the cluster, and the up-front check that a sweep can fit.

A trial holds its own process (`cpus_per_trial`), its Train workers and its scoring actors at the
same time, and Ray does not preempt: if concurrent trials each hold part of what the others' workers
need, they wait forever (seen with Ray 2.60 on 2 CPUs: two trials holding 1 CPU each, whose workers
need 1 CPU each). So the sum over concurrent trials must fit, and we refuse a sweep that does not
before launching anything.

DataLoader workers (`resources.data_workers`) are not in the demand: they are child processes of
the process that trains (the trial's with `train_workers: 0`, else each Train worker), which Ray
neither schedules nor counts, so they cannot make trials wait on each other; they run on that
process's CPUs. Counting them here would refuse sweeps that Ray would run, without reserving
anything; to give them CPUs of their own, raise `cpus_per_worker` (or `cpus_per_trial`) by as
many.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from smsweep.errors import SpecError
from smsweep.spec import registry
from smsweep.spec.config import ResourcesConfig, SweepSpec


@dataclass(frozen=True)
class TrialDemand:
    cpus: float
    gpus: float
    breakdown: str  # human-readable sum, for messages


def trial_demand(resources: ResourcesConfig) -> TrialDemand:
    r = resources
    cpus = r.cpus_per_trial + r.train_workers * r.cpus_per_worker
    cpus += r.scoring_actors * r.cpus_per_actor
    gpus = r.gpus_per_trial + r.scoring_actors * r.gpus_per_actor
    parts = [f"trial {r.cpus_per_trial:g}" + ("" if r.train_workers else " (it trains itself)")]
    if r.train_workers:
        parts.append(f"{r.train_workers} train worker(s) x {r.cpus_per_worker:g}")
    if r.scoring_actors:
        parts.append(f"{r.scoring_actors} scoring actor(s) x {r.cpus_per_actor:g}")
    breakdown = " + ".join(parts) + f" = {cpus:g} CPU"
    if gpus:
        breakdown += f", {gpus:g} GPU"
    return TrialDemand(cpus=cpus, gpus=gpus, breakdown=breakdown)


def check_fits(
    spec: SweepSpec, cpus: float, gpus: float, where: str, concurrent: int | None = None
) -> int:
    """Raise SpecError unless the sweep's concurrent trials (or `concurrent` of them) fit;
    return the concurrency."""
    demand = trial_demand(spec.resources)
    if concurrent is None:
        concurrent = min(spec.search.max_concurrent, spec.search.num_samples)
    if demand.cpus > cpus or demand.gpus > gpus:
        raise SpecError(
            f"one trial needs {demand.breakdown}, but {where} has {cpus:g} CPU and {gpus:g} GPU; "
            "lower resources.train_workers / scoring_actors or their cpus_per_* / gpus_per_*"
        )
    need_cpus, need_gpus = concurrent * demand.cpus, concurrent * demand.gpus
    if need_cpus > cpus or need_gpus > gpus:
        fit = int(
            min(
                cpus // demand.cpus if demand.cpus else concurrent,
                gpus // demand.gpus if demand.gpus else concurrent,
            )
        )
        raise SpecError(
            f"{concurrent} concurrent trials x ({demand.breakdown}) = {need_cpus:g} CPU"
            f"{f', {need_gpus:g} GPU' if need_gpus else ''}, but {where} has {cpus:g} CPU and "
            f"{gpus:g} GPU; set search.max_concurrent: {max(fit, 1)} or lower the per-trial "
            "resources (trials that share CPUs with each other's workers wait forever)"
        )
    return concurrent


def trial_cost(
    spec: SweepSpec, wall_seconds: float, compute_seconds: float, scoring_seconds: float
) -> dict[str, float]:
    """What a trial cost, as the metrics it logs:
    - `cost/seconds`: wall seconds of the attempt that finished it (start-up included);
    - `cost/device_seconds`: what it reserved x those seconds, in GPU-seconds when it reserved
      GPUs, else CPU-seconds (scoring actors count only for strategies that score with a model);
    - `cost/scoring_share`: the share of its compute seconds spent scoring masks."""
    demand = trial_demand(spec.resources)
    cpus, gpus = demand.cpus, demand.gpus
    scores = registry.strategy(spec.masking.strategy).needs_model and spec.pretrain.partitions > 1
    if not scores:
        cpus -= spec.resources.scoring_actors * spec.resources.cpus_per_actor
        gpus -= spec.resources.scoring_actors * spec.resources.gpus_per_actor
    return {
        "cost/seconds": wall_seconds,
        "cost/device_seconds": (gpus if gpus > 0 else cpus) * wall_seconds,
        "cost/scoring_share": scoring_seconds / compute_seconds if compute_seconds > 0 else 0.0,
    }


def cluster_capacity(
    spec: SweepSpec, resources: Mapping[str, float], where: str
) -> tuple[float, float, str]:
    """(CPUs, GPUs, where) the capacity check counts on a Ray cluster: what `resources`
    (`ray.cluster_resources()`) has now, or, with resources.autoscale_cpus / autoscale_gpus set,
    what the cluster's autoscaler can grow to (Ray asks it for nodes while trials wait)."""
    settings = spec.resources
    cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    if settings.autoscale_cpus is None and settings.autoscale_gpus is None:
        return cpus, gpus, where
    if settings.autoscale_cpus is not None:
        cpus = max(cpus, settings.autoscale_cpus)
    if settings.autoscale_gpus is not None:
        gpus = max(gpus, settings.autoscale_gpus)
    return cpus, gpus, f"{where} scaled up (resources.autoscale_cpus / autoscale_gpus)"


def local_capacity(need_gpus: bool) -> tuple[float, float]:
    """CPUs and GPUs of this machine (GPUs counted only when asked, to avoid importing torch)."""
    gpus = 0
    if need_gpus:
        import torch

        gpus = torch.cuda.device_count()
    return float(os.cpu_count() or 1), float(gpus)
