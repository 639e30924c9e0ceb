"""SIGTERM outside Tune, in a real process without Ray: the first raises KeyboardInterrupt (as
Ctrl-C does), a second stops at once with 143, and a stop that outlasts the grace period is cut
short with 143."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from smsweep.engines import signals
from tests.test_sweep import REPO

SCRIPT = """
import os, signal, sys, time
from smsweep.engines import signals
signals.install(print, "continue with: resume DIR", grace_s={grace})
try:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)
except KeyboardInterrupt:
    print("stopping", flush=True)
{then}
print("ended normally", flush=True)
"""


def _run(grace: float, then: str) -> tuple[int, str, float]:
    code = SCRIPT.format(grace=grace, then=then)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    return done.returncode, done.stdout, time.monotonic() - started


def test_a_second_sigterm_stops_at_once_with_143():
    code, out, _ = _run(30, "os.kill(os.getpid(), signal.SIGTERM)\ntime.sleep(30)")
    assert code == 143 and "stopping" in out and "second SIGTERM" in out
    assert "ended normally" not in out


def test_a_stop_that_outlasts_the_grace_period_is_cut_short_with_143():
    code, out, took = _run(1, "time.sleep(30)")
    assert code == 143 and "took over 1 s" in out and took < 20


def test_a_stop_within_the_grace_period_ends_as_its_caller_decides():
    code, out, _ = _run(30, "")
    assert code == 0 and "ended normally" in out
    assert "continue with: resume DIR\nstopping\n" in out


def test_uninstall_gives_sigterm_back():
    before = signal.getsignal(signal.SIGTERM)
    signals.install(print)
    assert signal.getsignal(signal.SIGTERM) is not before
    signals.uninstall()
    assert signal.getsignal(signal.SIGTERM) in (before, signal.SIG_DFL)
