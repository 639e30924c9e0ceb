"""Fixtures that several test modules share."""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from smsweep.cli import main
from tests.test_sweep import tiny_sweep, write_spec


@dataclass(frozen=True)
class FinishedSweep:
    root: Path  # where `run` ran: the spec, the MLflow store, runs/
    experiment: Path  # root/runs/tiny
    out: str  # what `run` wrote to its standard output, from Python or not
    err: str  # and to its standard error


@contextlib.contextmanager
def _captured(directory: Path):
    """Standard output and error of this process, written from Python or not (as pytest's
    `capfd` captures them), into directory/out.txt and directory/err.txt."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    out = open(directory / "out.txt", "w", buffering=1)  # noqa: SIM115 (left open: see below)
    err = open(directory / "err.txt", "w", buffering=1)  # noqa: SIM115
    try:
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            yield
    finally:
        out.flush()
        err.flush()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
    # `out` and `err` stay open: a logging handler made while they were sys.stdout and
    # sys.stderr may still hold them.


@pytest.fixture(scope="session")
def finished_sweep(tmp_path_factory) -> FinishedSweep:
    """A finished tiny sweep (3 trials: random, selective, block), run once for the session
    with `main(["run", ...])` at the default verbosity from its own directory, its trials
    training in their own processes. tests/test_sweep.py checks what it logged and wrote,
    tests/test_output.py what it printed and kept, tests/test_report.py builds its report
    (inside the experiment directory and the MLflow store only)."""
    root = tmp_path_factory.mktemp("tiny-sweep")
    logs = tmp_path_factory.mktemp("tiny-sweep-output")
    spec = write_spec(root, tiny_sweep(in_process=True))
    with pytest.MonkeyPatch.context() as patch, _captured(logs):
        patch.chdir(root)
        code = main(["run", str(spec), "--storage", "runs"])
    out, err = (logs / "out.txt").read_text(), (logs / "err.txt").read_text()
    assert code == 0, (out + err)[-3000:]
    return FinishedSweep(root, root / "runs" / "tiny", out, err)
