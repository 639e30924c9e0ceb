"""The sweep's Tune and Optuna settings: the searcher (Optuna's define-by-run study, wrapped to
add repeats and controls), the scheduler, and the Optuna study's storage."""

from __future__ import annotations

import optuna
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from smsweep.engines.searcher import Arms, DefineByRun
from smsweep.engines.store import Location
from smsweep.spec.config import SweepSpec
from smsweep.spec.space import control_params, grid_points

OPTUNA_FILE = "optuna.db"  # the study's default storage, beside Tune's state


def tune_config(
    spec: SweepSpec, evaluations: int, study: tuple[str, str] | None = None
) -> tune.TuneConfig:
    """Tune's settings; `evaluations`: the most fine-tuning validations a trial reports (ASHA's
    time axis); `study`: (storage URL, name) of the Optuna study."""
    search = spec.search
    searcher = None
    if spec.search.searches:
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
        confirm = (search.confirm.top, search.confirm.repeats) if search.confirm else None
        racing = (search.racing.max_repeats, search.racing.first_test) if search.racing else None
        searcher = Arms(
            searcher,
            control_params(spec),
            search.repeats,
            configurations=search.num_samples,
            confirm=confirm,
            racing=racing,
        )
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


def trial_process_gpus(spec: SweepSpec) -> float:
    """The trial's own process holds GPUs only when it trains itself (train_workers: 0);
    otherwise its Train workers hold them."""
    resources = spec.resources
    return resources.gpus_per_trial if resources.train_workers == 0 else 0


def default_study(experiment_dir: Location) -> str | None:
    """The Optuna study's storage when search.storage gives none: sqlite beside Tune's state on
    a filesystem; none in an object store (sqlite needs a filesystem; `check_object_store`
    asks for a URL when the sweep searches)."""
    if experiment_dir.remote:
        return None
    return f"sqlite:///{experiment_dir.path / OPTUNA_FILE}"


def close_stale_study_trials(url: str, name: str) -> None:
    """Once every trial has run, an Optuna trial still RUNNING was asked for just before a
    crash and never reached Tune's saved state (the resumed sweep asked again): mark it FAIL,
    so the study (and optuna-dashboard) shows only what ran."""
    try:
        study = optuna.load_study(study_name=name, storage=url)
    except KeyError:
        return  # no study: this sweep searched nothing
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
