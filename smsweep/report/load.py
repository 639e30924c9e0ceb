"""Loading a sweep: its trials (MLflow runs and Tune's state), the best trial's class names and
galleries, and the Optuna study from its storage."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smsweep.engines import tracking
from smsweep.engines.settings import SETTINGS_FILE, SweepSettings
from smsweep.engines.store import Location, check_storage
from smsweep.errors import SpecError, first_line
from smsweep.verdict.arms import CONFIGURATION, CONTROL, PHASE, REPEAT, SEARCH, Arm
from smsweep.verdict.confirmation import Judged, judge_sweep
from smsweep.verdict.stats import Verdict


@dataclass
class Trial:
    trial_id: str
    status: str
    searched: dict[str, Any]  # the values the search chose (Tune's trial config)
    params: dict[str, Any]  # the resolved trial config, dotted keys (MLflow params)
    metrics: dict[str, float]  # last value of every MLflow metric
    run_id: str | None = None
    history: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    arm: Arm = field(default_factory=lambda: Arm({}))  # its configuration or control, and repeat


@dataclass
class Sweep:
    """Everything the page shows, loaded once (sections only read it)."""

    name: str
    experiment_dir: Path | Location
    mlflow_uri: str
    experiment: str
    run_id: str
    spec: dict[str, Any]
    metric: str
    mode: str
    space: list[str]  # searched parameter names
    trials: list[Trial]  # best first
    best_trial: str | None = None
    class_names: list[str] = field(default_factory=list)
    galleries: list[tuple[str, bytes]] = field(default_factory=list)  # (name, PNG) of the best
    study: Any = None  # the Optuna study, or None
    study_note: str | None = None  # why there is no study
    verdict: Verdict | None = None  # the arms over their repeats (`stats.judge`)
    judged: Judged | None = None  # the verdict, and with a confirmation the search's beside it

    @property
    def best(self) -> Trial | None:
        found = [t for t in self.trials if t.trial_id == self.best_trial]
        return found[0] if found else None


def load_sweep(experiment_dir: str | Path | Location, dashboard: Mapping[str, Any]) -> Sweep:
    """The sweep in `experiment_dir` (a directory or an object-store URL) from its files and
    its MLflow runs; SpecError if it is none.

    `dashboard` (page.load_dashboard) says which metric histories the page draws."""
    directory = Location.of(experiment_dir)
    if directory.remote:
        check_storage(directory)  # an unreachable store or a missing bucket: SpecError
    settings_file, run_file = directory / SETTINGS_FILE, directory / tracking.RUN_FILE
    if not settings_file.is_file() or not run_file.is_file():
        missing = SETTINGS_FILE if not settings_file.is_file() else tracking.RUN_FILE
        raise SpecError(
            f"{experiment_dir} is not a sweep directory (no {missing}); give the directory "
            "STORAGE/NAME that `python -m smsweep run` printed (e.g. smsweep_runs/quickstart)"
        )
    settings = SweepSettings.read(directory)
    ids = json.loads(run_file.read_text())
    uri = ids.get("uri") or settings.mlflow_uri
    _check_store(uri, experiment_dir)
    client = tracking.SweepRun(uri, ids["experiment_id"], ids["run_id"]).client()
    try:
        parent = client.get_run(ids["run_id"])
    except Exception as error:  # MlflowException: the store does not hold that run
        raise SpecError(
            f"the MLflow store {uri} has no run {ids['run_id']} (the parent run of "
            f"{experiment_dir}): {first_line(error)}; open the report where the sweep's MLflow "
            "store is reachable, or fix the uri in " + str(run_file)
        ) from None
    search = settings.spec.search
    sweep = Sweep(
        name=settings.name,
        experiment_dir=directory,
        mlflow_uri=uri,
        experiment=settings.experiment,
        run_id=ids["run_id"],
        spec=settings.spec.model_dump(mode="json"),
        metric=search.score_metric,
        mode=search.mode,
        space=list(search.space),
        trials=[],
    )
    curves = [s["metric"] for s in dashboard["sections"] if "metric" in s]
    sweep.trials = _load_trials(sweep, tracking.SweepRun(**ids), directory, curves)
    sweep.best_trial = parent.data.tags.get("smsweep.best_trial") or next(
        (t.trial_id for t in sweep.trials if t.metrics.get(sweep.metric) is not None), None
    )
    sweep.judged = judge_sweep(
        [(t.arm, t.metrics.get(sweep.metric)) for t in sweep.trials if t.run_id is not None],
        sweep.metric,
        sweep.mode,
    )
    sweep.verdict = sweep.judged.verdict
    sweep.class_names = _class_names(client, sweep)
    sweep.galleries = _galleries(client, sweep)
    sweep.study, sweep.study_note = _load_study(settings, bool(sweep.space))
    return sweep


def _check_store(uri: str, experiment_dir: Path) -> None:
    tracking.check_reachable(uri)  # an http(s) server that does not answer: SpecError
    if uri.startswith("sqlite:///"):
        database = Path(uri.removeprefix("sqlite:///"))
        if not database.is_file():  # MlflowClient would create an empty one
            raise SpecError(
                f"the MLflow database {database} of {experiment_dir} does not exist; run the "
                "report where the sweep ran, or copy the database back to that path"
            )


def _load_trials(
    sweep: Sweep, parent: tracking.SweepRun, directory: Location, curves: Sequence[str]
) -> list[Trial]:
    client = parent.client()
    tune_trials = _tune_trials(directory)
    trials: dict[str, Trial] = {}
    for run in tracking.trial_runs(parent):
        trial_id = run.data.tags.get(tracking.TRIAL_ID, run.info.run_id[:8])
        params = {key: _value(text) for key, text in run.data.params.items()}
        status, searched = tune_trials.pop(trial_id, (None, None))
        if searched is None:
            searched = {k: params[k] for k in sweep.space if k in params}
        searched = Arm.of(searched).params  # without the repeat and arm keys
        if run.data.tags.get("smsweep.stopped_early") == "true":
            status = "STOPPED_EARLY"  # by ASHA (Tune says TERMINATED)
        trials[trial_id] = Trial(
            trial_id=trial_id,
            status=status or run.info.status,
            searched=searched,
            params=params,
            metrics=dict(run.data.metrics),
            run_id=run.info.run_id,
            arm=_arm(run.data.tags, searched),
        )
    for trial_id, (status, searched) in tune_trials.items():  # no MLflow run (yet)
        arm = Arm.of(searched or {})
        trials[trial_id] = Trial(trial_id, status or "PENDING", arm.params, arm.params, {}, arm=arm)
    for trial in trials.values():
        if trial.run_id is None:
            continue
        for key in curves:
            history = client.get_metric_history(trial.run_id, key)
            trial.history[key] = sorted((m.step, m.value) for m in history)
    return ranked(list(trials.values()), sweep.metric, sweep.mode)


def _arm(tags: Mapping[str, str], searched: dict[str, Any]) -> Arm:
    """A trial's arm from its run's tags (a sweep before repeats: its searched values, once)."""
    key = tags.get(CONFIGURATION, "")
    number = key.removeprefix("config-")
    return Arm(
        params=searched,
        repeat=int(tags.get(REPEAT, 0)),
        control=tags.get(CONTROL),
        configuration=int(number) if number.isdigit() else None,
        phase=tags.get(PHASE, SEARCH),
    )


def _tune_trials(directory: Location) -> dict[str, tuple[str | None, dict[str, Any] | None]]:
    """trial id -> (Tune status, searched config), through Tune's `ExperimentAnalysis`."""
    from ray import tune

    if not tune.Tuner.can_restore(str(directory)):
        return {}  # Tune has not saved its state yet
    try:
        trials = tune.ExperimentAnalysis(str(directory)).trials
    except Exception:  # a state this Ray cannot read: MLflow alone will do
        return {}
    return {str(t.trial_id): (t.status, dict(t.config or {})) for t in trials}


