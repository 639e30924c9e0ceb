"""The sweep's searcher: Optuna's define-by-run space, repeated and with controls (see `arms`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ray.tune.search import Searcher
from ray.tune.search.repeater import TRIAL_INDEX

from smsweep.spec.space import Distribution, sample
from smsweep.verdict.arms import CONFIGURATION, CONTROL


class DefineByRun:
    """Optuna define-by-run space (picklable: it is saved with the searcher's state)."""

    def __init__(self, space: dict[str, Distribution], fixed: dict[str, Any]) -> None:
        self.space, self.fixed = space, fixed

    def __call__(self, trial: Any) -> None:
        sample(trial, self.space, self.fixed)


class Arms(Searcher):
    """Controls first (each `repeats` times, outside the sampler), then the sampler's
    configurations, each run `repeats` times and numbered in the order they are proposed.

    Like Tune's `Repeater`, the sampler sees one trial per configuration and, once all its
    repeats have ended, the mean of each of its objectives over them (NaN for a repeat that
    failed or did not report it); unlike it, every objective of a multi-objective sampler.
    The grouping is this searcher's state, saved with Tune's searcher state."""

    def __init__(
        self, searcher: Searcher, controls: Mapping[str, Mapping[str, Any]], repeats: int
    ) -> None:
        self.searcher, self.repeats = searcher, repeats
        self.queue = [
            {**params, CONTROL: name, TRIAL_INDEX: index}
            for name, params in controls.items()
            for index in range(repeats)
        ]
        self.control_trials: set[str] = set()
        self.configurations = 0
        # configuration number -> its config, first trial id and {trial id: objectives or None}
        self.groups: dict[int, dict[str, Any]] = {}
        self.group_of: dict[str, int] = {}
        super().__init__(metric=searcher.metric, mode=searcher.mode)

    @property
    def objectives(self) -> list[str]:
        metric = self.searcher.metric
        return list(metric) if isinstance(metric, (list, tuple)) else [metric]

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self.queue:
            self.control_trials.add(trial_id)
            return dict(self.queue.pop(0))
        group = self.groups.get(self.configurations)
        if group is None or len(group["ended"]) + len(group["running"]) >= self.repeats:
            config = self.searcher.suggest(trial_id)
            if not isinstance(config, dict):
                return config  # None (ask again later) or Searcher.FINISHED
            self.configurations += 1
            group = {"config": config, "first": trial_id, "running": [], "ended": {}}
            self.groups[self.configurations] = group
        index = len(group["ended"]) + len(group["running"])
        group["running"].append(trial_id)
        self.group_of[trial_id] = self.configurations
        return {**group["config"], TRIAL_INDEX: index, CONFIGURATION: self.configurations}

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        number = self.group_of.get(trial_id)
        if number is None:
            return  # a control: the sampler never sees it
        group = self.groups[number]
        if trial_id in group["running"]:
            group["running"].remove(trial_id)
        result = {} if error or not result else result
        group["ended"][trial_id] = [_number(result.get(metric)) for metric in self.objectives]
        if len(group["ended"]) < self.repeats:
            return
        means = [_mean(column) for column in zip(*group["ended"].values(), strict=True)]
        failed = any(math.isnan(mean) for mean in means)  # no repeat reported an objective
        self.searcher.on_trial_complete(
            group["first"],
            result=None if failed else dict(zip(self.objectives, means, strict=True)),
            error=failed,
        )

    def get_state(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "control_trials": sorted(self.control_trials),
            "configurations": self.configurations,
            "groups": {str(number): group for number, group in self.groups.items()},
            "group_of": self.group_of,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self.queue = list(state["queue"])
        self.control_trials = set(state["control_trials"])
        self.configurations = int(state["configurations"])
        self.groups = {int(number): group for number, group in state.get("groups", {}).items()}
        self.group_of = dict(state.get("group_of", {}))

    def save(self, checkpoint_path: str) -> None:
        self.searcher.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.searcher.restore(checkpoint_path)


def _mean(values: tuple[float, ...]) -> float:
    """The mean of the finite values; NaN when there are none."""
    finite = [value for value in values if math.isfinite(value)]
    return sum(finite) / len(finite) if finite else math.nan


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")
