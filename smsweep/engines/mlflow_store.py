"""The MLflow store shared by concurrent processes: two sweeps, their trials, a report.

- `client(uri)`: an MlflowClient whose calls are retried, for at most LOCKED_RETRY_S, while a
  sqlite store answers "database is locked". MLflow waits up to 20 s for sqlite's lock inside
  one call, but sqlite gives up at once when waiting could deadlock (two transactions that both
  read, then both want to write), and many writers can queue for longer.
- `prepare(uri)`: the first use of a sqlite file creates MLflow's tables (its migrations). Two
  processes doing that at once both run them and at least one fails ("table ... already
  exists"), so one process at a time does it, under an exclusive lock on `<file>.lock` beside
  the database, removed afterwards.
- `unreachable(uri)`: why the store does not answer, or None. An http(s) server is asked for
  /health; other stores get a real (read-only) call.

How long an http client retries is MLflow's: MLFLOW_HTTP_REQUEST_MAX_RETRIES (default 7),
MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR (2) and MLFLOW_HTTP_REQUEST_TIMEOUT (120 s per request):
about 4 minutes against a server that refuses connections.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mlflow.tracking import MlflowClient

LOCKED_RETRY_S = 120.0  # how long a call keeps retrying "database is locked"
INIT_LOCK_WAIT_S = 600.0  # creating the tables takes seconds; a lock held this long is stuck


class _RetryingClient:
    """MlflowClient's methods, each retried while the sqlite store is locked."""

    def __init__(self, uri: str) -> None:
        self.tracking_uri = uri
        self._client = MlflowClient(uri)

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        def call(*args, **kwargs):
            return retry_locked(attribute, *args, **kwargs)

        return call


def client(uri: str) -> Any:
    """An MlflowClient for `uri` whose calls wait out a locked sqlite store (see module doc)."""
    return _RetryingClient(uri)


def retry_locked(call, *args, **kwargs):
    """`call(*args, **kwargs)`, again after a growing pause while it fails with "database is
    locked", until LOCKED_RETRY_S have passed. A locked sqlite call wrote nothing."""
    deadline = time.monotonic() + LOCKED_RETRY_S
    pause = 0.1
    while True:
        try:
            return call(*args, **kwargs)
        except Exception as error:
            if "database is locked" not in str(error) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause * random.uniform(0.5, 1.5))  # jitter: waiters do not retry in step
        pause = min(2 * pause, 5.0)


def prepare(uri: str) -> None:
    """Create a sqlite store's tables if it has none, one process at a time (see module doc)."""
    if not uri.startswith("sqlite:///"):
        return
    database = Path(uri.removeprefix("sqlite:///").split("?")[0])
    with _exclusive(database.with_name(database.name + ".lock")):
        # The client builds the store on its first call; the store creates missing tables.
        client(uri).search_experiments(max_results=1)


@contextlib.contextmanager
def _exclusive(lock: Path):
    """An exclusive flock on `lock` (created if needed), removed on release. A waiter that
    opened the file just before its removal finds it gone once it gets the lock, and locks
    the new one instead: only the file at that path counts."""
    deadline = time.monotonic() + INIT_LOCK_WAIT_S
    while True:
        descriptor = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{lock} has been locked for {INIT_LOCK_WAIT_S:.0f} s by another process "
                    "creating the MLflow tables; if none is running, remove the file"
                ) from None
            time.sleep(0.1)
            continue
        try:
            if os.fstat(descriptor).st_ino == os.stat(lock).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(descriptor)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        os.close(descriptor)


def unreachable(uri: str, timeout: float = 5.0) -> str | None:
    """Why the store at `uri` does not answer, or None when it does."""
    if urlparse(uri).scheme in ("http", "https"):
        try:
            urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout).read()
        except OSError as error:
            return f"the MLflow tracking server {uri} does not answer ({error})"
        return None
    try:
        client(uri).search_experiments(max_results=1)
    except Exception as error:
        return f"the MLflow store {uri} fails ({str(error)[:300]})"
    return None


__all__ = ["client", "prepare", "retry_locked", "unreachable"]
