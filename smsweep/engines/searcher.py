"""The sweep's searcher: Optuna's define-by-run space, repeated and with controls (see `arms`),
and with search.confirm a confirmation on fresh seeds once the search has ended."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ray.tune.search import Searcher
from ray.tune.search.repeater import TRIAL_INDEX

from smsweep.spec.space import Distribution, sample
from smsweep.verdict.arms import CONFIGURATION, CONFIRM, CONTROL, PHASE, Arm


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
    With `confirm` (top, repeats) and `configurations` (search.num_samples): once every trial of
    the search has ended, the `top` configurations by seed-blocked mean of the first objective
    (`stats.judge`'s ranking) and every control run again on `repeats` fresh repeat seeds,
    tagged `confirm`; the sampler never hears of these runs.

    With `racing` (max_repeats, first_test): once the search's repeats have ended, rounds of one
    more repeat of every configuration still racing and every control (`verdict.race`), until
    the race is decided; these runs, too, stay outside the sampler.

    The grouping, the race and the confirmation are this searcher's state, saved with Tune's
    searcher state: a resumed sweep keeps them."""

    def __init__(
        self,
        searcher: Searcher,
        controls: Mapping[str, Mapping[str, Any]],
        repeats: int,
        *,
        configurations: int | None = None,
        confirm: tuple[int, int] | None = None,
        racing: tuple[int, int] | None = None,
    ) -> None:
        self.searcher, self.repeats = searcher, repeats
        self.controls = {name: dict(params) for name, params in controls.items()}
        self.queue = [
            {**params, CONTROL: name, TRIAL_INDEX: index}
            for name, params in controls.items()
            for index in range(repeats)
        ]
        self.control_trials: set[str] = set()
        self.configurations = 0
        self.wanted, self.confirm, self.racing = configurations, confirm, racing
        # configuration number -> its config, first trial id and {trial id: objectives or None}
        self.groups: dict[int, dict[str, Any]] = {}
        self.group_of: dict[str, int] = {}
        # trial id -> (its config, the first objective or NaN) of every search trial that ended
        self.ended: dict[str, tuple[dict[str, Any], float]] = {}
        self.running: dict[str, dict[str, Any]] = {}  # search trials out, not ended: configs
        self.confirmation: list[dict[str, Any]] | None = None  # queued once the search ended
        self.race: dict[str, Any] = {"queue": [], "racing": None, "dropped": {}, "over": False}
        super().__init__(metric=searcher.metric, mode=searcher.mode)

    @property
    def objectives(self) -> list[str]:
        metric = self.searcher.metric
        return list(metric) if isinstance(metric, (list, tuple)) else [metric]

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self.confirmation is not None:
            return dict(self.confirmation.pop(0)) if self.confirmation else Searcher.FINISHED
        if self.race["queue"]:  # a race's round: selection runs, not the sampler's business
            self.running[trial_id] = self.race["queue"].pop(0)
            return dict(self.running[trial_id])
        if self.queue:
            self.control_trials.add(trial_id)
            self.running[trial_id] = self.queue.pop(0)
            return dict(self.running[trial_id])
        group = self.groups.get(self.configurations)
        if group is None or len(group["ended"]) + len(group["running"]) >= self.repeats:
            searched = self.wanted is not None and self.configurations >= self.wanted
            config = None if searched else self.searcher.suggest(trial_id)
            if searched or config == Searcher.FINISHED:
                return self._after_search(trial_id)
            if not isinstance(config, dict):
                return config  # None: ask again later
            self.configurations += 1
            group = {"config": config, "first": trial_id, "running": [], "ended": {}}
            self.groups[self.configurations] = group
        index = len(group["ended"]) + len(group["running"])
        group["running"].append(trial_id)
        self.group_of[trial_id] = self.configurations
        config = {**group["config"], TRIAL_INDEX: index, CONFIGURATION: self.configurations}
        self.running[trial_id] = config
        return dict(config)

    def _after_search(self, trial_id: str) -> dict[str, Any] | None:
        """The search has handed out its last trial. Once every trial out has ended: a race's
        next round, or the confirmation, or the end."""
        if self.running:
            return None  # Tune asks again once a trial ends
        if self.racing is not None and not self.race["over"]:
            self.race["queue"] = self._race_round()
            if self.race["queue"]:
                return self.suggest(trial_id)
            self.race["over"] = True
        if self.confirm is None:
            return Searcher.FINISHED
        self.confirmation = self._confirmation_runs()
        return self.suggest(trial_id)

    def _race_round(self) -> list[dict[str, Any]]:
        """The next round of the race (`verdict.race`): one more repeat of every configuration
        still racing and of every control; none when the race is decided."""
        from smsweep.verdict.race import race_round  # scipy: only where a race runs

        max_repeats, first_test = self.racing or (0, 0)
        configs, runs = self._ended_arms()
        done = 1 + max((Arm.of(c).repeat for c, _ in self.ended.values()), default=-1)
        racing = self.race["racing"] or sorted(configs)
        found = race_round(
            runs, racing, self.objectives[0], self.first_mode, test=done >= first_test
        )
        self.race["racing"] = found.racing
        self.race["dropped"] |= {key: done for key in found.dropped}
        if len(found.racing) <= 1 or done >= max_repeats:
            return []
        arms = [configs[key] for key in found.racing]
        arms += [{**params, CONTROL: name} for name, params in self.controls.items()]
        return [{**arm, TRIAL_INDEX: done} for arm in arms]

    def _ended_arms(self) -> tuple[dict[str, dict[str, Any]], list[Any]]:
        """Every configuration's config by key (its repeat left out), and the ended search
        trials as `judge` rows."""
        configs: dict[str, dict[str, Any]] = {}
        runs = []
        for config, value in self.ended.values():
            arm = Arm.of(config)
            if arm.control is None:
                configs.setdefault(arm.key, {k: v for k, v in config.items() if k != TRIAL_INDEX})
            runs.append(arm.scored(value))
        return configs, runs

    @property
    def first_mode(self) -> str:
        mode = self.searcher.mode
        return (mode[0] if isinstance(mode, (list, tuple)) else mode) or "max"

    def _confirmation_runs(self) -> list[dict[str, Any]]:
        """The top configurations and every control on the repeat seeds after the search's,
        seed by seed (a confirmation cut short stays paired)."""
        from smsweep.verdict.stats import judge  # scipy: only where a confirmation is chosen

        top, repeats = self.confirm or (0, 0)
        configs, runs = self._ended_arms()
        ranked = judge(runs, self.objectives[0], self.first_mode).configurations
        chosen = [configs[arm.key] for arm in ranked if arm.values][:top]
        arms = chosen + [{**params, CONTROL: name} for name, params in self.controls.items()]
        fresh = 1 + max((Arm.of(c).repeat for c, _ in self.ended.values()), default=-1)
        return [
            {**arm, TRIAL_INDEX: fresh + index, PHASE: CONFIRM}
            for index in range(repeats)
            for arm in arms
        ]

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        if trial_id not in self.running:
            return  # a confirmation run: the sampler never sees it
        config = self.running.pop(trial_id)
        outcome = {} if error or not result else result
        self.ended[trial_id] = (config, _number(outcome.get(self.objectives[0])))
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
            "ended": self.ended,
            "running": self.running,
            "confirmation": self.confirmation,
            "race": self.race,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self.queue = list(state["queue"])
        self.control_trials = set(state["control_trials"])
        self.configurations = int(state["configurations"])
        self.groups = {int(number): group for number, group in state.get("groups", {}).items()}
        self.group_of = dict(state.get("group_of", {}))
        self.ended = {key: (dict(c), float(v)) for key, (c, v) in state.get("ended", {}).items()}
        self.running = dict(state.get("running", {}))
        self.confirmation = state.get("confirmation")
        self.race = dict(state.get("race") or self.race)

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
