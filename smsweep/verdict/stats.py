"""Seeds, intervals and paired differences: how a sweep's numbers become statements.

A study runs every arm with the same seeds (the same data split, head initialisation and
fine-tuning order for every arm of a seed), so arms are compared seed by seed: the paired
difference removes what the seeds share. Intervals are Student-t intervals over seeds; a single
comparison's are 95 %, the verdict's are widened to its family's level (`family.decide`). The
minimum detectable effect (MDE) of a comparison is the smallest true difference its paired
t-test finds with 80 % power (`power.minimum_detectable_effect`): it falls as repeats are added.
Pure Python, numpy and SciPy: no torch, no Ray, no MLflow.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.stats import t as student_t

from smsweep.verdict import power
from smsweep.verdict.anova import anova_sentence
from smsweep.verdict.family import Tests, decide
from smsweep.verdict.pareto import ParetoPoint, pareto  # noqa: F401  (re-exported: the sweep's front)

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """A mean with its two-sided interval over n values (low = high = mean when n < 2)."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def excludes_zero(self) -> bool:
        return self.n >= 2 and (self.low > 0 or self.high < 0)

    def show_points(self) -> str:
        """A difference in points: `+3.9 [-10.9, +18.7]`, `+3.9` (n=1) or `–` (n=0)."""
        if self.n == 0:
            return "–"
        shown = f"{100 * self.mean:+.1f}"
        return shown if self.n < 2 else f"{shown} [{100 * self.low:+.1f}, {100 * self.high:+.1f}]"

    def show(self, scale: float = 1.0, digits: int = 3) -> str:
        """`0.412 [0.398, 0.426]` (or with `scale` 100: points)."""
        mean, low, high = (scale * value for value in (self.mean, self.low, self.high))
        if self.n < 2:
            return f"{mean:.{digits}f} (n={self.n})"
        return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def mean_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """The mean of `values` with its Student-t interval (NaNs dropped)."""
    finite = [float(v) for v in values if not math.isnan(float(v))]
    if not finite:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = statistics.fmean(finite)
    if len(finite) < 2:
        return Interval(mean, mean, mean, len(finite))
    error = statistics.stdev(finite) / math.sqrt(len(finite))
    half = float(student_t.ppf(0.5 + confidence / 2, len(finite) - 1)) * error
    return Interval(mean, mean - half, mean + half, len(finite))


def paired_differences(arm: Mapping[int, float], control: Mapping[int, float]) -> list[float]:
    """arm - control for every seed both have (seed -> value), in seed order."""
    return [arm[seed] - control[seed] for seed in sorted(set(arm) & set(control))]


def minimum_detectable_effect(differences: Sequence[float], alpha: float = power.ALPHA) -> float:
    """The smallest true difference a paired t-test at `alpha` over these differences' count
    finds with 80 % power, at their standard deviation (NaN with fewer than 2)."""
    if len(differences) < 2:
        return math.nan
    return power.minimum_detectable_effect(statistics.stdev(differences), len(differences), alpha)


@dataclass(frozen=True)
class Comparison:
    """An arm against a control, seed by seed."""

    arm: str
    control: str
    difference: Interval  # drawn at 1 - level: it excludes zero exactly when declared
    mde: float  # the smallest effect found with 80 % power at `level`
    level: float = power.ALPHA  # the alpha it is judged at, after the family's corrections
    p_value: float = math.nan  # the paired t-test's, before any correction

    def verdict(self, scale: float = 100.0, unit: str = "points") -> str:
        """One plain sentence: a declared difference, or no evidence of one at this power."""
        d = self.difference
        if d.n < 2:
            return f"{self.arm} vs {self.control}: {d.n} paired seed(s), no interval."
        shown = f"{scale * d.mean:+.1f} {unit} [{scale * d.low:+.1f}, {scale * d.high:+.1f}]"
        if not math.isclose(self.level, power.ALPHA):
            shown += f" ({_percent(1 - self.level)} interval)"
        if d.excludes_zero():
            side = "above" if d.mean > 0 else "below"
            return f"{self.arm} is {side} {self.control}: {shown}, n={d.n}."
        # A null result says what this protocol could have seen, not that there is nothing.
        return (
            f"{self.arm} vs {self.control}: no evidence of a difference at this power "
            f"(MDE {scale * self.mde:.1f} {unit}): {shown}, n={d.n}."
        )


def _percent(confidence: float) -> str:
    """99.75 % -> `99.75%`; as many digits as tell it apart from 100 %."""
    for digits in range(1, 6):
        shown = f"{100 * confidence:.{digits}f}"
        if float(shown) < 100:
            return shown.rstrip("0").rstrip(".") + "%"
    return f"{100 * confidence:.6f}%"


def compare(
    name: str, arm: Mapping[int, float], control_name: str, control: Mapping[int, float]
) -> Comparison:
    """`name` against `control_name` over the seeds both have: a 95 % interval, uncorrected."""
    differences = paired_differences(arm, control)
    return Comparison(
        arm=name,
        control=control_name,
        difference=mean_interval(differences),
        mde=minimum_detectable_effect(differences),
        p_value=_p_value(differences),
    )