def _class_names(client: Any, sweep: Sweep) -> list[str]:
    """Class order from the best trial's iou_per_class.csv, else the iou/ metrics by name."""
    seen = sorted({k[4:] for t in sweep.trials for k in t.metrics if k.startswith("iou/")})
    best = sweep.best or next((t for t in sweep.trials if t.run_id), None)
    if best is None or best.run_id is None:
        return seen
    try:
        with _quiet_downloads(), tempfile.TemporaryDirectory() as scratch:
            table = Path(client.download_artifacts(best.run_id, "iou_per_class.csv", scratch))
            names = [line.split(",")[0] for line in table.read_text().splitlines()[1:] if line]
    except Exception:  # no such artifact (a trial that did not finish): names from metrics
        return seen
    return names + [name for name in seen if name not in names]


def _galleries(client: Any, sweep: Sweep) -> list[tuple[str, bytes]]:
    """The best trial's gallery PNGs: from train/<trial>/galleries, else its MLflow artifacts."""
    best = sweep.best
    if best is None:
        return []
    kept = (Location.of(sweep.experiment_dir) / "train" / best.trial_id / "galleries").files(
        "*.png"
    )
    if kept:
        return [(Path(png.name).stem, png.read_bytes()) for png in kept]
    if best.run_id is None:
        return []
    try:
        with _quiet_downloads(), tempfile.TemporaryDirectory() as scratch:
            folder = Path(client.download_artifacts(best.run_id, "galleries", scratch))
            return [(path.stem, path.read_bytes()) for path in sorted(folder.glob("*.png"))]
    except Exception:  # no galleries logged
        return []


@contextlib.contextmanager
def _quiet_downloads() -> Iterator[None]:
    """No MLflow download progress bar in the report's output."""
    name = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(name)
    os.environ[name] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def _load_study(settings: SweepSettings, searched: bool) -> tuple[Any, str | None]:
    """The sweep's Optuna study, from its Optuna storage (`search.storage`, by default
    optuna.db in the experiment directory)."""
    if not searched:
        return None, "this sweep searched no parameters (search.space is empty)"
    if settings.study is None:
        return None, "this sweep keeps no Optuna study (no search.storage in an object store)"
    url, name = settings.study
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        return None, f"its Optuna storage {url} does not exist (yet)"
    import optuna

    try:
        return optuna.load_study(study_name=name, storage=url), None
    except KeyError:
        return None, f"the Optuna storage {url} holds no study {name!r} yet"
    except Exception as error:
        return None, f"the Optuna study could not be read ({first_line(error)})"


def ranked(trials: list[Trial], metric: str, mode: str) -> list[Trial]:
    """Best first; trials without the metric last."""
    sign = -1.0 if mode == "max" else 1.0

    def key(trial: Trial) -> tuple[bool, float]:
        value = trial.metrics.get(metric)
        return (value is None, sign * (value or 0.0))

    return sorted(trials, key=key)


def _value(text: str) -> Any:
    """An MLflow param (text) back as the number/list it was; anything else stays text."""
    try:
        return json.loads(text)
    except ValueError:
        return text
