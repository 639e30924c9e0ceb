"""What the sweep hands one trial: a frozen object, not a dict re-parsed at the far end.

It crosses processes (the Tune trial to each Ray Train worker), so it holds only picklable
values; it imports nothing heavier than the spec, so the trial's process can build it without
loading the model libraries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from smsweep.method.data import Source
from smsweep.spec.config import SweepSpec


class Tracking(Protocol):
    """The trial's MLflow runs (`tracking.TrialTracking`): what the checkpoints keep of them;
    the recorder opens the run."""

    sweep_run_id: str
    run_id: str


@dataclass(frozen=True)
class TrialInput:
    """spec: the resolved trial spec (repeat included); source: the labelled data; run_dir: the
    Train run's folder or URL, where rank 0 puts galleries and the result (None: nowhere);
    tracking: the trial's MLflow runs (None: not tracked); partition0_cache: a folder every
    worker sees (None: no cache); pretrain_source: pretrain.data (cross-pretraining), or None
    to pretrain on `source` or on the spec's own pretrain.data; started_at: when the attempt
    began in the trial's process (wall clock, for the trial's cost)."""

    spec: SweepSpec
    source: Source
    run_dir: str | None = None
    tracking: Tracking | None = None
    partition0_cache: str | None = None
    pretrain_source: Source | None = None
    started_at: float | None = None