def _p_value(differences: Sequence[float]) -> float:
    """The two-sided one-sample t-test of the differences against zero (NaN with fewer than 2;
    a constant difference: 0, or 1 when it is zero)."""
    n = len(differences)
    if n < 2:
        return math.nan
    mean, sd = statistics.fmean(differences), statistics.stdev(differences)
    if sd == 0:
        return 1.0 if mean == 0 else 0.0
    return float(2 * student_t.sf(abs(mean) / (sd / math.sqrt(n)), n - 1))


# --- a sweep's arms ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArmScores:
    """One arm of a sweep (a configuration or a control): its score per repeat."""

    key: str  # config-3, control:none
    label: str  # what it runs, e.g. `strategy=selective ratio=0.6`
    control: str | None
    values: Mapping[int, float]  # repeat -> score (finite scores only)
    runs: int  # its trials, with or without a score
    blocked: float = math.nan  # its mean under the additive arm + seed model (`family`)

    @property
    def interval(self) -> Interval:
        return mean_interval(list(self.values.values()))

    @property
    def name(self) -> str:
        if self.control is not None:
            return f"control {self.control}"
        return self.key if self.label in ("", self.key) else f"{self.key} ({self.label})"


@dataclass(frozen=True)
class Verdict:
    """A sweep's arms with intervals, paired differences and plain sentences."""

    metric: str
    mode: str
    configurations: list[ArmScores]  # best blocked mean first; arms without a score last
    controls: list[ArmScores]
    vs_controls: dict[tuple[str, str], Comparison]  # every configuration, 95 %, uncorrected
    best_vs_runner_up: Comparison | None  # family-corrected
    noise: str | None  # whether the configurations differ by more than seed noise
    best_vs_controls: dict[str, Comparison] = field(default_factory=dict)  # family-corrected
    picked_from: int = 0  # configurations the best was picked from (1: chosen beforehand)
    alpha: float = power.ALPHA  # the family-wise error rate
    residual_sd: float = math.nan  # one score's sd around the arm + seed fit
    picked: str | None = None  # the configuration chosen before these repeats (`judge`)

    @property
    def best(self) -> ArmScores | None:
        found = self.configurations[:1]
        return found[0] if found and found[0].values else None

    @property
    def repeats(self) -> int:
        return max((len(arm.values) for arm in self.configurations + self.controls), default=0)

    @property
    def difference_sd(self) -> float:
        """The sd of a paired difference of two arms, pooled over the sweep (sqrt(2) x the
        residual sd): what the planner plans with."""
        return math.sqrt(2) * self.residual_sd

    @property
    def family(self) -> str:
        """`the best of 20 configurations against the runner-up and 1 control`."""
        count = len(self.controls)
        against = ["the runner-up"] if self.best_vs_runner_up is not None else []
        against += [f"{count} control{'s' * (count != 1)}"] if count else []
        if self.picked is not None:
            picked = "a configuration chosen before these repeats"
        elif self.picked_from == 1:
            picked = "the one configuration"
        else:
            plural = "s" * (self.picked_from != 1)
            picked = f"the best of {self.picked_from} configuration{plural}"
        return f"{picked} against {' and '.join(against)}" if against else picked

    def sentences(self) -> list[str]:
        best = self.best
        if best is None:
            return ["No configuration has a score yet."]
        lines = []
        if self.repeats < 2:
            lines.append(
                "Every arm ran once: there is no interval, and a difference between single runs "
                "cannot be told from seed noise; set search.repeats: 3 (or more) for intervals "
                "and paired differences."
            )
        if self.repeats == 2:
            lines.append(
                "With 2 repeats an interval has 1 degree of freedom: it is wide by construction "
                "and the MDE large; 3 or more repeats give usable intervals."
            )
        made = [self.best_vs_runner_up] if self.best_vs_runner_up is not None else []
        made += list(self.best_vs_controls.values())
        if self.repeats >= 2 and made:
            lines.append(self._family_sentence(len(made)))
        if self.best_vs_runner_up is not None and self.repeats >= 2:
            lines.append("Best vs runner-up: " + self.best_vs_runner_up.verdict())
        for name, found in self.best_vs_controls.items():
            if self.repeats >= 2:
                lines.append(f"Best vs control {name}: " + found.verdict())
        if self.repeats >= 2 and self.picked_from > 1 and made:
            lines.append(
                "The best's differences are measured on the repeats it was picked on, so they "
                "lean upwards (the winner's curse): run it on fresh seeds for an unbiased size."
            )
        return lines

    def _family_sentence(self, count: int) -> str:
        plural = "s" * (count != 1)
        how = [f"Holm over the {count}"] if count > 1 else []
        if self.picked_from > 1:
            pairs = self.picked_from * (self.picked_from - 1) // 2
            runner_up = self.best_vs_runner_up is not None and pairs > 1
            how.append(
                f"each corrected for picking the best out of {self.picked_from}"
                + f", the runner-up as one of {pairs} pairs" * runner_up
            )
        corrected = f"; {', '.join(how)}" if how else ""
        return (
            f"The family judged: {self.family} ({count} comparison{plural}{corrected}): where "
            f"no arm truly differs, a difference is declared at most {100 * self.alpha:.0f}% "
            "of the time."
        )

    def mlflow_metrics(self) -> dict[str, float]:
        """The verdict's numbers for the sweep's parent run."""
        best = self.best
        if best is None:
            return {}
        numbers = _interval_metrics("best_configuration", best.interval)
        if self.best_vs_runner_up is not None:
            numbers |= _interval_metrics("best_vs_runner_up", self.best_vs_runner_up.difference)
        for name, found in self.best_vs_controls.items():
            label = f"best_vs_control/{name}"
            numbers |= _interval_metrics(label, found.difference)
            numbers[f"{label}/mde"] = found.mde
            numbers[f"{label}/level"] = found.level
        return {k: v for k, v in numbers.items() if not math.isnan(v)}


