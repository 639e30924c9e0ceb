"""SIGTERM, a scheduler's stop, taken as Ctrl-C: an orderly stop within a grace period.

Kubernetes, Slurm and spot instances stop a job with SIGTERM and kill it a grace period later
(Kubernetes: 30 s by default). The driver handles SIGTERM as it handles SIGINT: while Tune runs,
Tune's own SIGINT handler stops the trials (each keeps its last checkpoint) and saves its state;
the sweep then ends its MLflow runs KILLED, releases its claim and prints the resume command.
Outside Tune's run the signal raises KeyboardInterrupt, as SIGINT does.

A watchdog ends the process with EXIT_TERMINATED once `GRACE_S` has passed, before the
scheduler's SIGKILL, and a second SIGTERM ends it at once. Either leaves what kill -9 leaves, which
`resume` closes: runs still RUNNING end KILLED and a claim whose process is gone is taken over.

Ray installs its own SIGTERM handler in the driver on `ray.init` (a stack dump, then an abort):
`install` must run after `ray.init`, and replaces it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports a process ended by it
GRACE_S = 25.0  # the orderly stop's limit: inside Kubernetes' default 30 s, with room to spare
_STATE: dict[str, Any] = {"received": False, "installed": False, "previous": None}


def received() -> bool:
    """Whether this process has been asked to stop by SIGTERM."""
    return bool(_STATE["received"])


def install(echo: Callable[[str], None], resume_hint: str = "", grace_s: float = GRACE_S) -> None:
    """Handle SIGTERM as an orderly stop from now on (main thread only; call after ray.init).
    `resume_hint`: the line that says how to continue, printed when the signal comes outside
    Tune's run (within it, the sweep's summary says so)."""
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers belong to the main thread; a library caller keeps its own

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        if _STATE["received"]:
            _say(echo, "second SIGTERM: stopping now; `python -m smsweep resume` continues")
            _exit_now()
        _STATE["received"] = True
        _say(
            echo,
            f"SIGTERM received: stopping the sweep (at most {grace_s:.0f} s; a second SIGTERM "
            "stops at once)",
        )
        watchdog = threading.Timer(grace_s, _overdue, args=(echo, grace_s))
        watchdog.daemon = True
        watchdog.start()
        interrupt = signal.getsignal(signal.SIGINT)  # Tune's while it runs, else Python's
        if callable(interrupt) and interrupt is not signal.default_int_handler:
            interrupt(signal.SIGINT, frame)
            return
        if resume_hint:
            _say(echo, resume_hint)
        raise KeyboardInterrupt

    _STATE["received"] = False
    _STATE["previous"] = signal.signal(signal.SIGTERM, on_sigterm)
    _STATE["installed"] = True


def uninstall() -> None:
    """Give SIGTERM back to the Python handler it had before `install`, or to the default (Ray's
    own handler, set from C, is gone with Ray), for a caller that goes on."""
    if _STATE["installed"] and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _STATE["previous"] or signal.SIG_DFL)
        _STATE["installed"], _STATE["previous"] = False, None


def _overdue(echo: Callable[[str], None], grace_s: float) -> None:
    _say(
        echo,
        f"the orderly stop took over {grace_s:.0f} s: stopping now; `python -m smsweep "
        "resume` continues the sweep",
    )
    _exit_now()


def _say(echo: Callable[[str], None], line: str) -> None:
    # the signal may come in the middle of a print (a reentrant call): the line is not vital
    with contextlib.suppress(RuntimeError):
        echo(line)


def _exit_now() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_TERMINATED)  # Ray's local processes share this process's fate
