"""Real servers the tests start on 127.0.0.1: a free port, `mlflow server` over a sqlite store,
the wait until one answers, and its stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_mlflow_server(directory: Path, port: int, store: str | None = None) -> subprocess.Popen:
    """`mlflow server` on 127.0.0.1:port over `store` (default: a sqlite file in `directory`),
    artifacts under `directory`; started, not yet answering (`wait_until_answers`)."""
    store = store or f"sqlite:///{directory / 'server.db'}"
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", "1", "--backend-store-uri", store]
    command += ["--artifacts-destination", str(directory / "server-artifacts")]
    return subprocess.Popen(
        command, cwd=directory, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
        # Without its job runner (workers and periodic tasks no test uses), the server starts
        # and answers in a third of the time.
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )  # fmt: skip


def wait_until_answers(url: str, server: subprocess.Popen, seconds: float = 180) -> bytes:
    """The body of the first answer to GET `url`, while `server` lives and `seconds` last."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                return answer.read()
        except OSError:
            assert server.poll() is None, f"the server for {url} exited"
            assert time.monotonic() < deadline, f"{url} did not answer in {seconds:.0f} s"
            time.sleep(0.5)


def mlflow_server(directory: Path, port: int) -> subprocess.Popen:
    """A tracking server on 127.0.0.1:port that answers, its runs and artifacts in `directory`."""
    server = start_mlflow_server(directory, port)
    wait_until_answers(f"http://127.0.0.1:{port}/health", server)
    return server


def stop(server: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (started with start_new_session), then reap it."""
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=60)
