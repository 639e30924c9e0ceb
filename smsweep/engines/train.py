"""One trial, independent of Tune: one `TorchTrainer.fit` that runs `trainloop.train_loop`.

`run_trial(spec, ...)` can be called from a plain script with Ray initialised, or from a Tune
function. Reports take one path (`smsweep.trial.reports`): rank 0 of the training loop logs each one
to the trial's MLflow run itself (`tracking`), and hands it to Ray Train with its checkpoint;
with `to_tune`, Ray's `TuneReportCallback` passes Train's reports on to Tune. The reports of the
attempt come back as the loop's return value (`Result.return_value`).

Restarting: the Train run is named `run_name` under `storage_path` (a local directory or an
object-store URL, see `store`); calling `run_trial` again with the same name resumes after the
last checkpoint (Ray Train V2 restores a run of the same name). Rank 0 writes `RESULT_FILE`
beside the run with the last report: a trial that finished before a crash is replayed from it,
not run again.

`resources.train_workers: 0` runs the same loop in the calling process instead (no Train start-up,
~15 s less per trial on a small machine; one worker; checkpoints in the same place, written by
`session.LocalSession`), for laptops and quick looks.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from smsweep.engines.recorder import finished_report
from smsweep.engines.store import Location
from smsweep.engines.tracking import TrialTracking
from smsweep.method.data import Source, open_source
from smsweep.spec.config import SweepSpec
from smsweep.trial.inputs import TrialInput
from smsweep.trial.reports import TrialReport
from smsweep.trial.resources import check_fits, cluster_capacity


@dataclass
class TrialOutcome:
    reports: list[TrialReport] = field(default_factory=list)  # this attempt's, in order
    checkpoint: str | None = None  # the last one stored
    trainer_fits: int = 0
    wall_seconds: float = 0.0

    @property
    def last(self) -> TrialReport | None:
        return self.reports[-1] if self.reports else None

    @property
    def metrics(self) -> dict[str, Any]:
        """The last report as a flat dict: final miou, iou/<class>, pixel_accuracy, ..."""
        return self.last.flat() if self.last is not None else {}

    @property
    def replayed(self) -> bool:
        return self.last is not None and self.last.replayed

    @property
    def galleries(self) -> list[Location]:
        """partition_NNN.png beside the run, in order."""
        return [Location.of(r.gallery) for r in self.reports if r.gallery is not None]


def run_trial(
    spec: SweepSpec,
    *,
    storage_path: str | Path | Location,
    run_name: str,
    source: Source | None = None,
    tracking: TrialTracking | None = None,
    to_tune: bool = False,
    partition0_cache: str | Path | None = None,
) -> TrialOutcome:
    """Pretrain every partition and fine-tune, in one Ray Train fit; return what it reported.

    `spec` is a resolved trial spec (no search space left to sample). `tracking`: the trial's
    MLflow run, which the loop logs into. `to_tune`: called in a Tune function, whose trial gets
    every report. `partition0_cache` (a folder every worker sees): partition 0 comes from there
    when a trial with the same partition-0 key stored it, and is stored there otherwise
    (`smsweep.trial.partition0`).
    Raises SpecError (before launching anything) when the trial cannot fit the cluster, and
    TrialFailed carrying the worker's error when the fit fails.
    """
    started, started_at = time.perf_counter(), time.time()
    storage = Location.of(storage_path)
    run_dir = storage / run_name
    check_fits(
        spec, *cluster_capacity(spec, ray.cluster_resources(), "the Ray cluster"), concurrent=1
    )
    finished = finished_report(run_dir)
    if finished is not None:
        # A trial that completed before a crash is not run again: its result is replayed.
        replay = finished.again()
        if to_tune:
            from ray import tune

            tune.report(replay.for_tune())
        return TrialOutcome(reports=[replay], wall_seconds=time.perf_counter() - started)
    trial = TrialInput(
        spec=spec,
        source=source if source is not None else open_source(spec.data, seed=spec.seed),
        run_dir=str(run_dir),
        tracking=tracking,
        partition0_cache=str(partition0_cache) if partition0_cache else None,
        started_at=started_at,
    )
    if spec.resources.train_workers == 0:
        return _run_here(spec, run_dir, trial, started, to_tune)
    resources = spec.resources
    use_gpu = resources.gpus_per_trial > 0
    per_worker = {"CPU": resources.cpus_per_worker}
    if use_gpu:
        per_worker["GPU"] = resources.gpus_per_trial / resources.train_workers
    callbacks = []
    if to_tune:
        from ray.tune.integration.ray_train import TuneReportCallback

        callbacks.append(TuneReportCallback())
    trainer = TorchTrainer(
        _train_loop,
        train_loop_config={"trial": trial},
        scaling_config=ScalingConfig(
            num_workers=resources.train_workers, use_gpu=use_gpu, resources_per_worker=per_worker
        ),
        run_config=RunConfig(
            name=run_name,
            storage_path=str(storage),
            callbacks=callbacks,
            failure_config=FailureConfig(max_failures=0),  # retries belong to the sweep
            checkpoint_config=CheckpointConfig(num_to_keep=spec.tracking.keep_checkpoints),
        ),
    )
    try:
        result = trainer.fit()
    except Exception as error:
        raise TrialFailed(run_name, error) from error
    checkpoint = str(run_dir.at(result.checkpoint.path)) if result.checkpoint else None
    reports = list(result.return_value or [])
    return TrialOutcome(reports, checkpoint, 1, time.perf_counter() - started)


def _run_here(
    spec: SweepSpec, run_dir: Location, trial: TrialInput, started: float, to_tune: bool
) -> TrialOutcome:
    """`train_workers: 0`: the training loop in this process, with the trial's CPUs as torch
    threads (Ray sets OMP_NUM_THREADS to the whole CPUs only: 1 for 1.5)."""
    import torch

    from smsweep.engines.session import LocalSession
    from smsweep.engines.trainloop import Trial

    if not torch.cuda.is_available():
        torch.set_num_threads(max(1, math.ceil(spec.resources.cpus_per_trial)))
    on_report = None
    if to_tune:
        from ray import tune

        def on_report(metrics: dict[str, Any], _checkpoint) -> None:
            tune.report(metrics)

    session = LocalSession(run_dir, on_report=on_report, keep=spec.tracking.keep_checkpoints)
    try:
        reports = Trial(trial, session).run()
    except Exception as error:
        raise TrialFailed(run_dir.name, error) from error
    checkpoints = session.checkpoints()
    checkpoint = str(checkpoints[-1]) if checkpoints else None
    return TrialOutcome(reports, checkpoint, 0, time.perf_counter() - started)


class TrialFailed(RuntimeError):
    """The trial's fit failed; `cause` is the first worker's exception when there is one."""

    def __init__(self, run_name: str, error: BaseException) -> None:
        failures = getattr(error, "worker_failures", None) or {}
        self.cause = next(iter(failures.values()), error)
        # args are the constructor's own: Ray and Tune copy and pickle the exception
        super().__init__(run_name, error)

    def __str__(self) -> str:
        return f"trial {self.args[0]} failed: {self.args[1]}"

    @property
    def non_finite(self) -> bool:
        """A NaN or infinite loss: running it again would fail again."""
        from smsweep.method.pretrain import NonFiniteLoss

        return isinstance(self.cause, (NonFiniteLoss, FloatingPointError)) or (
            "NonFiniteLoss" in type(self.cause).__name__
        )


def _train_loop(config: dict[str, Any]) -> list[TrialReport]:
    """Imports the training code in the Train worker only: the trial process never loads the
    model libraries (segmentation-models-pytorch and timm take seconds to import)."""
    from smsweep.engines.trainloop import train_loop

    return train_loop(config)
