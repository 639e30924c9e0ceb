"""The sweep: Ray Tune + Optuna over `run_trial`, tracked in MLflow, resumable.

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

import contextlib
import json
import math
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import optuna
import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from smsweep import claim, cluster, integrity, mlflow_store, partition0, signals, tracking
from smsweep.arms import Arm, score_label, trials_line
from smsweep.checks import budget_lines, trial_budgets
from smsweep.config import SweepSpec
from smsweep.console import (
    Echo,
    Output,
    Progress,
    arms_table,
    leaderboard,
    pareto_lines,
    quiet_engines,
    say,
)
from smsweep.data import Source, open_source
from smsweep.errors import SpecError, TrackingUnavailable, one_line
from smsweep.names import ROBUST_MEAN, ROBUST_PREFIX
from smsweep.reports import FINETUNE_METRICS
from smsweep.resources import check_fits, cluster_capacity
from smsweep.searcher import Arms, DefineByRun
from smsweep.settings import SETTINGS_FILE, SweepSettings
from smsweep.space import control_params, grid_points
from smsweep.spec import resolve
from smsweep.stats import ParetoPoint, Verdict, judge, pareto
from smsweep.store import Location, check_storage

OPTUNA_FILE = "optuna.db"  # the study's default storage, beside Tune's state
STOPPED_EARLY_TAG = "smsweep.stopped_early"  # a trial run's tag: ASHA stopped it
FINISHED_FILE = "finished.json"  # written when a sweep has run every trial: `resume` stops there
COST_METRICS = ("cost/seconds", "cost/device_seconds", "cost/scoring_share")  # at a trial's end
PARTITION0_SAVED = "cost/partition0_saved_seconds"  # training seconds the partition-0 cache saved
FLOOR_METRICS = ("floor/miou", "floor/pixel_accuracy")  # shown under the leaderboard
# What a leaderboard row keeps: the scores, the floor, and how far the trial got.
PROGRESS_METRICS = ("finetune_evaluation", "plan/finetune_evaluations")


@dataclass
class SweepSummary:
    experiment_dir: Location
    mlflow_uri: str
    rows: list[dict[str, Any]] = field(default_factory=list)  # best first
    interrupted: bool = False
    trial_ids: set[str] = field(default_factory=set)  # every trial Tune knows
    outage: str | None = None  # why the sweep stopped early: MLflow does not answer
    already_finished: bool = False  # `resume` of a sweep that had run every trial
    verdict: Verdict | None = None  # the arms over their repeats, once the sweep has finished

    @property
    def finished(self) -> int:
        return sum(row["status"] == "TERMINATED" for row in self.rows)

    @property
    def exit_code(self) -> int:
        """130 interrupted; 1 when no trial gave a result; else 0."""
        if self.interrupted:
            return 130
        if self.already_finished:
            return 0
        return 0 if self.finished else 1


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
        _check_object_store(spec, storage)
    if experiment_dir.exists():
        raise _exists(experiment_dir)
    uri = tracking.absolute_uri(mlflow_uri or spec.tracking.mlflow_uri)
    # sqlite:///relative.db made absolute: `resume` may run from another directory.
    study = tracking.absolute_uri(spec.search.storage) if spec.search.storage else None
    settings = SweepSettings(
        spec=spec.model_dump(mode="json"),
        name=name,
        experiment_dir=str(experiment_dir),
        mlflow_uri=uri,
        experiment=spec.tracking.experiment or name,
        optuna_storage=study or _default_study(experiment_dir),
    )
    if settings.study is not None:
        _check_study_is_new(*settings.study)
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
    spec = settings.sweep_spec()
    experiment_dir = settings.directory
    uri = settings.mlflow_uri
    tracking.check_reachable(uri)
    if source is None:
        source = open_source(spec.data, seed=spec.seed)  # data errors before Ray starts
    _check_metric(spec, source.class_names)
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
                _finish(spec, sweep_run, summary, echo, settings.study)
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
        tune.with_parameters(
            tune_trial, settings=settings, sweep_run=sweep_run.__dict__, source=source
        ),
        {"cpu": spec.resources.cpus_per_trial, "gpu": _trial_process_gpus(spec)},
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
    closer = _CloseRuns(sweep_run, echo)
    run_config = tune.RunConfig(
        name=experiment_dir.name,
        storage_path=str(experiment_dir.parent),
        failure_config=tune.FailureConfig(max_failures=spec.search.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        callbacks=[_Relay()],
        verbose=0,
    )
    _Relay.listeners[:] = [progress, closer]
    if restore:
        tuner = tune.Tuner.restore(
            str(experiment_dir), trainable, resume_unfinished=True, restart_errored=True
        )
    else:
        rounds = max(budget.finetune_evaluations for _, budget in trial_budgets(spec, source))
        study = settings.study
        tuner = tune.Tuner(
            trainable, tune_config=_tune_config(spec, rounds, study), run_config=run_config
        )
    # Tune saves its experiment state every few seconds by default ("auto"); a sweep killed
    # between a trial's end and the next save would run that trial again on resume.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: only our own lines
    # Pretraining reports progress without the score (it comes with fine-tuning); the metric
    # itself is checked before launch (`_check_metric`).
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    results = tuner.fit()
    rows = []
    shown = {*FINETUNE_METRICS, *FLOOR_METRICS, *PROGRESS_METRICS, *search.objective_metrics}
    shown.add(PARTITION0_SAVED)
    for result in results:
        trial_id = closer.ids.get(result.path) or (result.metrics or {}).get("trial_id", "?")
        status = closer.statuses.get(trial_id, "ERROR" if result.error else "TERMINATED")
        if (result.metrics or {}).get("failure"):
            status = "FAILED"  # ended by a non-finite loss: see its MLflow run
        elif status == "TERMINATED" and _stopped_early(result.metrics or {}):
            status = "STOPPED_EARLY"  # by ASHA
        arm = Arm.of(result.config or {})
        reason = {"reason": one_line(result.error)} if result.error is not None else {}
        rows.append(
            {"trial_id": trial_id, "status": status, "params": arm.params, "arm": arm}
            | reason
            | {k: v for k, v in (result.metrics or {}).items() if k in shown}
        )
    summary = SweepSummary(experiment_dir, settings.mlflow_uri)
    summary.rows = _ranked(rows, search.score_metric, search.mode)
    summary.interrupted = closer.interrupted(total) or signals.received()
    summary.trial_ids = set(closer.statuses)
    summary.outage = closer.outage
    return summary


def _trial_process_gpus(spec: SweepSpec) -> float:
    """The trial's own process holds GPUs only when it trains itself (train_workers: 0);
    otherwise its Train workers hold them."""
    resources = spec.resources
    return resources.gpus_per_trial if resources.train_workers == 0 else 0


def _stopped_early(metrics: dict[str, Any]) -> bool:
    """A trial that ended before its last validation (ASHA stopped it)."""
    planned = metrics.get("plan/finetune_evaluations")
    reached = metrics.get("finetune_evaluation")
    return planned is not None and reached is not None and reached < planned


def _check_study_is_new(url: str, name: str) -> None:
    """A new sweep must not continue another sweep's study in a shared storage."""
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return  # a new file: nothing to collide with, and nothing written here
    try:
        names = optuna.study.get_all_study_names(storage=url)
    except Exception as error:
        raise SpecError(
            f"search.storage {url!r} cannot be opened ({str(error).splitlines()[0]}); give an "
            "Optuna storage URL such as sqlite:///studies.db or postgresql://host/db"
        ) from None
    if name in names:
        raise SpecError(
            f"the Optuna storage {url} already holds a study named {name!r}; choose another "
            "--name, or continue that sweep with `python -m smsweep resume`"
        )


