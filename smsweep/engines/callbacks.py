"""What the driver hears of each trial: Tune's callbacks. `Relay` is the one Tune holds;
`CloseRuns` ends each trial's MLflow run with its final status and notices an MLflow outage."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any, ClassVar

from ray import tune

from smsweep.engines import mlflow_store, tracking

STOPPED_EARLY_TAG = "smsweep.stopped_early"  # a trial run's tag: ASHA stopped it


def stopped_early(metrics: dict[str, Any]) -> bool:
    """A trial that ended before its last validation (ASHA stopped it)."""
    planned = metrics.get("plan/finetune_evaluations")
    reached = metrics.get("finetune_evaluation")
    return planned is not None and reached is not None and reached < planned


class Relay(tune.Callback):
    """The one callback Tune holds: it passes Tune's events on to this driver's listeners
    (`Progress`, `CloseRuns`). Tune pickles its callbacks with the experiment and a restored
    Tuner uses the unpickled copies (Tuner.restore takes no callbacks); a relay carries no state,
    so its copy reaches the listeners of the driver that resumes."""

    listeners: ClassVar[list[tune.Callback]] = []  # this process's, set before each fit

    def _forward(hook: str):
        def forward(self, *args, **kwargs) -> None:
            for listener in self.listeners:
                getattr(listener, hook)(*args, **kwargs)

        return forward

    on_trial_start = _forward("on_trial_start")
    on_trial_result = _forward("on_trial_result")
    on_trial_complete = _forward("on_trial_complete")
    on_trial_error = _forward("on_trial_error")
    on_trial_recover = _forward("on_trial_recover")
    on_experiment_end = _forward("on_experiment_end")
    del _forward


class CloseRuns(tune.Callback):
    """Driver side: a trial that Tune stopped or that died without ending its run gets its
    final status here; at the end, every run still RUNNING is closed.

    When MLflow stops answering (a trial attempt failed and the store does not answer, or a
    call here failed), the sweep stops as Ctrl-C stops it: Tune handles SIGUSR1 like SIGINT,
    stopping the trials and saving its state for `resume`. `outage` says why."""

    def __init__(self, sweep_run: tracking.SweepRun, echo: Callable[[str], None]) -> None:
        self.sweep_run, self.echo = sweep_run, echo
        self.statuses: dict[str, str] = {}  # trial id -> Tune status, for every trial
        self.ids: dict[str, str] = {}  # trial directory -> trial id
        self.outage: str | None = None

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.statuses[trial.trial_id] = "TERMINATED"
        self._close(trial.trial_id, "FINISHED")
        if stopped_early(trial.last_result or {}) and self.outage is None:
            tracking.tag_trial_run(self.sweep_run, trial.trial_id, STOPPED_EARLY_TAG, "true")

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        self._tracking_answers()  # a retry would only wait for MLflow again

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.statuses[trial.trial_id] = "ERROR"
        if self._tracking_answers():
            self._close(trial.trial_id, "FAILED")

    def _close(self, trial_id: str, status: str) -> None:
        if self.outage is not None:
            return  # `resume` closes it
        try:
            tracking.close_trial_runs(self.sweep_run, {trial_id: status}, default="")
        except Exception:
            if self._tracking_answers():
                raise

    def _tracking_answers(self) -> bool:
        if self.outage is None:
            self.outage = mlflow_store.unreachable(self.sweep_run.uri)
            if self.outage is None:
                return True
            self.echo(f"{self.outage}: stopping the sweep")
            if signal.getsignal(signal.SIGUSR1) not in (signal.SIG_DFL, signal.SIG_IGN, None):
                os.kill(os.getpid(), signal.SIGUSR1)  # Tune's handler, installed by fit
        return False

    def on_experiment_end(self, trials, **info) -> None:
        for trial in trials:
            self.statuses.setdefault(trial.trial_id, trial.status)
            self.ids[trial.path] = trial.trial_id

    def interrupted(self, num_samples: int) -> bool:
        done = [s for s in self.statuses.values() if s in ("TERMINATED", "ERROR")]
        return len(done) < num_samples
