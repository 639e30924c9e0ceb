"""What a sweep survives, with the real engine: kills at several points, failing trials, NaN,
an MLflow server that stays down.

Faults come from the test-only setting SMSWEEP_TEST_FAULT (JSON, read where each fault
happens; see `smsweep.faults`).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from smsweep.cli import main
from smsweep.engines import claim, tracking
from smsweep.faults import ENV as FAULTS_ENV
from tests.servers import free_port, mlflow_server, stop
from tests.test_sweep import (
    _check_complete,
    _start,
    finished_trials,
    mlflow_runs,
    tiny_sweep,
    write_spec,
)


def steps(tmp_path: Path, run, metric: str) -> list[int]:
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    return sorted(m.step for m in client.get_metric_history(run.info.run_id, metric))


def trial_failures(experiment_dir: Path) -> list[int]:
    """How often Tune saw each trial fail, from its experiment state on disk."""
    state = max(experiment_dir.glob("experiment_state-*.json"))
    trials = json.loads(state.read_text())["trial_data"]
    return [json.loads(run_metadata)["num_failures"] for _, run_metadata in trials]


@pytest.mark.slow
def test_sigkill_at_each_point_then_resume_loses_and_repeats_nothing(tmp_path):
    """One sweep of two trials with Ray Train (the trials' default), killed with SIGKILL to its
    process group at each point in turn: while a partition's masks are scored (by the actors,
    or by the trial itself while they start), then, resumed, as a trial's last partition
    begins (pretrain:1: partition 0 checkpointed, partition 1 not), then between a trial's last
    checkpoint and its MLflow entry (log:finetune:1: its final score). `run` pauses at the first
    point, each `resume` at the next one, and the last `resume` runs to the end: every trial has
    finished once in its one MLflow run, and every partition and epoch is logged exactly once.
    Each kill costs a sweep start instead of a sweep. The kill where fine-tuning begins, with
    the trial training in its own process, is tests/test_preemption.py's, after a retry."""
    spec = tiny_sweep(num_samples=2)
    spec["search"]["space"]["masking.strategy"] = {"choice": ["selective", "random"]}
    experiment = tmp_path / "runs" / "tiny"
    marker = tmp_path / "paused"
    argv = ["run", str(write_spec(tmp_path, spec)), "--storage", "runs"]
    for point in ["scoring", "pretrain:1", "log:finetune:1"]:
        os.environ[FAULTS_ENV] = json.dumps({"pause_at": point, "marker": str(marker)})
        try:
            sweep = _start(argv, tmp_path)
        finally:
            del os.environ[FAULTS_ENV]
        deadline = time.monotonic() + 300
        while not marker.exists() or len(marker.read_text().split()) < 2:  # point, pid
            assert sweep.poll() is None, sweep.stdout.read()[-3000:]
            assert time.monotonic() < deadline, f"the sweep never reached {point}"
            time.sleep(0.5)
        os.killpg(sweep.pid, signal.SIGKILL)
        sweep.wait(timeout=60)
        assert marker.read_text().split()[0] == point
        marker.unlink()
        argv = ["resume", str(experiment)]
    resumed = _start(argv, tmp_path)
    output, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, output[-3000:]
    _check_complete(tmp_path, 2)
    for run in mlflow_runs(tmp_path)[1]:  # every partition and epoch logged exactly once
        assert steps(tmp_path, run, "recon_loss") == [0, 1]
        assert steps(tmp_path, run, "miou") == [0, 1]


