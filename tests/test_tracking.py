"""MLflow tracking on a real sqlite store: parent/child runs, continuing them, closing them."""

from __future__ import annotations

import math
import shutil

import pytest
from mlflow.tracking import MlflowClient

from smsweep.engines import tracking
from smsweep.errors import SpecError


@pytest.fixture(scope="module")
def uri(tmp_path_factory) -> str:
    """One database for the module: creating one runs MLflow's migrations (seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"


def test_relative_sqlite_uri_becomes_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert tracking.absolute_uri("sqlite:///mlflow.db") == f"sqlite:///{tmp_path}/mlflow.db"
    assert tracking.absolute_uri("sqlite:////abs/x.db") == "sqlite:////abs/x.db"
    assert tracking.absolute_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_sweep_run_is_created_once_then_continued(uri, tmp_path):
    first = tracking.start_sweep_run(uri, "exp-a", "sweep-a", {"masking.ratio": 0.5}, tmp_path)
    client = MlflowClient(uri)
    client.set_terminated(first.run_id, status="KILLED")
    again = tracking.start_sweep_run(uri, "exp-a", "sweep-a", {"masking.ratio": 0.5}, tmp_path)
    assert again == first
    run = client.get_run(first.run_id)
    assert run.info.status == "RUNNING"
    assert run.data.tags[tracking.ROLE] == "sweep"
    assert run.data.params["masking.ratio"] == "0.5"
    experiment = client.get_experiment(first.experiment_id)
    assert experiment.artifact_location.startswith("file://")
    assert experiment.artifact_location.endswith("/mlartifacts")


def test_trial_run_is_nested_found_again_and_logged(uri, tmp_path):
    sweep = tracking.start_sweep_run(uri, "exp-b", "s", {}, tmp_path)
    trial = tracking.TrialRun(sweep, "abc_00001", "trial 1", {"masking.strategy": "selective"})
    assert not trial.resumed
    trial.log_metrics({"miou": 0.25, "phase": "finetune", "done": True, "iou/cat": 0.5}, step=2)
    trial.log_text("class,iou\n", "iou_per_class.csv")
    trial.end("FAILED")
    again = tracking.TrialRun(sweep, "abc_00001", "renamed", {"masking.strategy": "selective"})
    assert again.resumed and again.run_id == trial.run_id
    client = MlflowClient(uri)
    run = client.get_run(trial.run_id)
    assert run.info.status == "RUNNING"
    assert run.info.run_name == "trial 1"  # a continued run keeps its name
    assert run.data.tags[tracking.PARENT] == sweep.run_id
    assert run.data.tags[tracking.TRIAL_ID] == "abc_00001"
    assert run.data.metrics == {"miou": 0.25, "iou/cat": 0.5}  # strings and flags left out
    assert [a.path for a in client.list_artifacts(trial.run_id)] == ["iou_per_class.csv"]
    other = tracking.TrialRun(sweep, "abc_00002", "trial 2", {})
    assert other.run_id != trial.run_id
    assert len(tracking.trial_runs(sweep)) == 2


def test_close_trial_runs_ends_every_running_child(uri, tmp_path):
    sweep = tracking.start_sweep_run(uri, "exp-c", "s", {}, tmp_path)
    done = tracking.TrialRun(sweep, "t1", "t1", {})
    done.end("FINISHED")
    tracking.TrialRun(sweep, "t2", "t2", {})
    tracking.TrialRun(sweep, "t3", "t3", {})
    closed = tracking.close_trial_runs(sweep, {"t2": "FAILED"}, default="KILLED")
    assert closed == 2
    statuses = {r.data.tags[tracking.TRIAL_ID]: r.info.status for r in tracking.trial_runs(sweep)}
    assert statuses == {"t1": "FINISHED", "t2": "FAILED", "t3": "KILLED"}
    tracking.finish_sweep_run(sweep, "FINISHED", {"trial_id": "t1", "miou": 0.4})
    parent = MlflowClient(uri).get_run(sweep.run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["best_miou"] == 0.4
    assert parent.data.tags["smsweep.best_trial"] == "t1"


def test_iou_table_lists_every_class():
    table = tracking.iou_table({"iou/a": 0.5, "iou/b": math.nan}, ["a", "b", "c"])
    assert table.splitlines() == ["class,iou", "a,0.500000", "b,nan", "c,nan"]


def test_unreachable_tracking_server_is_a_spec_error():
    with pytest.raises(SpecError, match=r"does not answer.*mlflow server"):
        tracking.check_reachable("http://127.0.0.1:9", timeout=2)


def test_runs_of_trials_the_sweep_does_not_know_are_retired(uri, tmp_path):
    sweep = tracking.start_sweep_run(uri, "exp-d", "s", {}, tmp_path)
    tracking.TrialRun(sweep, "known", "known", {}).end("FINISHED")
    tracking.TrialRun(sweep, "lost", "lost", {})  # started, then the sweep was killed
    assert tracking.retire_orphans(sweep, {"known"}) == 1
    remaining = tracking.trial_runs(sweep)
    assert [r.data.tags[tracking.TRIAL_ID] for r in remaining] == ["known"]


def test_entries_mlflow_does_not_take_wait_and_are_logged_once_when_the_run_continues(
    uri, tmp_path, monkeypatch
):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # give up at once
    sweep = tracking.start_sweep_run(uri, "exp-e", "s", {}, tmp_path)
    pending = tmp_path / "train" / "t1" / tracking.PENDING_FILE
    trial = tracking.TrialRun(sweep, "t1", "t1", {}, pending=pending)
    trial.log({"recon_loss": 0.5}, step=0)
    gallery = tmp_path / "partition_001.png"
    gallery.write_bytes(b"not really a png")
    # The store stops answering: this run's client now talks to a port where nothing listens.
    trial.client = tracking.SweepRun("http://127.0.0.1:9", "0", sweep.run_id).client()
    trial.log({"recon_loss": 0.4}, step=1, artifacts=[gallery], artifact_path="galleries")
    trial.log(
        {"miou": 0.3},
        step=0,
        texts={"iou_per_class.csv": "class,iou\n"},
        tags={"smsweep.precision": "bf16 autocast"},
    )
    assert len(pending.read_text().splitlines()) == 2
    with pytest.raises(tracking.LogFailed, match=r"127\.0\.0\.1:9"):
        trial.end("FINISHED")
    waiting = pending.read_text()

    resumed = tracking.TrialRun(sweep, "t1", "t1", {}, pending=pending)
    assert resumed.resumed and resumed.run_id == trial.run_id and not pending.exists()
    pending.write_text(waiting)  # as if killed after logging, before removing the file
    tracking.TrialRun(sweep, "t1", "t1", {}, pending=pending).end("FINISHED")
    client = MlflowClient(uri)
    history = client.get_metric_history(trial.run_id, "recon_loss")
    assert sorted((m.step, m.value) for m in history) == [(0, 0.5), (1, 0.4)]
    assert len(client.get_metric_history(trial.run_id, "miou")) == 1
    assert [a.path for a in client.list_artifacts(trial.run_id, "galleries")] == [
        "galleries/partition_001.png"
    ]
    assert "iou_per_class.csv" in {a.path for a in client.list_artifacts(trial.run_id)}
    run = client.get_run(trial.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["smsweep.precision"] == "bf16 autocast"


def test_a_resumed_trial_logs_the_report_a_kill_cut_off_and_stores_a_logged_one_once(uri, tmp_path):
    """A trial's checkpoint is stored before its MLflow entry is written; a kill between the two
    used to lose the entry (the final score included). Here the whole trial first runs untracked,
    as if every entry had been cut off, with its last checkpoint removed (a kill after the first
    validation's). Resumed with its run, it logs the first validation's report again, with that
    report's own timestamp, then the second; resumed again (finished), it logs the last one again.
    MLflow holds each step once, with the untracked trial's numbers."""
    from smsweep.engines.session import LocalSession
    from smsweep.engines.trainloop import Trial, run_in_process
    from smsweep.method.data import open_source
    from smsweep.trial.inputs import TrialInput
    from tests.test_trial import tiny_spec

    spec = tiny_spec(
        resources={"scoring_actors": 0, "train_workers": 0},
        masking={"strategy": "none"},
    )
    directory = tmp_path / "trial"
    untracked = [report for report in run_in_process(spec, directory) if report.phase == "finetune"]
    shutil.rmtree(sorted(directory.glob("checkpoint_*"))[-1])
    sweep = tracking.start_sweep_run(uri, "exp-resumed", "s", {}, tmp_path)
    run = tracking.TrialRun(sweep, "t_00001", "trial", {}, pending=tmp_path / "pending.jsonl")
    given = TrialInput(
        spec=spec, source=open_source(spec.data, seed=spec.seed), tracking=run.handle()
    )
    for attempt in range(2):
        reports = Trial(given, LocalSession(directory)).run()
        assert [r.step for r in reports] == [1], attempt  # the second: replayed, not trained
    history = MlflowClient(uri).get_metric_history(run.run_id, "miou")
    assert sorted((m.step, m.value) for m in history) == [
        (report.step, report.metrics["miou"]) for report in untracked
    ]
