"""The trial's process: the Tune function that runs one trial (`trial.run_trial`) in its own
nested MLflow run."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any

from ray import tune

from smsweep.engines import tracking
from smsweep.engines.settings import SweepSettings
from smsweep.engines.store import Location
from smsweep.method.data import Source, open_source
from smsweep.spec.config import SweepSpec
from smsweep.spec.load import resolve
from smsweep.trial import partition0
from smsweep.verdict.arms import Arm


def tune_trial(
    config: dict[str, Any],
    settings: SweepSettings,
    sweep_run: tracking.SweepRun,
    source: Source,
):
    """The Tune function: one trial, tracked in its own nested MLflow run. `source` is the
    sweep's opened data source, reused unless the trial searches a `data.*` key."""
    from smsweep.engines.train import TrialFailed, run_trial  # Ray Train: in the trial process only

    arm = Arm.of(config)
    base = settings.spec
    spec = resolve(base, {**arm.params, "repeat": arm.repeat})
    context = tune.get_context()
    trial_id = context.get_trial_id()
    run_dir = settings.directory / "train" / trial_id
    run = tracking.TrialRun(
        sweep_run,
        trial_id,
        arm.run_name(base.search.repeats),
        spec.tracked(),
        pending=run_dir / tracking.PENDING_FILE,
        tags=arm.tags(),  # its arm, repeat and phase (search or confirm)
    )
    if not run.resumed:
        run.log_text(spec.to_yaml(), "config.yaml")
    if spec.data != base.data or spec.seed != base.seed:
        source = open_source(spec.data, seed=spec.seed)

    try:
        outcome = run_trial(
            spec,
            storage_path=run_dir.parent,
            run_name=trial_id,
            source=source,
            tracking=run.handle(),  # the training loop logs its reports into the trial's run
            to_tune=True,
            partition0_cache=partition0_cache(spec, settings.directory),
        )
    except TrialFailed as failure:
        run.set_tag("smsweep.failure", str(failure.cause)[:5000])
        run.end("FAILED")
        if not failure.non_finite:
            raise  # Tune retries it (search.max_failures), from its last checkpoint
        # Retrying cannot help: end the trial with the reason; Optuna records it as failed.
        tune.report(
            {
                spec.search.score_metric: math.nan,
                "failure": f"non-finite loss: {failure.cause}",
            }
        )
        return
    except BaseException:
        with contextlib.suppress(Exception):  # the trial's own error is the one to report
            run.end("FAILED")
        raise
    if not outcome.replayed:
        overhead = outcome.wall_seconds - outcome.metrics.get("compute_seconds", 0.0)
        run.log(
            {"wall_seconds": outcome.wall_seconds, "fixed_overhead_seconds": overhead},
            texts={"iou_per_class.csv": tracking.iou_table(outcome.metrics, source.class_names)},
        )
    run.end("FINISHED")  # logs the pending entries first; raises LogFailed while MLflow fails


def partition0_cache(spec: SweepSpec, experiment_dir: Location) -> Path | None:
    """Where trials share partition 0: STORAGE/partition0 on a local or shared filesystem;
    none with search.reuse_partition0 off or in an object store (entries are renamed into
    place, which an object store cannot do atomically)."""
    if not spec.search.reuse_partition0 or experiment_dir.remote:
        return None
    return experiment_dir.parent.path / partition0.CACHE_DIR
