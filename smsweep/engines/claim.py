"""One driver per experiment directory: an atomic claim with a heartbeat.

A driver (`run` or `resume`) holds `STORAGE/NAME/claim.json` while it runs. The file appears
whole and at once (`store.Location.create_new`: on a local disk or NFS, of two drivers racing for
it exactly one gets it; in an object store, which has no exclusive create, two drivers started
within the same second could both get it, and the later one's heartbeat warns the other).
It names the holder (host, boot id and pid namespace, pid and the pid's start time, start time,
a random token), and a daemon thread touches it every HEARTBEAT_S seconds: its mtime is the
heartbeat, set by the file server's clock on a shared filesystem.

A claim whose holder is gone is stale:
- on the holder's own host (same host name, boot id and pid namespace: where its pid means
  the same process), when its pid has ended (or now belongs to another process: the start time
  differs);
- seen from anywhere else, when its heartbeat is older than STALE_AFTER_S.
`take` replaces a stale claim; one takeover at a time, under `claim.json.takeover` (an exclusive
create; a takeover lock older than TAKEOVER_STALE_S was left by a process that died in it).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from smsweep.engines.store import Location
from smsweep.errors import SpecError

CLAIM_FILE = "claim.json"
HEARTBEAT_S = 10.0  # how often a driver touches its claim
STALE_AFTER_S = 120.0  # seen from another host, an older heartbeat means its driver is gone
TAKEOVER_STALE_S = 30.0  # a takeover takes milliseconds; an older lock was abandoned


@dataclass(frozen=True)
class Holder:
    """Who holds a claim: what the claim file says, and its heartbeat (the file's mtime)."""

    host: str
    pid: int
    started: float  # seconds since the epoch
    token: str
    boot_id: str = ""  # Linux: tells a reboot (or another machine of the same name) apart
    pid_namespace: str = ""  # Linux: tells containers that share a host name apart
    pid_started: str = ""  # Linux: the process's start time, in clock ticks after boot
    heartbeat: float = field(default=0.0, compare=False)

    def describe(self) -> str:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        age = max(0.0, time.time() - self.heartbeat)
        return f"pid {self.pid} on {self.host}, started {started}, last heartbeat {age:.0f} s ago"


class Held(SpecError):
    """The experiment directory is claimed by a driver that is alive."""

    def __init__(self, directory: Location, holder: Holder, also: str = "") -> None:
        self.directory, self.holder = directory, holder
        super().__init__(directory, holder, also)  # the constructor's own: copies and pickles

    def __str__(self) -> str:
        directory, holder, also = self.args
        return (
            f"{directory} is in use by a running sweep driver ({holder.describe()}); wait for "
            f"it to end, or stop it (Ctrl-C) and continue with `python -m smsweep resume "
            f"{directory}`" + (f"; or {also}" if also else "")
        )


class Claim:
    """A claim this process holds: a daemon thread refreshes its heartbeat until `release`.
    `took_over` describes the stale claim it replaced, if any."""

    def __init__(self, path: Location, holder: Holder, took_over: str | None = None) -> None:
        self.path, self.holder, self.took_over = path, holder, took_over
        self._stop = threading.Event()
        self._beating = threading.Thread(target=self._beat, name="claim-heartbeat", daemon=True)
        self._beating.start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            current = read(self.path.parent)
            if current is None or current.token != self.holder.token:
                now = f"taken over by {current.describe()}" if current else "removed"
                print(
                    f"warning: this driver no longer holds {self.path} ({now}); "
                    "another driver may be writing to the same experiment",
                    file=sys.stderr,
                    flush=True,
                )
                return
            with contextlib.suppress(OSError):  # e.g. a shared filesystem's hiccup: next beat
                self.path.touch()

    def release(self) -> None:
        """Stop the heartbeat and remove the claim, unless another driver has taken it over."""
        self._stop.set()
        self._beating.join()
        current = read(self.path.parent)
        if current is not None and current.token == self.holder.token:
            self.path.delete()

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def create(directory: Path | Location) -> Claim:
    """Create `directory` and claim it. Raises FileExistsError, writing nothing, when it
    exists: the directory itself is the exclusive create that two `run`s race for."""
    directory = Location.of(directory)
    directory.make_new_directory()
    holder = _this_process()
    _write_new(directory / CLAIM_FILE, holder)
    return Claim(directory / CLAIM_FILE, holder)


def take(directory: Path | Location) -> Claim:
    """Claim an existing experiment directory: a free one at once, a stale claim by taking it
    over (`Claim.took_over` says whose). Raises Held when a live driver holds it."""
    directory = Location.of(directory)
    path = directory / CLAIM_FILE
    for _ in range(20):
        current = read(directory)
        if current is None:
            if _taking_over(path):
                # Another driver is between removing a stale claim and writing its own: the
                # claim is its, not free.
                time.sleep(0.05)
                continue
            holder = _this_process()
            with contextlib.suppress(FileExistsError):  # another driver was quicker: look again
                _write_new(path, holder)
                return Claim(path, holder)
            continue
        reason = stale_reason(current)
        if reason is None:
            raise Held(directory, current)
        with _takeover_lock(path) as locked:
            if not locked:
                time.sleep(0.25)  # another driver is taking over; see what it leaves
                continue
            if read(directory) != current:
                continue  # changed since we judged it
            path.delete()
            holder = _this_process()
            try:
                _write_new(path, holder)
            except FileExistsError:
                continue
            return Claim(path, holder, took_over=f"{current.describe()}: {reason}")
    current = read(directory)
    if current is not None:
        raise Held(directory, current)
    raise SpecError(f"{directory} is being claimed by other drivers at this moment; try again")


def check_free(directory: Path | Location) -> None:
    """Raise Held when a live driver holds `directory` (reads only; for a check up front)."""
    directory = Location.of(directory)
    current = read(directory)
    if current is not None and stale_reason(current) is None:
        raise Held(directory, current)


def read(directory: Path | Location, wait_s: float = 0.0) -> Holder | None:
    """The claim on `directory`, or None. `wait_s`: how long to wait for one to appear (a
    driver that has just created the directory writes its claim a moment later)."""
    path = Location.of(directory) / CLAIM_FILE
    deadline = time.monotonic() + wait_s
    while True:
        try:
            text, heartbeat = path.read_text(), path.mtime()
        except FileNotFoundError:
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)
            continue
        try:
            fields = json.loads(text)
            return Holder(**fields, heartbeat=heartbeat)
        except (ValueError, TypeError):  # not ours, or damaged: only its heartbeat can tell
            return Holder(host="?", pid=0, started=heartbeat, token=text, heartbeat=heartbeat)


