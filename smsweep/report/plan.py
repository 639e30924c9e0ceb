"""The power planner: how many repeats per arm a sweep needs to find a target effect, and what
they cost, from the sweep's own seed noise and trial times.

The noise is the sd of a paired difference of two arms, pooled over the whole sweep:
sqrt(2) x the residual sd of the additive arm + seed fit (`family.blocked_means`). The plan is
for the verdict's hardest comparison of the best, at the strictest level Holm can hold it to:
alpha / (K x m) against a control (alpha / (K (K - 1) / 2 x m) against the runner-up when the
sweep has no control), with K the configurations the best is picked from and m the verdict's
comparisons. The repeats are the fewest at which the paired t-test at that level has 80 % power
(`power.repeats_for`); the cost is (configurations + controls) x repeats trials at the sweep's
mean seconds and device-seconds per trial.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from smsweep.errors import SpecError
from smsweep.verdict import power
from smsweep.verdict.stats import Verdict

REPORT_EFFECTS = (0.01, 0.02, 0.05)  # the effects the report plans for: 1, 2 and 5 points


@dataclass(frozen=True)
class Plan:
    """The repeats per arm for one target effect, and their cost."""

    effect: float  # in the metric's units (0.02: 2 points)
    difference_sd: float  # a paired difference's sd, pooled over the sweep
    alpha: float  # the level the comparison is planned at
    against: str  # `a control` or `the runner-up`
    repeats: int  # per arm; 0: more than power.MOST_REPEATS
    arms: int  # configurations + controls
    trial_seconds: float  # per trial, the sweep's mean (NaN: unknown)
    device_seconds: float  # per trial, the sweep's mean (NaN: unknown)

    @property
    def trials(self) -> int:
        return self.arms * self.repeats

    def line(self, scale: float = 100.0, unit: str = "points") -> str:
        """`2.0 points: 6 repeats per arm, 18 trials, 1.2 h of trial time, 1.2 device-hours`."""
        head = f"{scale * self.effect:.1f} {unit}: "
        if self.repeats == 0:
            return head + f"more than {power.MOST_REPEATS} repeats per arm (out of reach)"
        parts = [f"{self.repeats} repeats per arm", f"{self.trials} trials"]
        if math.isfinite(self.trial_seconds):
            parts.append(f"{_hours(self.trials * self.trial_seconds)} of trial time")
        if math.isfinite(self.device_seconds):
            parts.append(f"{_hours(self.trials * self.device_seconds)} of device time")
        return head + ", ".join(parts)


def plan(
    verdict: Verdict,
    effect: float,
    trial_seconds: Sequence[float] = (),
    device_seconds: Sequence[float] = (),
) -> Plan:
    """What finding `effect` (metric units) with 80 % power costs this sweep; SpecError when its
    noise is not known (fewer than 2 repeats, or nothing to compare)."""
    sd = verdict.difference_sd
    if not math.isfinite(sd) or sd <= 0:
        raise SpecError(
            "the sweep's seed noise is not known: planning needs 2 or more scored repeats of "
            "at least 2 arms (set search.repeats: 3 and run the sweep, then plan)"
        )
    if not effect > 0:
        raise SpecError(f"--effect must be positive (got {effect}); give it in points, e.g. 2")
    picked = max(verdict.picked_from, 1)
    runner_up = picked >= 2 and verdict.best_vs_runner_up is not None
    comparisons = len(verdict.controls) + runner_up
    selection = picked if verdict.controls else max(picked * (picked - 1) // 2, 1)
    alpha = verdict.alpha / (selection * max(comparisons, 1))
    arms = len([a for a in verdict.configurations if a.values]) + len(verdict.controls)
    return Plan(
        effect=effect,
        difference_sd=sd,
        alpha=alpha,
        against="a control" if verdict.controls else "the runner-up",
        repeats=power.repeats_for(effect, sd, alpha),
        arms=arms,
        trial_seconds=_mean(trial_seconds),
        device_seconds=_mean(device_seconds),
    )


def plan_sentence(plans: Sequence[Plan], scale: float = 100.0, unit: str = "points") -> str:
    """The report's line: the repeats (and cost) for each planned effect."""
    first = plans[0]
    return (
        f"Planning (80% power for the best against {first.against} at level "
        f"{first.alpha:.2g}, this sweep's paired-difference sd {scale * first.difference_sd:.1f} "
        f"{unit}): " + "; ".join(p.line(scale, unit) for p in plans) + "."
    )


def sweep_plans(sweep: Any, effects: Sequence[float]) -> list[Plan]:
    """Plans for a loaded sweep (`report.load.Sweep`) from its verdict and its trials' seconds."""
    if sweep.verdict is None:
        raise SpecError(f"{sweep.name} has no scored trials yet: run it, then plan")
    scored = [t for t in sweep.trials if t.run_id is not None]
    seconds = [t.metrics.get("cost/seconds", math.nan) for t in scored]
    device = [t.metrics.get("cost/device_seconds", math.nan) for t in scored]
    return [plan(sweep.verdict, effect, seconds, device) for effect in effects]


def plan_command(path: str, effects: Sequence[float]) -> str:
    """`smsweep plan DIR --effect 2`: the sweep's noise and, per effect, the repeats and cost."""
    from smsweep.report.load import load_sweep

    sweep = load_sweep(path, {"sections": []})  # no metric histories: only the verdict
    plans = sweep_plans(sweep, effects)
    first = plans[0]
    head = (
        f"{sweep.name}: a paired difference of two arms has sd {100 * first.difference_sd:.2f} "
        f"points (pooled over {sweep.verdict.repeats} repeats); 80% power for the best against "
        f"{first.against} at level {first.alpha:.2g} ({sweep.verdict.family}, Holm) needs:"
    )
    return "\n".join([head, *("  " + p.line() for p in plans)])


def _mean(values: Sequence[float]) -> float:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return statistics.fmean(finite) if finite else math.nan


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"
