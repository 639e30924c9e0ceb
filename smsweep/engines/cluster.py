"""Connecting to Ray, and the checks a multi-node cluster needs before a sweep launches."""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from smsweep.engines.store import Location
from smsweep.errors import SpecError

# Ray Train V2's controller collects a worker's report only when it polls (every 2 s by default),
# and a worker's next report waits for that: with partitions that train in seconds, the default
# would idle the worker for up to 2 s per partition.
RUNTIME_ENV = {"env_vars": {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25"}}


def connect(address: str | None, verbose: bool = True) -> str:
    """Join the cluster at `address` (or RAY_ADDRESS); never start one in that case. Without an
    address, start a local Ray on this machine's CPUs. Returns a description for messages.
    Not `verbose`: Ray's INFO and WARNING lines stay off the console (its settings do not
    change, e.g. token authentication stays on)."""
    address = address or os.environ.get("RAY_ADDRESS")
    level = logging.INFO if verbose else logging.ERROR
    if address:
        try:
            ray.init(
                address=address,
                log_to_driver=False,
                runtime_env=RUNTIME_ENV,
                logging_level=level,
            )
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise SpecError(
                f"cannot connect to the Ray cluster at {address!r} ({error}); start it with "
                "`ray start --head` or fix --address / RAY_ADDRESS"
            ) from None
        return f"the Ray cluster at {address}"
    ray.init(
        address="local",  # a new instance, even when `ray start` left one running here
        num_cpus=os.cpu_count(),
        include_dashboard=False,
        log_to_driver=False,
        runtime_env=RUNTIME_ENV,
        logging_level=level,
    )
    return "the local Ray instance"


def alive_nodes() -> list[dict]:
    return [node for node in ray.nodes() if node["Alive"]]


def check_multinode(storage: Path | Location, mlflow_uri: str) -> None:
    """On more than one node, refuse what only one node can see: a sqlite or file MLflow store,
    and a storage path that some node cannot read (an object store: every node that has the
    AWS settings reaches it)."""
    storage = Location.of(storage)
    nodes = alive_nodes()
    if len(nodes) < 2:
        return
    if mlflow_uri.startswith(("sqlite:", "file:")):
        raise SpecError(
            f"the Ray cluster has {len(nodes)} nodes, but the MLflow URI {mlflow_uri!r} is a "
            "local store that trials on other nodes cannot write to; start a tracking server "
            "(`mlflow server --host 0.0.0.0 --port 5000 --backend-store-uri ...`) and pass "
            "--mlflow-uri http://HOST:5000"
        )
    if storage.remote:
        return
    missing = _nodes_not_seeing(storage.path, nodes)
    if missing:
        raise SpecError(
            f"--storage {str(storage)!r} is not visible from {len(missing)} of the "
            f"{len(nodes)} nodes ({', '.join(missing[:3])}); use shared storage that every "
            "node mounts at the same path (e.g. NFS)"
        )


def _nodes_not_seeing(storage: Path, nodes: list[dict]) -> list[str]:
    """Write a probe under `storage` here, look for it from every node, then remove it (and
    `storage` itself when the probe created it)."""
    existed = storage.exists()
    probe = storage / f".smsweep-probe-{uuid.uuid4().hex}"
    try:
        probe.mkdir(parents=True)
    except OSError as error:
        raise SpecError(f"--storage {str(storage)!r} is not writable ({error})") from None
    try:
        checks = {
            node["NodeManagerAddress"]: _exists.options(
                num_cpus=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False),
            ).remote(str(probe))
            for node in nodes
        }
        return [where for where, seen in checks.items() if not ray.get(seen, timeout=60)]
    finally:
        shutil.rmtree(probe, ignore_errors=True)
        if not existed:
            shutil.rmtree(storage, ignore_errors=True)


@ray.remote
def _exists(path: str) -> bool:
    return os.path.isdir(path)
