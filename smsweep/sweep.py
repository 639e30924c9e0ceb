"""The sweep's driver: `run` and `resume`. It checks what needs the cluster (`checks`), takes the
experiment's claim, starts the parent MLflow run, and fits Tune (`tuning`: Tune and Optuna;
`trial_entry`: the trial's process; `callbacks`: what the driver hears of each trial); at the end
`summary` ranks, judges and reports.

STORAGE is a local (or shared) directory or an object-store URL (s3://bucket/prefix): every file
below goes through `store.Location`, and Tune and Train write there through pyarrow.

Layout of an experiment directory STORAGE/NAME:
    claim.json         while a driver runs: who it is, with a heartbeat (see `claim`)
    smsweep.json       the resolved spec and settings (`resume` needs nothing else)
    mlflow_run.json    the parent MLflow run's ids
    train/<trial_id>/  each trial's Ray Train run: partition and fine-tune checkpoints, galleries,
                       its last report once it has finished (reports.RESULT_FILE), and the
                       MLflow entries that wait to be logged (tracking.PENDING_FILE)
    finished.json      once every trial has run
    report.html        the dashboard
    ...                Tune's own experiment state (trials, searcher state, results)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import ray
from ray import tune

from smsweep.checks import (
    budget_lines,
    check_metric,
    check_object_store,
    check_study_is_new,
    trial_budgets,
)
from smsweep.engines import claim, cluster, mlflow_store, signals, tracking
from smsweep.engines.callbacks import CloseRuns, Relay, stopped_early
from smsweep.engines.settings import SETTINGS_FILE, SweepSettings
from smsweep.engines.store import Location, check_storage
from smsweep.engines.trial_entry import tune_trial
from smsweep.engines.tuning import default_study, trial_process_gpus, tune_config
from smsweep.errors import SpecError, TrackingUnavailable, one_line
from smsweep.method.data import Source, open_source
from smsweep.report.console import Echo, Output, Progress, quiet_engines, say
from smsweep.spec.config import SweepSpec
from smsweep.spec.names import PROBE_MIOU
from smsweep.summary import FINISHED_FILE, PARTITION0_SAVED, SweepSummary, finish, ranked
from smsweep.trial import integrity, partition0
from smsweep.trial.reports import FINETUNE_METRICS
from smsweep.trial.resources import check_fits, cluster_capacity
from smsweep.verdict.arms import Arm, trials_line

FLOOR_METRICS = ("floor/miou", "floor/pixel_accuracy")  # shown under the leaderboard
# What a leaderboard row keeps: the scores, the floor, and how far the trial got.


PROGRESS_METRICS = ("finetune_evaluation", "plan/finetune_evaluations")


def run_sweep(
    spec: SweepSpec,
    *,
    storage: str | Path | Location,
    name: str | None = None,
    mlflow_uri: str | None = None,
    address: str | None = None,
    source: Source | None = None,
    echo: Echo = say,
    output: Output | None = None,
) -> SweepSummary:
    """Validate everything that needs the cluster, then launch; SpecError before any write.
    `source`: the spec's data source when the caller has opened (scanned) it already."""
    name = name or spec.name
    storage = Location.of(storage)
    check_storage(storage)
    experiment_dir = storage / name
    if storage.remote:
        check_object_store(spec, storage)
    if experiment_dir.exists():
        raise _exists(experiment_dir)
    uri = tracking.absolute_uri(mlflow_uri or spec.tracking.mlflow_uri)
    # sqlite:///relative.db made absolute: `resume` may run from another directory.
    study = tracking.absolute_uri(spec.search.storage) if spec.search.storage else None
    settings = SweepSettings(
        spec=spec,
        name=name,
        experiment_dir=str(experiment_dir),
        mlflow_uri=uri,
        experiment=spec.tracking.experiment or name,
        optuna_storage=study or default_study(experiment_dir),
    )
    if settings.study is not None:
        check_study_is_new(*settings.study)
    return _launch(
        settings, address=address, restore=False, echo=echo, source=source, output=output
    )


