"""A sweep on a real two-node Ray cluster (on one machine), reached with --address, tracked by a
real MLflow server on 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import ray
from mlflow.tracking import MlflowClient
from ray.cluster_utils import Cluster

from smsweep.cli import main
from smsweep.engines import tracking
from smsweep.errors import SpecError
from smsweep.spec.load import validate_spec
from smsweep.trial.resources import check_fits, cluster_capacity
from tests import servers
from tests.servers import free_port
from tests.test_sweep import tiny_sweep, write_spec

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def two_nodes():
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2}, connect=False)
    cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """`mlflow server` on 127.0.0.1 only; stopped when the module ends."""
    port = free_port()
    server = servers.mlflow_server(tmp_path_factory.mktemp("mlflow"), port)
    yield f"http://127.0.0.1:{port}"
    servers.stop(server)


def test_a_local_mlflow_store_is_refused_on_several_nodes(two_nodes, tmp_path, capsys):
    spec = write_spec(tmp_path, tiny_sweep(num_samples=1))
    storage = tmp_path / "runs"
    code = main(["run", str(spec), "--address", two_nodes.address, "--storage", str(storage)])
    assert code == 2
    assert "start a tracking server" in capsys.readouterr().err
    assert not storage.exists() and not (tmp_path / "mlflow.db").exists()
    assert not ray.is_initialized()


def test_an_autoscaling_cluster_is_checked_against_what_it_can_grow_to(two_nodes):
    """Two trials of 3 CPUs do not fit the 4 CPUs up now; declared able to grow to 8, they do.
    The same spec without a cluster to scale is refused."""
    raw = tiny_sweep(num_samples=2)
    raw["search"]["max_concurrent"] = 2
    raw["resources"] = {"cpus_per_trial": 1, "cpus_per_worker": 1, "scoring_actors": 1}
    fixed = validate_spec(raw)
    scaling = validate_spec({**raw, "resources": {**raw["resources"], "autoscale_cpus": 8}})
    ray.init(address=two_nodes.address, log_to_driver=False)
    try:
        now = ray.cluster_resources()
        with pytest.raises(SpecError, match=r"set search\.max_concurrent: 1"):
            check_fits(fixed, *cluster_capacity(fixed, now, "the cluster"))
        assert check_fits(scaling, *cluster_capacity(scaling, now, "the cluster")) == 2
    finally:
        ray.shutdown()


def test_autoscaling_without_a_cluster_is_refused(tmp_path, capsys):
    raw = tiny_sweep(num_samples=1)
    raw["resources"] = {**raw.get("resources", {}), "autoscale_cpus": 64}
    code = main(["run", str(write_spec(tmp_path, raw)), "--storage", str(tmp_path / "runs")])
    assert code == 2
    assert "pass --address" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_sweep_runs_on_a_two_node_cluster(two_nodes, mlflow_server, tmp_path):
    spec = write_spec(tmp_path, tiny_sweep(num_samples=2))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    argv = ["run", str(spec), "--address", two_nodes.address, "--mlflow-uri", mlflow_server]
    done = subprocess.run(
        [sys.executable, "-m", "smsweep", *argv, "--storage", str(tmp_path / "runs")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"on the Ray cluster at {two_nodes.address}" in done.stdout
    assert len([n for n in two_nodes.list_all_nodes()]) == 2  # joined, never started one
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("tiny")
    runs = client.search_runs([experiment.experiment_id])
    roles = sorted(r.data.tags[tracking.ROLE] for r in runs)
    assert roles == ["sweep", "trial", "trial"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert all("miou" in r.data.metrics for r in runs if r.data.tags[tracking.ROLE] == "trial")
    assert not (tmp_path / "mlflow.db").exists()