def stale_reason(holder: Holder) -> str | None:
    """Why `holder` is gone, or None while it may be alive."""
    host, boot_id, pid_namespace = _host()
    if (holder.host, holder.boot_id, holder.pid_namespace) == (host, boot_id, pid_namespace):
        if _alive(holder.pid, holder.pid_started):
            return None
        return f"its process {holder.pid} on this host has ended"
    age = time.time() - holder.heartbeat
    if age > STALE_AFTER_S:
        return f"its heartbeat is {age:.0f} s old (more than {STALE_AFTER_S:.0f} s)"
    return None


def _this_process() -> Holder:
    host, boot_id, pid_namespace = _host()
    pid = os.getpid()
    started = _proc_stat(pid)
    return Holder(
        host=host,
        pid=pid,
        started=time.time(),
        token=uuid.uuid4().hex,
        boot_id=boot_id,
        pid_namespace=pid_namespace,
        pid_started=started[1] if started else "",
    )


def _write_new(path: Location, holder: Holder) -> None:
    """Write the claim so that it appears complete, or raise FileExistsError."""
    fields = asdict(holder)
    del fields["heartbeat"]
    path.create_new(json.dumps(fields, indent=1))


def _takeover_path(path: Location) -> Location:
    return path.parent / (path.name + ".takeover")


def _taking_over(path: Location) -> bool:
    """Whether a driver holds the takeover lock (one older than TAKEOVER_STALE_S was left by a
    process that died in it)."""
    try:
        return time.time() - _takeover_path(path).mtime() < TAKEOVER_STALE_S
    except FileNotFoundError:
        return False


@contextlib.contextmanager
def _takeover_lock(path: Location):
    lock = _takeover_path(path)
    try:
        lock.create_new("")
    except FileExistsError:
        with contextlib.suppress(FileNotFoundError):
            if time.time() - lock.mtime() > TAKEOVER_STALE_S:
                lock.delete()
        yield False
        return
    try:
        yield True
    finally:
        lock.delete()


def _host() -> tuple[str, str, str]:
    """(host name, boot id, pid namespace); the last two are empty without /proc."""
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        pid_namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        boot_id = pid_namespace = ""
    return socket.gethostname(), boot_id, pid_namespace


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks) of a process from /proc, or None without /proc.
    Raises ProcessLookupError when /proc has no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            raise ProcessLookupError(pid) from None
        return None
    except OSError:
        return None
    after_name = text[text.rindex(")") + 2 :].split()  # the name may hold spaces and ")"
    return after_name[0], after_name[19]  # fields 3 (state) and 22 (starttime) of proc(5)


def _alive(pid: int, pid_started: str) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    try:
        stat = _proc_stat(pid)
    except ProcessLookupError:
        return False
    if stat is None:
        return True
    state, started = stat
    return state != "Z" and (not pid_started or started == pid_started)


__all__ = ["CLAIM_FILE", "Claim", "Held", "Holder", "check_free", "create", "read", "take"]