def resume_sweep(
    path: str | Path | Location,
    *,
    address: str | None = None,
    echo: Echo = say,
    output: Output | None = None,
) -> SweepSummary:
    experiment_dir = Location.of(path)
    if experiment_dir.remote:
        check_storage(experiment_dir)
    saved = experiment_dir / SETTINGS_FILE
    if not saved.is_file() or not tune.Tuner.can_restore(str(experiment_dir)):
        raise SpecError(
            f"{path} is not a sweep that can be resumed (no {SETTINGS_FILE} or Tune state); "
            "give the directory STORAGE/NAME that `run` printed"
        )
    finished = experiment_dir / FINISHED_FILE
    if finished.is_file():
        done = json.loads(finished.read_text())
        echo(
            f"nothing to resume: sweep {done['name']} finished all {done['trials']} trials at "
            f"{done['at']}; its results: {experiment_dir / 'report.html'}"
        )
        return SweepSummary(experiment_dir, done.get("mlflow_uri", ""), already_finished=True)
    claim.check_free(experiment_dir)  # taken for real once everything is checked
    settings = SweepSettings.read(experiment_dir)
    if not experiment_dir.remote:  # name what a lost node or a full disk cut short
        cache = experiment_dir.parent.path / partition0.CACHE_DIR
        integrity.scan(experiment_dir.path, cache, echo)
    return _launch(settings, address=address, restore=True, echo=echo, output=output)


def _launch(
    settings: SweepSettings,
    *,
    address: str | None,
    restore: bool,
    echo: Echo,
    source: Source | None = None,
    output: Output | None = None,
):
    output = output or Output()
    if not output.verbose:
        quiet_engines()
    spec = settings.spec
    experiment_dir = settings.directory
    uri = settings.mlflow_uri
    tracking.check_reachable(uri)
    if source is None:
        source = open_source(spec.data, seed=spec.seed)  # data errors before Ray starts
    check_metric(spec, source.class_names)
    where = cluster.connect(address, verbose=output.verbose)
    # after ray.init, which installs Ray's own SIGTERM handler
    signals.install(echo, f"stopped: continue with `python -m smsweep resume {experiment_dir}`")
    held = None
    try:
        check_fits(spec, *cluster_capacity(spec, ray.cluster_resources(), where))
        cluster.check_multinode(experiment_dir.parent, uri)
        # Everything is checked: the claim is the first write, and the only one for a driver
        # that finds the experiment taken.
        held = claim.take(experiment_dir) if restore else _create(experiment_dir)
        if held.took_over:
            echo(f"took over {experiment_dir} from a driver that is gone ({held.took_over})")
        settings.write()
        sweep_run = tracking.start_sweep_run(
            uri, settings.experiment, settings.name, _sweep_params(spec), experiment_dir
        )
        echo(f"sweep {settings.name}: {trials_line(spec.search)} on {where}")
        echo(f"experiment: {experiment_dir}    MLflow: {uri}")
        echo("per trial:")
        for line in budget_lines(spec, source):
            echo(line)
        summary = _fit(spec, settings, sweep_run, source, restore=restore, echo=echo, output=output)
        if summary.outage is None:
            try:
                finish(spec, sweep_run, summary, echo, settings.study)
            except Exception:
                summary.outage = mlflow_store.unreachable(uri)
                if summary.outage is None:
                    raise
        if summary.outage is not None:
            raise TrackingUnavailable(
                f"{summary.outage}: the sweep stopped. Once MLflow answers again, continue "
                f"with `python -m smsweep resume {experiment_dir}`"
            )
        return summary
    finally:
        try:
            ray.shutdown()
        finally:
            signals.uninstall()
            if held is not None:
                held.release()


