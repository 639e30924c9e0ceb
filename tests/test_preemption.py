"""A scheduler's stop and damaged files, with the real engine: SIGTERM to the driver (as
Kubernetes, Slurm and spot instances send it), truncated checkpoints and partition-0 cache entries
before `resume`, and kill -9 + resume of a sweep of some dozens of trials."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from smsweep import claim, signals
from tests.test_sweep import _check_complete, _start, _wait_for, mlflow_runs, tiny_sweep, write_spec


def _no_run_running(tmp_path: Path) -> None:
    parents, children = mlflow_runs(tmp_path)
    assert "RUNNING" not in {run.info.status for run in parents + children}


def _second_trial_running(tmp_path: Path, sweep) -> None:
    _wait_for(sweep, "finished", timeout=300)  # the first trial is done
    deadline = time.monotonic() + 120
    while len(mlflow_runs(tmp_path)[1]) < 2:  # and the second is training
        assert time.monotonic() < deadline, "the second trial never opened its run"
        time.sleep(0.5)


@pytest.mark.slow
def test_sigterm_stops_the_driver_within_the_grace_period_with_143_and_resume_finishes(tmp_path):
    spec = write_spec(tmp_path, tiny_sweep(num_samples=3, in_process=True))
    sweep = _start(["run", str(spec), "--storage", "runs"], tmp_path)
    _second_trial_running(tmp_path, sweep)
    sent = time.monotonic()
    os.kill(sweep.pid, signal.SIGTERM)  # the driver only, as a scheduler signals its process
    output, _ = sweep.communicate(timeout=120)
    took = time.monotonic() - sent
    assert sweep.returncode == signals.EXIT_TERMINATED, output[-3000:]
    assert took < 30, f"the stop took {took:.0f} s, past Kubernetes' default grace period"
    assert "*** SIGTERM received" not in output  # Ray's handler (a stack dump, then an abort)
    experiment = tmp_path / "runs" / "tiny"
    assert f"python -m smsweep resume {experiment}" in output, output
    _no_run_running(tmp_path)
    assert not (experiment / claim.CLAIM_FILE).exists(), "released on SIGTERM"
    resumed = _start(["resume", str(experiment)], tmp_path)
    output, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, output[-3000:]
    _check_complete(tmp_path, 3)
