"""A sweep's arms: the sampler's configurations and the controls, each run `search.repeats` times.

Tune's `Repeater` runs every configuration Optuna proposes R times (its config carries the repeat
index, `TRIAL_INDEX`) and tells Optuna the mean of the R results: Optuna sees one value per
configuration. `searcher.Arms` wraps it: it first hands out the controls (R trials each, never
shown to Optuna), then numbers the configurations, so a trial knows which configuration it
repeats even when the sampler proposes the same values twice. Its state is saved with Tune's
searcher state, so a resumed sweep keeps the grouping. This module holds what a trial, the
console and the report need to know of an arm, and imports no Ray.

A trial's config: the searched dotted keys plus the meta keys below, which `Arm.of` splits off.
Repeat r of every arm uses the same repeat seed, so arms are compared repeat by repeat
(`stats.paired_differences`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from smsweep.verdict.stats import ArmRun

TRIAL_INDEX = "__trial_index__"  # ray.tune.search.repeater.TRIAL_INDEX: the repeat index
CONTROL = "smsweep.control"  # a control trial's control name
CONFIGURATION = "smsweep.configuration"  # a configuration's number, 1 first (tag and config key)
REPEAT = "smsweep.repeat"  # the MLflow tag with the repeat index
PHASE = "smsweep.phase"  # search, or confirm: a run on fresh seeds after the search (tag, key)
SEARCH, CONFIRM = "search", "confirm"
META_KEYS = (TRIAL_INDEX, CONTROL, CONFIGURATION, PHASE)
NAME_LIMIT = 250  # characters of a run name (MLflow's SQL stores hold 250)


@dataclass(frozen=True)
class Arm:
    """What one trial runs: the searched (or control's) params, and which arm and repeat."""

    params: dict[str, Any]
    repeat: int = 0
    control: str | None = None
    configuration: int | None = None
    phase: str = SEARCH  # confirm: run again on a fresh seed once the search had chosen

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> Arm:
        number = config.get(CONFIGURATION)
        return cls(
            params={k: v for k, v in config.items() if k not in META_KEYS},
            repeat=int(config.get(TRIAL_INDEX) or 0),
            control=config.get(CONTROL),
            configuration=None if number is None else int(number),
            phase=str(config.get(PHASE) or SEARCH),
        )

    @property
    def confirming(self) -> bool:
        return self.phase == CONFIRM

    @property
    def key(self) -> str:
        """The arm's name in tags and tables: `control:none`, `config-3`, or (a sweep without
        numbering) a digest of the params."""
        if self.control is not None:
            return f"control:{self.control}"
        if self.configuration is not None:
            return f"config-{self.configuration}"
        text = json.dumps(self.params, sort_keys=True, default=str)
        return "params-" + hashlib.sha1(text.encode()).hexdigest()[:8]

    @property
    def label(self) -> str:
        """What the arm runs, compactly: `strategy=selective ratio=0.6`."""
        return short(self.params) or "the spec as written"

    def tags(self) -> dict[str, str]:
        return {CONFIGURATION: self.key, REPEAT: str(self.repeat), PHASE: self.phase} | (
            {CONTROL: self.control} if self.control is not None else {}
        )

    def scored(self, value: float | None) -> ArmRun:
        """This trial's row for `stats.judge`."""
        from smsweep.verdict.stats import ArmRun  # scipy: not for every spec validation

        return ArmRun(self.key, self.label, self.control, self.repeat, value)

    def describe(self, repeats: int, between: str = ", ") -> str:
        """`selective ratio=0.6, repeat 2/3`, `control none, repeat 1/3`, a race's round after
        the search's repeats `selective ratio=0.6, repeat 4 (racing)`, and a run on a fresh
        seed after the search `config-2 (selective ratio=0.6), confirmation (repeat 5)` (for
        console lines; `between` parts the arm from its repeat)."""
        what = f"control {self.control}" if self.control is not None else self.label
        if self.confirming:
            if self.control is None and self.configuration is not None:
                what = f"{self.key} ({what})"
            return f"{what}{between}confirmation (repeat {self.repeat + 1})"
        if self.repeat >= repeats:  # a race's round after the search's repeats
            return f"{what}{between}repeat {self.repeat + 1} (racing)"
        return what if repeats <= 1 else f"{what}{between}repeat {self.repeat + 1}/{repeats}"

    def run_name(self, repeats: int) -> str:
        """The trial's MLflow run name, the console's words with the arm's number:
        `config-2 strategy=selective ratio=0.55 · repeat 2/3`, `control none · repeat 1/3`,
        `config-2 (strategy=selective ratio=0.55) · confirmation (repeat 4)`. It depends on the
        trial's config only, so a resumed trial's run keeps it."""
        name = self.describe(repeats, between=" · ")
        if self.control is None and self.configuration is not None and not self.confirming:
            name = f"{self.key} {name}"
        if len(name) <= NAME_LIMIT:
            return name
        what, between, repeat = name.rpartition(" · ") if " · " in name else (name, "", "")
        return what[: NAME_LIMIT - len(between + repeat) - 1] + "…" + between + repeat


def short(params: Mapping[str, Any]) -> str:
    """`masking.ratio=0.5234` -> `ratio=0.523`: the searched values, compactly (also the
    console's)."""
    parts = []
    for key, value in params.items():
        shown = f"{value:.3g}" if isinstance(value, float) else str(value)
        parts.append(f"{key.rsplit('.', 1)[-1]}={shown}")
    return " ".join(parts)


def trials_line(search: Any) -> str:
    """`2 configurations x 3 repeats + 1 control x 3 = 9 trials`, or `4 trials` (`search`: the
    spec's search section)."""
    total = search.trials
    if search.repeats == 1 and not search.controls:
        return f"{total} trials"
    line = f"{search.num_samples} configuration{'s' * (search.num_samples != 1)}"
    if search.repeats > 1:
        line += f" x {search.repeats} repeats"
    if search.controls:
        count = len(search.controls)
        line += f" + {count} control{'s' * (count != 1)}"
        if search.repeats > 1:
            line += f" x {search.repeats}"
    if search.racing is not None:
        line += f", raced up to {search.racing.max_repeats} repeats"
    if search.confirm is not None:
        top = min(search.confirm.top, search.num_samples)
        best = "the best" if top == 1 else f"the best {top}"
        count = len(search.controls)
        controls = {0: "", 1: " and the control"}.get(count, f" and the {count} controls")
        line += f", then {best}{controls} again x {search.confirm.repeats} fresh seeds"
    return f"{line} = {'at most ' * (search.racing is not None)}{total} trials"


def score_label(metric: str, score: str) -> str:
    """`miou (last validation)`: what a ranking says it ranks by."""
    if score == "tail":
        return f"{metric} (mean of the last validations)"
    return f"{metric} ({score} validation)"


# Tune's and MLflow's statuses in the words a user reads.
STATUS_WORDS = {
    "TERMINATED": "finished",
    "FINISHED": "finished",
    "STOPPED_EARLY": "stopped early",
    "ERROR": "failed",
    "FAILED": "failed",
    "KILLED": "stopped",
    "RUNNING": "running",
    "PENDING": "pending",
    "PAUSED": "paused",
}


def status_word(status: str) -> str:
    return STATUS_WORDS.get(status, status.lower())
