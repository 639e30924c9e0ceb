"""The MLflow store under concurrency: a new sqlite file, a locked one, one that is down."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from smsweep.engines import mlflow_store, tracking


def _start_a_sweep_run(uri: str, directory: str, start, results) -> None:
    start.wait()
    try:
        run = tracking.start_sweep_run(uri, "shared", Path(directory).name, {}, Path(directory))
        results.put(run.run_id)
    except Exception as error:
        results.put(f"failed: {error!r}"[:500])


@pytest.mark.slow
def test_sweeps_starting_together_on_a_new_sqlite_file_all_get_their_run(tmp_path):
    """Without the lock, MLflow's table creation races and most of them fail."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    context = multiprocessing.get_context("spawn")
    count = 4
    start, results = context.Barrier(count), context.Queue()
    processes = [
        context.Process(
            target=_start_a_sweep_run, args=(uri, str(tmp_path / f"sweep{i}"), start, results)
        )
        for i in range(count)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=300) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    assert not [outcome for outcome in outcomes if outcome.startswith("failed")], outcomes
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("shared")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(run.info.run_id for run in runs) == sorted(outcomes)
    assert sorted(path.name for path in tmp_path.iterdir() if path.is_file()) == ["mlflow.db"]


def test_a_locked_store_is_retried_until_it_answers(monkeypatch):
    failures = []

    def flaky(value: int) -> int:
        if len(failures) < 3:
            failures.append(1)
            raise sqlite3.OperationalError("database is locked")
        return value

    monkeypatch.setattr(mlflow_store, "LOCKED_RETRY_S", 30.0)
    assert mlflow_store.retry_locked(flaky, 7) == 7
    assert len(failures) == 3


def test_a_store_locked_for_longer_than_the_bound_raises(monkeypatch):
    calls = []

    def locked() -> None:
        calls.append(1)
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(mlflow_store, "LOCKED_RETRY_S", 0.5)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        mlflow_store.retry_locked(locked)
    assert 2 <= len(calls) <= 10


def test_other_errors_are_not_retried():
    calls = []

    def broken() -> None:
        calls.append(1)
        raise ValueError("no such run")

    with pytest.raises(ValueError):
        mlflow_store.retry_locked(broken)
    assert calls == [1]


def test_a_server_that_does_not_answer_is_named(tmp_path):
    reason = mlflow_store.unreachable("http://127.0.0.1:9", timeout=2)
    assert reason is not None and "http://127.0.0.1:9 does not answer" in reason
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow_store.prepare(uri)
    assert mlflow_store.unreachable(uri) is None
