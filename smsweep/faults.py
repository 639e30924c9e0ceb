"""Test-only fault injection (README, "What survives what"); never meant for real sweeps.

Faults arrive as a dict (from SMSWEEP_TEST_FAULT through the trial function): raise_after_partition
(first attempt only), nan_at_partition, pause_at (+ marker), actor_exit_after_blocks.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any


def pause_for_a_kill(faults: dict[str, Any], point: str) -> None:
    """Test-only: at `faults["pause_at"] == point`, touch `faults["marker"]` and wait to be
    killed, so that a test can kill a sweep at an exact point."""
    if faults.get("pause_at") == point:
        Path(faults["marker"]).write_text(point)
        time.sleep(3600)


def poisoned(batches):
    """Test-only: the same batches with NaN pixels, as corrupt data or a diverged model gives."""

    def with_nan(epoch: int):
        for images, indices in batches(epoch):
            yield images * float("nan"), indices

    return with_nan