def _tune_config(
    spec: SweepSpec, evaluations: int, study: tuple[str, str] | None = None
) -> tune.TuneConfig:
    """Tune's settings; `evaluations`: the most fine-tuning validations a trial reports (ASHA's
    time axis); `study`: (storage URL, name) of the Optuna study."""
    search = spec.search
    searcher = None
    if _searches(spec):
        strategies = search.space.get("masking.strategy")
        points = []
        if strategies is not None and strategies.choice is not None and not strategies.when:
            points = [{"masking.strategy": s} for s in strategies.choice][: search.num_samples]
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own lines say what runs
        sampler = None  # OptunaSearch's default: TPE seeded with `seed`
        if search.sampler == "random":
            sampler = optuna.samplers.RandomSampler(seed=spec.seed)
        elif search.sampler == "grid":
            # Every distinct combination once, as queued trials; the sampler is never asked (a
            # key a point leaves out is inactive there). Optuna's GridSampler cannot express
            # `when`: it would run the combinations a condition makes equal several times.
            points = grid_points(search.space, spec.flat())
            sampler = optuna.samplers.RandomSampler(seed=spec.seed)
        searcher = OptunaSearch(
            space=DefineByRun(dict(search.space), spec.flat()),
            # several objectives: Optuna's multi-objective study (the Pareto front)
            metric=list(search.objective_metrics) if search.objectives else search.score_metric,
            mode=list(search.objective_modes) if search.objectives else search.mode,
            sampler=sampler,
            seed=None if sampler else spec.seed,
            points_to_evaluate=points or None,
            storage=optuna.storages.RDBStorage(study[0]) if study else None,
            study_name=study[1] if study else None,
        )
        searcher = Arms(searcher, control_params(spec), search.repeats)
    scheduler = None
    if search.scheduler == "asha":
        scheduler = ASHAScheduler(
            time_attr="finetune_evaluation",
            max_t=evaluations,
            grace_period=min(search.grace_period, evaluations),
            reduction_factor=2,
        )
    return tune.TuneConfig(
        metric=search.score_metric,
        mode=search.mode,
        search_alg=searcher,
        scheduler=scheduler,
        num_samples=spec.search.trials,
        max_concurrent_trials=search.max_concurrent,
        reuse_actors=True,  # the trial process (and its imports) serves trial after trial
    )