@pytest.mark.slow
def test_a_trial_that_raises_is_retried_from_its_checkpoint_in_the_same_run(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(FAULTS_ENV, json.dumps({"raise_after_partition": 0}))
    spec = write_spec(tmp_path, tiny_sweep(num_samples=2, in_process=True, max_failures=1))
    assert main(["run", str(spec), "--storage", "runs"]) == 0
    parents, children = mlflow_runs(tmp_path)
    assert len(parents) == 1 and len(children) == 2
    assert sorted(r.info.status for r in children) == ["FINISHED", "FINISHED"]
    for run in children:
        assert steps(tmp_path, run, "recon_loss") == [0, 1]  # partition 0 was not run twice
    experiment = tmp_path / "runs" / "tiny"
    assert len(finished_trials(experiment)) == 2
    assert trial_failures(experiment) == [1, 1]


@pytest.mark.slow
def test_a_nan_loss_stops_its_trial_with_the_reason_and_the_sweep_goes_on(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(FAULTS_ENV, json.dumps({"nan_at_partition": 1}))
    spec = tiny_sweep(num_samples=2, in_process=True, max_failures=2)
    spec["search"]["space"]["masking.strategy"] = {"choice": ["none", "random"]}  # none: no NaN
    del spec["search"]["space"]["masking.samples"]
    assert main(["run", str(write_spec(tmp_path, spec)), "--storage", "runs"]) == 0
    out = capsys.readouterr().out
    assert "stopped: non-finite loss" in out
    _, children = mlflow_runs(tmp_path)
    by_strategy = {r.data.params["masking.strategy"]: r for r in children}
    assert by_strategy["none"].info.status == "FINISHED"
    failed = by_strategy["random"]
    assert failed.info.status == "FAILED"
    assert "pretraining loss is nan" in failed.data.tags["smsweep.failure"]
    assert trial_failures(tmp_path / "runs" / "tiny") == [0, 0]  # not retried: it cannot help
    assert tracking.ROLE in by_strategy["none"].data.tags


@pytest.mark.slow
def test_an_mlflow_server_down_for_longer_than_the_retries_stops_the_sweep_and_resume_logs_all(
    tmp_path, monkeypatch
):
    """The server stops answering once the trial has opened its run; the client gives up after
    its retries (lowered here through MLflow's own settings). The sweep ends with exit 1 and a
    message naming the server; `resume` against the restarted server logs every partition and
    epoch exactly once."""
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = mlflow_server(tmp_path, port)
    spec = tiny_sweep(num_samples=1)
    spec["tracking"]["mlflow_uri"] = uri
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    try:
        sweep = _start(["run", str(write_spec(tmp_path, spec)), "--storage", "runs"], tmp_path)
        client, deadline = MlflowClient(uri), time.monotonic() + 300
        while True:  # the trial has opened its run; its first partition reports seconds later
            found = client.get_experiment_by_name("tiny")
            query = f"tags.`{tracking.ROLE}` = 'trial'"
            if found and client.search_runs([found.experiment_id], filter_string=query):
                break
            assert sweep.poll() is None, sweep.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "the trial never opened its run"
            time.sleep(0.5)
        stop(server)
        output, _ = sweep.communicate(timeout=600)
        assert sweep.returncode == 1, output[-3000:]
        last = output.strip().splitlines()[-1]
        assert last.startswith(f"error: the MLflow tracking server {uri} does not answer"), last
        assert f"python -m smsweep resume {tmp_path / 'runs' / 'tiny'}" in last
        experiment = tmp_path / "runs" / "tiny"
        assert not (experiment / claim.CLAIM_FILE).exists(), "released on failure too"
        assert list(experiment.glob(f"train/*/{tracking.PENDING_FILE}")), "what waits to be logged"

        server = mlflow_server(tmp_path, port)
        resumed = _start(["resume", str(experiment)], tmp_path)
        output, _ = resumed.communicate(timeout=600)
        assert resumed.returncode == 0, output[-3000:]
        experiment_id = client.get_experiment_by_name("tiny").experiment_id
        runs = client.search_runs([experiment_id])
        parents = [r for r in runs if r.data.tags.get(tracking.ROLE) == "sweep"]
        children = [r for r in runs if r.data.tags.get(tracking.ROLE) == "trial"]
        assert [r.info.status for r in parents] == ["FINISHED"]
        assert [r.info.status for r in children] == ["FINISHED"]
        run_id = children[0].info.run_id
        for metric in ("recon_loss", "miou"):
            history = client.get_metric_history(run_id, metric)
            assert sorted(m.step for m in history) == [0, 1], metric
        artifacts = {a.path for a in client.list_artifacts(run_id)}
        assert {"config.yaml", "iou_per_class.csv", "galleries"} <= artifacts
        assert not list(experiment.glob(f"train/*/{tracking.PENDING_FILE}"))
    finally:
        if server.poll() is None:
            stop(server)
