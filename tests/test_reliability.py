"""What a sweep survives, with the real engine: kills at several points, failing trials, NaN.

Faults come from the test-only setting SMSWEEP_TEST_FAULT (JSON, read by the trial function;
see `smsweep.trainloop.Trial`).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from smsweep import tracking
from smsweep.cli import main
from smsweep.sweep import FAULTS_ENV
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
@pytest.mark.parametrize("point", ["pretrain:1", "scoring", "finetune:0"])
def test_sigkill_at_each_point_then_resume_loses_and_repeats_nothing(point, tmp_path):
    spec = tiny_sweep(num_samples=2)
    spec["search"]["space"]["masking.strategy"] = {"choice": ["selective", "random"]}
    marker = tmp_path / "paused"
    os.environ[FAULTS_ENV] = json.dumps({"pause_at": point, "marker": str(marker)})
    try:
        sweep = _start(["run", str(write_spec(tmp_path, spec)), "--storage", "runs"], tmp_path)
    finally:
        del os.environ[FAULTS_ENV]
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert sweep.poll() is None, sweep.stdout.read()[-3000:]
        assert time.monotonic() < deadline, f"the sweep never reached {point}"
        time.sleep(0.5)
    os.killpg(sweep.pid, signal.SIGKILL)
    sweep.wait(timeout=60)
    resumed = _start(["resume", str(tmp_path / "runs" / "tiny")], tmp_path)
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
    spec = write_spec(tmp_path, tiny_sweep(num_samples=2, max_failures=1))
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
    spec = tiny_sweep(num_samples=2, max_failures=2)
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