def _fit(
    spec, settings, sweep_run, source, *, restore: bool, echo: Echo, output: Output
) -> SweepSummary:
    experiment_dir = settings.directory
    trainable = tune.with_resources(
        tune.with_parameters(tune_trial, settings=settings, sweep_run=sweep_run, source=source),
        {"cpu": spec.resources.cpus_per_trial, "gpu": trial_process_gpus(spec)},
    )
    search = spec.search
    total = search.trials
    progress = Progress(
        total,
        search.score_metric,
        search.mode,
        echo,
        repeats=search.repeats,
        detail=not output.quiet,
        live=output.live,
    )
    closer = CloseRuns(sweep_run, echo)
    run_config = tune.RunConfig(
        name=experiment_dir.name,
        storage_path=str(experiment_dir.parent),
        failure_config=tune.FailureConfig(max_failures=spec.search.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        callbacks=[Relay()],
        verbose=0,
    )
    Relay.listeners[:] = [progress, closer]
    if restore:
        tuner = tune.Tuner.restore(
            str(experiment_dir), trainable, resume_unfinished=True, restart_errored=True
        )
    else:
        rounds = max(budget.finetune_evaluations for _, budget in trial_budgets(spec, source))
        study = settings.study
        tuner = tune.Tuner(
            trainable, tune_config=tune_config(spec, rounds, study), run_config=run_config
        )
    # Tune saves its experiment state every few seconds by default ("auto"); a sweep killed
    # between a trial's end and the next save would run that trial again on resume.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: only our own lines
    # Pretraining reports progress without the score (it comes with fine-tuning); the metric
    # itself is checked before launch (`check_metric`).
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    results = tuner.fit()
    rows = []
    shown = {*FINETUNE_METRICS, *FLOOR_METRICS, *PROGRESS_METRICS, *search.objective_metrics}
    shown.add(PARTITION0_SAVED)
    if spec.finetune.probe:
        shown.add(PROBE_MIOU)
    for result in results:
        trial_id = closer.ids.get(result.path) or (result.metrics or {}).get("trial_id", "?")
        status = closer.statuses.get(trial_id, "ERROR" if result.error else "TERMINATED")
        if (result.metrics or {}).get("failure"):
            status = "FAILED"  # ended by a non-finite loss: see its MLflow run
        elif status == "TERMINATED" and stopped_early(result.metrics or {}):
            status = "STOPPED_EARLY"  # by ASHA
        arm = Arm.of(result.config or {})
        reason = {"reason": one_line(result.error)} if result.error is not None else {}
        rows.append(
            {"trial_id": trial_id, "status": status, "params": arm.params, "arm": arm}
            | reason
            | {k: v for k, v in (result.metrics or {}).items() if k in shown or _fine_tune(k)}
        )
    summary = SweepSummary(experiment_dir, settings.mlflow_uri)
    summary.rows = ranked(rows, search.score_metric, search.mode)
    summary.interrupted = closer.interrupted(total) or signals.received()
    summary.trial_ids = set(closer.statuses)
    summary.outage = closer.outage
    return summary


def _create(experiment_dir: Location) -> claim.Claim:
    try:
        return claim.create(experiment_dir)
    except FileExistsError:  # another `run` of this experiment created it first
        raise _exists(experiment_dir) from None


def _exists(experiment_dir: Location) -> SpecError:
    # A directory without settings has just been created: its claim follows in a moment.
    new = not (experiment_dir / SETTINGS_FILE).exists()
    holder = claim.read(experiment_dir, wait_s=2.0 if new else 0.0)
    if holder is not None and claim.stale_reason(holder) is None:
        return claim.Held(experiment_dir, holder, also="choose another --name")
    return SpecError(
        f"{experiment_dir} already exists: continue it with `python -m smsweep resume "
        f"{experiment_dir}`, or choose another --name"
    )


def _sweep_params(spec: SweepSpec) -> dict[str, Any]:
    params = spec.tracked()
    params |= {f"search.{k}": v for k, v in spec.search.model_dump(mode="json").items()}
    return params


def _fine_tune(key: str) -> bool:
    """`finetune/<f>/<metric>`: one fine-tune's score (finetune.repeats), for the variance
    components the summary reports."""
    parts = key.split("/")
    return len(parts) == 3 and parts[0] == "finetune" and parts[1].isdigit()
