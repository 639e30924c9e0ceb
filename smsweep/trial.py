"""One trial, independent of Tune: one `TorchTrainer.fit` that runs `trainloop.train_loop`.

`run_trial(spec, report=...)` can be called from a plain script with Ray initialised, or from a
Tune function (which passes a `report` that forwards to `ray.tune.report`). The Train controller
runs callbacks in its own process, so a callback pushes every report onto a Ray queue and the
calling thread drains it while `fit` runs in a background thread: reports reach `report` in the
caller's process, in order, as they happen.

Restarting: the Train run is named `run_name` under `storage_path` (a local directory or an
object-store URL, see `store`); calling `run_trial` again with the same name resumes after the
last checkpoint (Ray Train V2 restores a run of the same name). Once the last report is in, this
process writes `RESULT_FILE` beside the run: a trial that finished before a crash is replayed
from it, not run again.

`resources.train_workers: 0` runs the same loop in the calling process instead (no Train start-up,
~15 s less per trial on a small machine; one worker; checkpoints in the same place, written by
`session.LocalSession`), for laptops and quick looks.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig, UserCallback
from ray.train.torch import TorchTrainer
from ray.util.queue import Empty, Queue

from smsweep.config import SweepSpec
from smsweep.data import Source, open_source
from smsweep.resources import check_fits, cluster_capacity
from smsweep.store import Location

Report = Callable[[dict[str, Any], "Location | None"], None]  # (metrics, checkpoint directory)
RESULT_FILE = "result.json"  # a finished trial's last report, beside its Train run
_DONE = "__fit_finished__"


@dataclass
class TrialOutcome:
    metrics: dict[str, Any]  # the last report: final miou, iou/<class>, pixel_accuracy, ...
    reports: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)  # one per report, in order
    galleries: list[Location] = field(default_factory=list)  # partition_NNN.png, in order
    trainer_fits: int = 0
    wall_seconds: float = 0.0

    @property
    def checkpoint(self) -> str | None:
        return self.checkpoints[-1] if self.checkpoints else None


class _ForwardReports(UserCallback):
    """Runs in the Train controller: hands rank 0's metrics and the checkpoint's path (on the
    run's storage filesystem) over."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue

    def after_report(self, run_context, metrics, checkpoint) -> None:
        self.queue.put((metrics[0], checkpoint.path if checkpoint is not None else None))


def run_trial(
    spec: SweepSpec,
    *,
    storage_path: str | Path | Location,
    run_name: str,
    report: Report | None = None,
    source: Source | None = None,
    run_ids: dict[str, str] | None = None,
    partition0_cache: str | Path | None = None,
) -> TrialOutcome:
    """Pretrain every partition and fine-tune, in one Ray Train fit; return what it reported.

    `spec` is a resolved trial spec (no search space left to sample). `run_ids` are stored in
    every checkpoint for the tracking layer. `partition0_cache` (a folder every worker sees):
    partition 0 comes from there when a trial with the same partition-0 key stored it, and is
    stored there otherwise (`smsweep.partition0`).
    Raises SpecError (before launching anything) when the trial cannot fit the cluster, and
    TrialFailed carrying the worker's error when the fit fails.
    """
    started, started_at = time.perf_counter(), time.time()
    storage = Location.of(storage_path)
    run_dir = storage / run_name
    check_fits(
        spec, *cluster_capacity(spec, ray.cluster_resources(), "the Ray cluster"), concurrent=1
    )
    finished = finished_metrics(run_dir)
    if finished is not None:
        # A trial that completed before a crash is not run again: its result is replayed.
        replay = {**finished, "replayed": True}
        if report is not None:
            report(replay, None)
        return TrialOutcome(
            metrics=replay, reports=[replay], wall_seconds=time.perf_counter() - started
        )
    config = {  # what trainloop.Trial reads
        "spec": spec.model_dump(mode="json"),
        "source": source if source is not None else open_source(spec.data, seed=spec.seed),
        "run_ids": run_ids or {},
        "started_at": started_at,
        "partition0_cache": str(partition0_cache) if partition0_cache else None,
    }
    if spec.resources.train_workers == 0:
        return _run_here(spec, run_dir, report, config, started)
    resources = spec.resources
    use_gpu = resources.gpus_per_trial > 0
    per_worker = {"CPU": resources.cpus_per_worker}
    if use_gpu:
        per_worker["GPU"] = resources.gpus_per_trial / resources.train_workers
    queue = Queue(actor_options={"num_cpus": 0})
    trainer = TorchTrainer(
        _train_loop,
        train_loop_config=config,
        scaling_config=ScalingConfig(
            num_workers=resources.train_workers, use_gpu=use_gpu, resources_per_worker=per_worker
        ),
        run_config=RunConfig(
            name=run_name,
            storage_path=str(storage),
            callbacks=[_ForwardReports(queue)],
            failure_config=FailureConfig(max_failures=0),  # retries belong to the sweep
            checkpoint_config=CheckpointConfig(num_to_keep=spec.tracking.keep_checkpoints),
        ),
    )
    outcome = TrialOutcome(metrics={})
    finished: dict[str, Any] = {}

    def fit() -> None:
        try:
            finished["result"] = trainer.fit()
        except BaseException as error:  # handed to the calling thread below
            finished["error"] = error
        finally:
            queue.put((_DONE, None))

    outcome.trainer_fits += 1
    thread = threading.Thread(target=fit, name=f"fit-{run_name}", daemon=True)
    thread.start()
    try:
        while True:
            try:
                metrics, checkpoint = queue.get(timeout=1.0)
            except Empty:
                continue
            if metrics == _DONE:
                break
            saved = run_dir.at(checkpoint) if checkpoint is not None else None
            _record(outcome, metrics, saved, run_dir)
            if report is not None:
                report(metrics, saved)
        thread.join()
    finally:
        ray.kill(queue.actor)
    outcome.wall_seconds = time.perf_counter() - started
    if "error" in finished:
        raise TrialFailed(run_name, finished["error"])
    return outcome


def _run_here(
    spec: SweepSpec,
    run_dir: Location,
    report: Report | None,
    config: dict[str, Any],
    started: float,
) -> TrialOutcome:
    """`train_workers: 0`: the training loop in this process, with the trial's CPUs as torch
    threads (Ray sets OMP_NUM_THREADS to the whole CPUs only: 1 for 1.5)."""
    import torch

    from smsweep.session import LocalSession
    from smsweep.trainloop import Trial

    if not torch.cuda.is_available():
        torch.set_num_threads(max(1, math.ceil(spec.resources.cpus_per_trial)))
    outcome = TrialOutcome(metrics={})

    def reported(metrics: dict[str, Any], checkpoint: Location | None) -> None:
        _record(outcome, metrics, checkpoint, run_dir)
        if report is not None:
            report(metrics, checkpoint)

    try:
        session = LocalSession(run_dir, on_report=reported, keep=spec.tracking.keep_checkpoints)
        Trial(config, session).run()
    except Exception as error:
        raise TrialFailed(run_dir.name, error) from error
    outcome.wall_seconds = time.perf_counter() - started
    return outcome


class TrialFailed(RuntimeError):
    """The trial's fit failed; `cause` is the first worker's exception when there is one."""

    def __init__(self, run_name: str, error: BaseException) -> None:
        failures = getattr(error, "worker_failures", None) or {}
        self.cause = next(iter(failures.values()), error)
        super().__init__(f"trial {run_name} failed: {error}")

    @property
    def non_finite(self) -> bool:
        """A NaN or infinite loss: running it again would fail again."""
        from smsweep.pretrain import NonFiniteLoss

        return isinstance(self.cause, (NonFiniteLoss, FloatingPointError)) or (
            "NonFiniteLoss" in type(self.cause).__name__
        )


def _record(
    outcome: TrialOutcome, metrics: dict[str, Any], checkpoint: Location | None, run_dir: Location
) -> None:
    """Keep a report; copy its gallery out of the checkpoint (old checkpoints are deleted) to
    `run_dir/galleries`; the last report (`done`) goes to `run_dir/RESULT_FILE`."""
    outcome.reports.append(metrics)
    outcome.metrics = metrics
    if checkpoint is not None:
        outcome.checkpoints.append(str(checkpoint))
        for png in checkpoint.files("partition_*.png"):
            copy = run_dir / "galleries" / png.name
            copy.write_bytes(png.read_bytes())
            outcome.galleries.append(copy)
    if metrics.get("done"):
        (run_dir / RESULT_FILE).write_text(json.dumps({"metrics": metrics}))


def _train_loop(config: dict[str, Any]) -> None:
    """Imports the training code in the Train worker only: the trial process never loads the
    model libraries (segmentation-models-pytorch and timm take seconds to import)."""
    from smsweep.trainloop import train_loop

    train_loop(config)


def finished_metrics(run_dir: str | Path | Location) -> dict[str, Any] | None:
    """The last report of the trial whose Train run is `run_dir`, once it has finished (from
    its RESULT_FILE), else None."""
    try:
        return json.loads((Location.of(run_dir) / RESULT_FILE).read_text())["metrics"]
    except FileNotFoundError:
        return None
    except (ValueError, KeyError):
        return None  # cut off mid-write (a local file): the run itself decides what follows
