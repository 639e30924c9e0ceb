"""The sweep's searcher: Optuna's define-by-run space, repeated and with controls (see `arms`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ray.tune.search import Repeater, Searcher
from ray.tune.search.repeater import TRIAL_INDEX

from smsweep.arms import CONFIGURATION, CONTROL
from smsweep.space import Distribution, sample


class DefineByRun:
    """Optuna define-by-run space (picklable: it is saved with the searcher's state)."""

    def __init__(self, space: dict[str, Distribution], fixed: dict[str, Any]) -> None:
        self.space, self.fixed = space, fixed

    def __call__(self, trial: Any) -> None:
        sample(trial, self.space, self.fixed)


class Arms(Searcher):
    """Controls first (each `repeats` times, outside the sampler), then the sampler's
    configurations through a `Repeater`, numbered in the order they are proposed."""

    def __init__(
        self, searcher: Searcher, controls: Mapping[str, Mapping[str, Any]], repeats: int
    ) -> None:
        self.searcher = Repeater(searcher, repeat=repeats)
        self.queue = [
            {**params, CONTROL: name, TRIAL_INDEX: index}
            for name, params in controls.items()
            for index in range(repeats)
        ]
        self.control_trials: set[str] = set()
        self.configurations = 0
        super().__init__(metric=searcher.metric, mode=searcher.mode)

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self.queue:
            self.control_trials.add(trial_id)
            return dict(self.queue.pop(0))
        config = self.searcher.suggest(trial_id)
        if not isinstance(config, dict):
            return config  # None (ask again later) or Searcher.FINISHED
        if config.get(TRIAL_INDEX, 0) == 0:
            self.configurations += 1  # the Repeater starts a new group
        return {**config, CONFIGURATION: self.configurations}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id not in self.control_trials:
            self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        if trial_id not in self.control_trials:
            self.searcher.on_trial_complete(trial_id, result=result, error=error)

    def get_state(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "control_trials": sorted(self.control_trials),
            "configurations": self.configurations,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self.queue = list(state["queue"])
        self.control_trials = set(state["control_trials"])
        self.configurations = int(state["configurations"])

    def save(self, checkpoint_path: str) -> None:
        self.searcher.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.searcher.restore(checkpoint_path)