def tune_trial(
    config: dict[str, Any], settings: SweepSettings, sweep_run: dict[str, str], source: Source
):
    """The Tune function: one trial, tracked in its own nested MLflow run. `source` is the
    sweep's opened data source, reused unless the trial searches a `data.*` key."""
    from smsweep.trial import TrialFailed, run_trial  # Ray Train: in the trial process only

    arm = Arm.of(config)
    base = settings.sweep_spec()
    spec = resolve(base, {**arm.params, "repeat": arm.repeat})
    context = tune.get_context()
    trial_id = context.get_trial_id()
    run_dir = settings.directory / "train" / trial_id
    run = tracking.TrialRun(
        tracking.SweepRun(**sweep_run),
        trial_id,
        context.get_trial_name(),
        spec.tracked(),
        pending=run_dir / tracking.PENDING_FILE,
        tags=arm.tags(),
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
            partition0_cache=_partition0_cache(spec, settings.directory),
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


def _partition0_cache(spec: SweepSpec, experiment_dir: Location) -> Path | None:
    """Where trials share partition 0: STORAGE/partition0 on a local or shared filesystem;
    none with search.reuse_partition0 off or in an object store (entries are renamed into
    place, which an object store cannot do atomically)."""
    if not spec.search.reuse_partition0 or experiment_dir.remote:
        return None
    return experiment_dir.parent.path / partition0.CACHE_DIR


class _Relay(tune.Callback):
    """The one callback Tune holds: it passes Tune's events on to this driver's listeners
    (`Progress`, `_CloseRuns`). Tune pickles its callbacks with the experiment and a restored
    Tuner uses the unpickled copies (Tuner.restore takes no callbacks); a relay carries no state,
    so its copy reaches the listeners of the driver that resumes."""

    listeners: ClassVar[list[tune.Callback]] = []  # this process's, set before each fit

    def _forward(hook: str):
        def forward(self, *args, **kwargs) -> None:
            for listener in self.listeners:
                getattr(listener, hook)(*args, **kwargs)

        return forward

    on_trial_start = _forward("on_trial_start")
    on_trial_result = _forward("on_trial_result")
    on_trial_complete = _forward("on_trial_complete")
    on_trial_error = _forward("on_trial_error")
    on_trial_recover = _forward("on_trial_recover")
    on_experiment_end = _forward("on_experiment_end")
    del _forward


class _CloseRuns(tune.Callback):
    """Driver side: a trial that Tune stopped or that died without ending its run gets its
    final status here; at the end, every run still RUNNING is closed.

    When MLflow stops answering (a trial attempt failed and the store does not answer, or a
    call here failed), the sweep stops as Ctrl-C stops it: Tune handles SIGUSR1 like SIGINT,
    stopping the trials and saving its state for `resume`. `outage` says why."""

    def __init__(self, sweep_run: tracking.SweepRun, echo: Echo) -> None:
        self.sweep_run, self.echo = sweep_run, echo
        self.statuses: dict[str, str] = {}  # trial id -> Tune status, for every trial
        self.ids: dict[str, str] = {}  # trial directory -> trial id
        self.outage: str | None = None

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.statuses[trial.trial_id] = "TERMINATED"
        self._close(trial.trial_id, "FINISHED")
        if _stopped_early(trial.last_result or {}) and self.outage is None:
            tracking.tag_trial_run(self.sweep_run, trial.trial_id, STOPPED_EARLY_TAG, "true")

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        self._tracking_answers()  # a retry would only wait for MLflow again

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.statuses[trial.trial_id] = "ERROR"
        if self._tracking_answers():
            self._close(trial.trial_id, "FAILED")

    def _close(self, trial_id: str, status: str) -> None:
        if self.outage is not None:
            return  # `resume` closes it
        try:
            tracking.close_trial_runs(self.sweep_run, {trial_id: status}, default="")
        except Exception:
            if self._tracking_answers():
                raise

    def _tracking_answers(self) -> bool:
        if self.outage is None:
            self.outage = mlflow_store.unreachable(self.sweep_run.uri)
            if self.outage is None:
                return True
            self.echo(f"{self.outage}: stopping the sweep")
            if signal.getsignal(signal.SIGUSR1) not in (signal.SIG_DFL, signal.SIG_IGN, None):
                os.kill(os.getpid(), signal.SIGUSR1)  # Tune's handler, installed by fit
        return False

    def on_experiment_end(self, trials, **info) -> None:
        for trial in trials:
            self.statuses.setdefault(trial.trial_id, trial.status)
            self.ids[trial.path] = trial.trial_id

    def interrupted(self, num_samples: int) -> bool:
        done = [s for s in self.statuses.values() if s in ("TERMINATED", "ERROR")]
        return len(done) < num_samples


def _finish(
    spec: SweepSpec,
    sweep_run,
    summary: SweepSummary,
    echo: Echo,
    study: tuple[str, str] | None = None,
) -> None:
    search = spec.search
    metric, label = search.score_metric, score_label(search.metric, search.score)
    status = "KILLED" if summary.interrupted else "FINISHED"
    tracking.close_trial_runs(sweep_run, {}, default="KILLED")
    if not summary.interrupted:
        retired = tracking.retire_orphans(sweep_run, summary.trial_ids)
        if retired:
            echo(f"removed {retired} MLflow run(s) of trials restarted under a new id")
        if study is not None:
            _close_stale_study_trials(*study)
    best = next((row for row in summary.rows if row.get(metric) is not None), None)
    summary.verdict = verdict = judge(
        [row["arm"].scored(row.get(metric)) for row in summary.rows], metric, search.mode
    )
    sentences = verdict.sentences()
    front = [point for point in _pareto(search, summary.rows) if point.on_front]
    reused = [row.get(PARTITION0_SAVED) or 0.0 for row in summary.rows]
    saved = sum(reused)
    tracking.finish_sweep_run(
        sweep_run,
        status,
        best and {**best, metric: best[metric]},
        metrics=verdict.mlflow_metrics() | {"partition0_saved_seconds": saved},
        tags={"smsweep.verdict": " ".join(sentences)}
        | ({"smsweep.best_configuration": verdict.best.name} if verdict.best else {})
        | ({"smsweep.pareto": ",".join(point.key for point in front)} if front else {}),
    )
    echo("")
    echo(leaderboard(summary.rows, metric, repeats=spec.search.repeats, label=label))
    if best is not None:
        echo(f"best trial {best['trial_id']}: {label} {best[metric]:.4f}")
    if spec.search.repeats > 1 or spec.search.controls:
        echo("")
        echo(arms_table(verdict))
    for sentence in sentences + ([verdict.noise] if verdict.noise and verdict.repeats > 1 else []):
        echo(sentence)
    if front:
        echo(pareto_lines(front, search.objective_metrics, search.objective_modes))
    if saved:
        hits = sum(seconds > 0 for seconds in reused)
        echo(f"partition 0 came from the cache in {hits} trial(s): {saved:.0f} s of training saved")
    echo(f"results: {summary.experiment_dir}")
    try:
        from smsweep.report import build_report

        echo(f"dashboard: {build_report(summary.experiment_dir)}")
    except Exception as error:  # the sweep's results stand without the page
        echo(f"the dashboard could not be built ({error}); retry: python -m smsweep report DIR")
    echo(f"compare runs: mlflow ui --backend-store-uri {summary.mlflow_uri}")
    if summary.interrupted:
        echo(f"interrupted: continue with `python -m smsweep resume {summary.experiment_dir}`")
    elif not any(row["status"] == "ERROR" for row in summary.rows):  # resume would retry those
        finished = {
            "name": summary.experiment_dir.name,
            "trials": len(summary.rows),
            "at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "mlflow_uri": summary.mlflow_uri,
        }
        (summary.experiment_dir / FINISHED_FILE).write_text(json.dumps(finished))


def _pareto(search, rows: list[dict[str, Any]]) -> list[ParetoPoint]:
    """The arms on the objectives' plane (empty for a single-objective sweep)."""
    if not search.objectives:
        return []
    measured = [(row["arm"].key, row["arm"].label, row) for row in rows]
    return pareto(measured, search.objective_metrics, search.objective_modes)


def _close_stale_study_trials(url: str, name: str) -> None:
    """Once every trial has run, an Optuna trial still RUNNING was asked for just before a
    crash and never reached Tune's saved state (the resumed sweep asked again): mark it FAIL,
    so the study (and optuna-dashboard) shows only what ran."""
    try:
        study = optuna.load_study(study_name=name, storage=url)
    except KeyError:
        return  # no study: this sweep searched nothing
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)


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


