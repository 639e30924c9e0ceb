"""MLflow: one parent run per sweep, one nested child run per trial, continued on resume.

Run ids are persisted (the parent's in the experiment directory, a child's as the tag
`smsweep.trial_id` under its parent, and in the trial's checkpoints), so a resumed sweep logs into
the same runs instead of opening new ones. Every run that stops ends FINISHED, FAILED or KILLED:
the trial process ends its own run, and the sweep closes whatever a killed process left RUNNING.

Only `MlflowClient` is used (no fluent `mlflow.start_run`): trial processes and the driver thread
never share an "active run". Its calls wait out a locked sqlite store, and a new sqlite store is
created by one process at a time (`mlflow_store`).

A trial's entries (metrics, artifacts, texts) that MLflow does not take wait in a pending file
beside the trial's checkpoints and are logged when the run is continued: a store that stops
answering for longer than the client retries loses nothing.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

from smsweep.engines import mlflow_store
from smsweep.engines.store import Location

ROLE, TRIAL_ID = "smsweep.role", "smsweep.trial_id"
PARENT = "mlflow.parentRunId"
NOTE = MLFLOW_RUN_NOTE  # a run's description, rendered as markdown on its page in the UI
RUN_FILE = "mlflow_run.json"
PENDING_FILE = "mlflow_pending.jsonl"  # a trial's entries not yet logged, one JSON object a line
_BATCH = 900  # MLflow accepts at most 1000 metrics, 100 params per log_batch call


def absolute_uri(uri: str) -> str:
    """sqlite:///relative.db -> sqlite:////abs/path/relative.db (trial processes run elsewhere);
    a plain local path -> a file: URI; other URIs unchanged."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).resolve())
    if "://" not in uri and not uri.startswith("sqlite:"):
        return Path(uri).resolve().as_uri()
    return uri