def _interval_metrics(name: str, interval: Interval) -> dict[str, float]:
    return {
        name: interval.mean,
        f"{name}/low": interval.low,
        f"{name}/high": interval.high,
        f"{name}/n": float(interval.n),
    }


@dataclass(frozen=True)
class ArmRun:
    """One trial's row for `judge`: its arm, its repeat and its score (None: no score)."""

    key: str
    label: str
    control: str | None
    repeat: int
    value: float | None


def judge(
    runs: Sequence[ArmRun],
    metric: str,
    mode: str = "max",
    alpha: float = power.ALPHA,
    picked: str | None = None,
) -> Verdict:
    """Group trials into arms, rank the configurations on seed-blocked means, and judge the best
    against the runner-up and every control, repeat by repeat, as one family at `alpha`.

    `picked`: the key of a configuration chosen before these runs' seeds were drawn (a
    confirmation on fresh seeds): it is judged as the best without a correction for picking."""
    grouped: dict[str, list[ArmRun]] = {}
    for run in runs:
        grouped.setdefault(run.key, []).append(run)
    arms = []
    for key, members in grouped.items():
        values = {
            run.repeat: float(run.value)
            for run in members
            if run.value is not None and math.isfinite(run.value)
        }
        first = members[0]
        arms.append(ArmScores(key, first.label, first.control, values, len(members)))
    configurations = sorted((a for a in arms if a.control is None), key=lambda a: a.key)
    controls = sorted((a for a in arms if a.control is not None), key=lambda a: a.key)
    if picked is not None and picked not in {arm.key for arm in configurations}:
        raise ValueError(
            f"picked={picked!r} is no configuration of these runs; name one of "
            f"{', '.join(arm.key for arm in configurations) or '(none)'}"
        )
    ordered = configurations + controls
    repeats = sorted({repeat for arm in ordered for repeat in arm.values})
    table = np.array([[[arm.values.get(r, np.nan) for r in repeats] for arm in ordered]], float)
    table = table.reshape(1, len(ordered), len(repeats))
    position = [arm.key for arm in configurations].index(picked) if picked else None
    found = decide(table, len(configurations), -1.0 if mode == "min" else 1.0, alpha, position)
    arms_blocked = [
        replace(arm, blocked=float(found.blocked[0, i])) for i, arm in enumerate(ordered)
    ]
    ranked = [arms_blocked[i] for i in found.ranking[0]]
    if position is not None:  # the chosen arm leads, whatever its mean here
        ranked = [arms_blocked[position]] + [a for a in ranked if a.key != picked]
    controls = arms_blocked[len(configurations) :]
    vs_controls = {
        (arm.key, control.control or ""): compare(
            arm.name, arm.values, control.name, control.values
        )
        for arm in ranked
        for control in controls
    }
    scored = [arm for arm in ranked if arm.values]
    best = scored[0] if scored else None
    runner_up = None
    if found.vs_runner_up is not None and len(scored) >= 2:
        runner_up = _judged(
            found.vs_runner_up, f"the best, {best.name},", f"the runner-up, {scored[1].name}"
        )
    best_vs_controls = {}
    if best is not None:
        for control, tests in zip(controls, found.vs_controls, strict=True):
            best_vs_controls[control.control or ""] = _judged(tests, best.name, control.name)
    return Verdict(
        metric,
        mode,
        ranked,
        controls,
        vs_controls,
        runner_up,
        anova_sentence([arm.values for arm in scored]),
        best_vs_controls,
        1 if picked else len(scored),
        alpha,
        float(found.residual_sd[0]),
        picked,
    )


def _judged(tests: Tests, arm: str, control: str) -> Comparison:
    """Sweep 0 of `tests` as a Comparison, its interval at the level the family assigned it."""
    mean, half, n = float(tests.mean[0]), float(tests.half_width[0]), int(tests.n[0])
    if n < 2:
        half = 0.0
    interval = Interval(mean, mean - half, mean + half, n)
    level, p = float(tests.level[0]), float(tests.p[0])
    return Comparison(arm, control, interval, float(tests.mde[0]), level, p)