def _ranked(rows: list[dict[str, Any]], metric: str, mode: str) -> list[dict[str, Any]]:
    sign = -1.0 if mode == "max" else 1.0
    for row in rows:
        if not math.isfinite(row.get(metric, math.nan)):
            row.pop(metric, None)
    return sorted(rows, key=lambda r: (r.get(metric) is None, sign * r.get(metric, 0.0)))


def _sweep_params(spec: SweepSpec) -> dict[str, Any]:
    params = spec.tracked()
    params |= {f"search.{k}": v for k, v in spec.search.model_dump(mode="json").items()}
    return params


def _searches(spec: SweepSpec) -> bool:
    """Whether the sweep has a searcher, and so an Optuna study (see `_tune_config`)."""
    search = spec.search
    return bool(search.space or search.repeats > 1 or search.controls)


def _default_study(experiment_dir: Location) -> str | None:
    """The Optuna study's storage when search.storage gives none: sqlite beside Tune's state on
    a filesystem; none in an object store (sqlite needs a filesystem; `_check_object_store`
    asks for a URL when the sweep searches)."""
    if experiment_dir.remote:
        return None
    return f"sqlite:///{experiment_dir.path / OPTUNA_FILE}"


def _check_object_store(spec: SweepSpec, storage: Location) -> None:
    """What an object store as --storage cannot hold: the default sqlite Optuna study."""
    if _searches(spec) and not spec.search.storage:
        raise SpecError(
            f"with --storage {storage} (an object store) the Optuna study cannot live beside "
            "the sweep (sqlite needs a filesystem); set search.storage to a database URL the "
            "driver reaches (e.g. postgresql://host/db on a cluster, or sqlite:///optuna.db "
            "on this machine), e.g. --set search.storage=sqlite:///optuna.db"
        )


def _check_metric(spec: SweepSpec, class_names: tuple[str, ...]) -> None:
    known = [*FINETUNE_METRICS, *(f"iou/{name}" for name in class_names)]
    robustness = spec.robustness  # the rules check a robust metric against its factors
    if robustness.enabled:
        known += [ROBUST_MEAN, *(ROBUST_PREFIX + factor for factor in robustness.factors)]
    if spec.search.metric not in known:
        raise SpecError(
            f"search.metric {spec.search.metric!r} is not reported by a trial; use one of "
            f"{', '.join(known)}"
        )
    for objective in spec.search.objectives[1:]:
        if objective.metric not in (*known, *COST_METRICS):
            raise SpecError(
                f"search.objectives metric {objective.metric!r} is not reported by a trial; "
                f"use one of {', '.join((*known, *COST_METRICS))}"
            )
