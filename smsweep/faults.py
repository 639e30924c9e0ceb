"""Test-only fault injection (docs/resuming-and-faults.md, "What survives what"); never meant
for real sweeps.

The faults live in one environment variable, SMSWEEP_TEST_FAULT, and nowhere else: no production
signature carries them. Its value is JSON, or `@path` of a JSON file read at each check (so a
test can change the faults of Ray workers that are already running). Keys: raise_after_partition
(first attempt only), nan_at_partition, pause_at (+ marker),
actor_exit_after_blocks (+ actor_exits, exits_dir).

Ray processes inherit the variable from the process that starts Ray (a local `ray.init`), or from
a job's `runtime_env`. Unset, every check below is a dictionary lookup that finds nothing.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

ENV = "SMSWEEP_TEST_FAULT"


class InjectedFault(RuntimeError):
    """Raised by the fault `raise_after_partition`."""


def active() -> dict[str, Any]:
    """The faults set for this process (empty in a real sweep)."""
    value = os.environ.get(ENV)
    if not value:
        return {}
    if value.startswith("@"):
        path = Path(value[1:])
        return json.loads(path.read_text()) if path.is_file() else {}
    return json.loads(value)


def pause_for_a_kill(point: str) -> None:
    """At `pause_at == point`, write `marker` (the point and this process's pid) and wait to
    be killed, so that a test can kill a sweep, or the trial's own process, at an exact point."""
    faults = active()
    if faults.get("pause_at") == point:
        Path(faults["marker"]).write_text(f"{point} {os.getpid()}")
        time.sleep(3600)


def raise_after_partition(partition: int, first_attempt: bool) -> None:
    """Fail the trial's first attempt right after this partition's checkpoint, as a crash would."""
    if first_attempt and active().get("raise_after_partition") == partition:
        raise InjectedFault(f"test-only fault: raise_after_partition={partition}")


def poisoned(batches, partition: int):
    """At `nan_at_partition == partition`, the same batches with NaN pixels, as corrupt data or
    a diverged model gives; otherwise `batches` itself."""
    if active().get("nan_at_partition") != partition:
        return batches

    def with_nan(epoch: int):
        for images, indices in batches(epoch):
            yield images * float("nan"), indices

    return with_nan


def actor_exits(blocks_scored: int) -> None:
    """A scoring actor process exits after `actor_exit_after_blocks` blocks, as a crashed or
    preempted actor would; `actor_exits` processes in all (default 1) do so, each claiming a
    file in the directory `exits_dir`, so that their replacements live."""
    faults = active()
    limit = faults.get("actor_exit_after_blocks")
    if limit is None or blocks_scored < limit:
        return
    for n in range(faults.get("actor_exits", 1)):
        try:
            os.close(os.open(Path(faults["exits_dir"]) / f"exit-{n}", os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            continue
        os._exit(1)