def artifact_root(uri: str) -> str | None:
    """Where a new experiment keeps artifacts: next to a sqlite database or inside a file store
    (absolute, so every process agrees); None lets a tracking server decide."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()
    return None


@dataclass(frozen=True)
class SweepRun:
    uri: str
    experiment_id: str
    run_id: str

    def client(self):
        return mlflow_store.client(self.uri)


def start_sweep_run(
    uri: str,
    experiment: str,
    name: str,
    params: Mapping[str, Any],
    experiment_dir: Path | Location,
) -> SweepRun:
    """The sweep's parent run: created once, then continued (its ids live in RUN_FILE)."""
    saved = Location.of(experiment_dir) / RUN_FILE
    if saved.is_file():
        run = SweepRun(**json.loads(saved.read_text()))
        run.client().update_run(run.run_id, status="RUNNING")
        return run
    mlflow_store.prepare(uri)
    client = mlflow_store.client(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        try:
            experiment_id = client.create_experiment(
                experiment, artifact_location=artifact_root(uri)
            )
        except Exception:  # another sweep logging to the same experiment created it first
            found = client.get_experiment_by_name(experiment)
            if found is None:
                raise
            experiment_id = found.experiment_id
    else:
        experiment_id = found.experiment_id
    created = client.create_run(experiment_id, run_name=name, tags={ROLE: "sweep"})
    run = SweepRun(uri, experiment_id, created.info.run_id)
    _log_params(client, run.run_id, params)
    saved.write_text(json.dumps(asdict(run)))
    return run


def finish_sweep_run(
    run: SweepRun,
    status: str,
    best: Mapping[str, Any] | None,
    metrics: Mapping[str, float] | None = None,
    tags: Mapping[str, str] | None = None,
) -> None:
    """End the parent run; `best`: the best trial's row; `metrics`: the sweep's own numbers
    (the arms' verdict, `stats.Verdict.mlflow_metrics`, and what the cache saved) and `tags`
    (the verdict's sentences, the Pareto front, the run's description under NOTE)."""
    client = run.client()
    for key, value in (tags or {}).items():
        client.set_tag(run.run_id, key, value[:5000])
    if metrics:
        _log_metrics(client, run.run_id, dict(metrics), step=0)
    if best:
        client.set_tag(run.run_id, "smsweep.best_trial", str(best["trial_id"]))
        metrics = {f"best_{k}": v for k, v in best.items() if _number(v) is not None}
        _log_metrics(client, run.run_id, metrics, step=0)
    client.set_terminated(run.run_id, status=status)


def close_trial_runs(run: SweepRun, statuses: Mapping[str, str], default: str) -> int:
    """End every child run still RUNNING: `statuses[trial_id]` or `default`; returns how many."""
    client = run.client()
    closed = 0
    for child in trial_runs(run, status="RUNNING"):
        status = statuses.get(child.data.tags.get(TRIAL_ID, ""), default)
        client.set_terminated(child.info.run_id, status=status)
        closed += 1
    return closed


def tag_trial_run(run: SweepRun, trial_id: str, key: str, value: str) -> None:
    """Set a tag on the trial's run (if it has one)."""
    client = run.client()
    query = f"tags.`{PARENT}` = '{run.run_id}' and tags.`{TRIAL_ID}` = '{trial_id}'"
    for found in client.search_runs([run.experiment_id], filter_string=query):
        client.set_tag(found.info.run_id, key, value)


def retire_orphans(run: SweepRun, trial_ids: set[str]) -> int:
    """Delete (MLflow's soft delete) child runs of trials the sweep has no record of: a trial
    that started just before a crash, before Tune saved its state, is started again under a
    new id on resume; its first run holds nothing the new trial does not redo."""
    client = run.client()
    orphans = [r for r in trial_runs(run) if r.data.tags.get(TRIAL_ID) not in trial_ids]
    for orphan in orphans:
        client.set_terminated(orphan.info.run_id, status="KILLED")
        client.delete_run(orphan.info.run_id)
    return len(orphans)


def trial_runs(run: SweepRun, status: str | None = None) -> list:
    query = f"tags.`{PARENT}` = '{run.run_id}'"
    if status:
        query += f" and attributes.status = '{status}'"
    return run.client().search_runs([run.experiment_id], filter_string=query, max_results=10_000)


class LogFailed(RuntimeError):
    """MLflow did not take a trial's pending entries; they stay in its pending file."""


@dataclass(frozen=True)
class TrialTracking:
    """What a trial's training loop needs to log into the trial's run itself (rank 0, in a Ray
    Train worker or in the trial's process): the store, the run and its pending file."""

    uri: str
    sweep_run_id: str
    run_id: str
    pending: str  # a file, local or in an object store

    def open(self) -> RunLog:
        return RunLog(self.uri, self.run_id, Location.of(self.pending))


class RunLog:
    """Entries into one MLflow run, from any process.

    With `pending` (a file, local or in an object store), an entry that MLflow does not take
    is appended to that file, and so is every later entry of this process (no more waiting on
    a store that does not answer). The file is logged when the run is continued and before it
    ends; `end` raises LogFailed while MLflow still does not take it. An entry keeps its metric
    timestamps, so one logged twice (a kill between logging and removing the file) is stored
    once. One process appends to the file at a time: the trial's process before and after its
    training loop, rank 0 of the loop while it runs.
    """

    def __init__(self, uri: str, run_id: str, pending: Path | Location | None = None) -> None:
        self.uri, self.run_id = uri, run_id
        self.pending = Location.of(pending) if pending is not None else None
        self.client = mlflow_store.client(uri)
        self.failure: Exception | None = None  # the first entry MLflow did not take

    def log(
        self,
        metrics: Mapping[str, Any] | None = None,
        step: int = 0,
        *,
        timestamp: int | None = None,
        artifacts: Sequence[Path | Location] = (),
        artifact_path: str | None = None,
        texts: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """One entry: numeric metrics at `step` and `timestamp` (ms; default now; strings and
        flags are for the console, not for charts), files (local or in an object store) under
        `artifact_path`, texts {artifact file: text} and tags."""
        entry = {
            "metrics": {k: n for k, v in (metrics or {}).items() if (n := _number(v)) is not None},
            "step": step,
            "timestamp": int(time.time() * 1000) if timestamp is None else timestamp,
            "artifacts": [[str(Location.of(path)), artifact_path] for path in artifacts],
            "texts": dict(texts or {}),
            "tags": dict(tags or {}),
        }
        if not (entry["metrics"] or entry["artifacts"] or entry["texts"] or entry["tags"]):
            return
        if self.failure is None:
            try:
                self._apply(entry)
                return
            except Exception as error:
                if self.pending is None:
                    raise
                self.failure = error
        self.pending.append_text(json.dumps(entry) + "\n")

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        self.log(metrics, step)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.log(texts={artifact_file: text})

    def log_artifact(self, path: Path | Location, artifact_path: str | None = None) -> None:
        self.log(artifacts=[path], artifact_path=artifact_path)

    def set_tag(self, key: str, value: str) -> None:
        self.client.set_tag(self.run_id, key, value)

    def end(self, status: str) -> None:
        self._flush()
        self.client.set_terminated(self.run_id, status=status)

    def _apply(self, entry: Mapping[str, Any]) -> None:
        _log_metrics(self.client, self.run_id, entry["metrics"], entry["step"], entry["timestamp"])
        for path, artifact_path in entry["artifacts"]:
            artifact = Location.of(path)
            if artifact.is_file():  # a file that is gone can never be logged
                with artifact.local_file() as local:
                    self.client.log_artifact(self.run_id, str(local), artifact_path)
        for artifact_file, text in entry["texts"].items():
            self.client.log_text(self.run_id, text, artifact_file)
        for key, value in entry.get("tags", {}).items():  # absent from older pending files
            self.client.set_tag(self.run_id, key, value)

    def _flush(self) -> None:
        """Log the pending file's entries, in order, then remove it."""
        if self.pending is None or not self.pending.is_file():
            return
        try:
            for line in self.pending.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue  # a line cut short by a kill; its entry was never acknowledged
                self._apply(entry)
        except Exception as error:
            raise LogFailed(
                f"MLflow at {self.uri} did not take the entries waiting in {self.pending} "
                f"({str(error)[:300]})"
            ) from error
        self.pending.delete()
        self.failure = None


class TrialRun(RunLog):
    """A trial's child run: found by its trial id under the parent (continued: its pending
    entries are logged first), or created with the trial's params and tags."""

    def __init__(
        self,
        sweep: SweepRun,
        trial_id: str,
        name: str,
        params: Mapping[str, Any],
        pending: Path | Location | None = None,
        tags: Mapping[str, str] | None = None,
    ):
        client = sweep.client()
        query = f"tags.`{PARENT}` = '{sweep.run_id}' and tags.`{TRIAL_ID}` = '{trial_id}'"
        existing = client.search_runs([sweep.experiment_id], filter_string=query)
        self.sweep_run_id = sweep.run_id
        if existing:
            super().__init__(sweep.uri, existing[0].info.run_id, pending)
            self.client.update_run(self.run_id, status="RUNNING")
            self.resumed = True
            self._flush()
            return
        tags = {**(tags or {}), PARENT: sweep.run_id, ROLE: "trial", TRIAL_ID: trial_id}
        created = client.create_run(sweep.experiment_id, run_name=name, tags=tags)
        super().__init__(sweep.uri, created.info.run_id, pending)
        self.resumed = False
        _log_params(self.client, self.run_id, params)

    def handle(self) -> TrialTracking:
        """For the trial's training loop, which logs its reports into this run."""
        if self.pending is None:
            raise ValueError("a trial run handed to its training loop needs a pending file")
        return TrialTracking(self.uri, self.sweep_run_id, self.run_id, str(self.pending))


def iou_table(metrics: Mapping[str, Any], class_names: Sequence[str]) -> str:
    """Per-class IoU as CSV (class,iou), NaN for classes absent from labels and predictions."""
    rows = ["class,iou"]
    rows += [f"{name},{metrics.get(f'iou/{name}', math.nan):.6f}" for name in class_names]
    return "\n".join(rows) + "\n"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _log_metrics(
    client, run_id: str, metrics: Mapping[str, Any], step: int, timestamp: int | None = None
):
    timestamp = int(time.time() * 1000) if timestamp is None else timestamp
    entries = [
        Metric(key, number, timestamp, step)
        for key, value in metrics.items()
        if (number := _number(value)) is not None
    ]
    for start in range(0, len(entries), _BATCH):
        client.log_batch(run_id, metrics=entries[start : start + _BATCH])


def _log_params(client, run_id: str, params: Mapping[str, Any]) -> None:
    entries = [Param(key, _param_text(value)) for key, value in params.items()]
    for start in range(0, len(entries), 100):
        client.log_batch(run_id, params=entries[start : start + 100])


def _param_text(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict, tuple)) else str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Raise SpecError unless an http(s) tracking server answers (before anything is launched;
    a local store is not touched here: that would create it)."""
    from smsweep.errors import SpecError

    if not uri.startswith(("http:", "https:")):
        return
    reason = mlflow_store.unreachable(uri, timeout=timeout)
    if reason is not None:
        raise SpecError(
            f"{reason}; start it (`mlflow server --host 127.0.0.1 --port 5000`) or fix "
            "tracking.mlflow_uri / --mlflow-uri"
        )


__all__ = [
    "PENDING_FILE",
    "LogFailed",
    "RunLog",
    "SweepRun",
    "TrialRun",
    "TrialTracking",
    "absolute_uri",
    "check_reachable",
    "close_trial_runs",
    "finish_sweep_run",
    "iou_table",
    "retire_orphans",
    "start_sweep_run",
    "trial_runs",
]
