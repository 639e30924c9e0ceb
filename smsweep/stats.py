"""Seeds, intervals and paired differences: how a sweep's numbers become statements.

A study runs every arm with the same seeds (the same data split, head initialisation and
fine-tuning order for every arm of a seed), so arms are compared seed by seed: the paired
difference removes what the seeds share. Intervals are Student-t 95 % intervals over seeds. The
minimum detectable effect (MDE) of a comparison is 2 x the standard deviation of its paired
differences: an effect smaller than that is not told apart from seed noise by a protocol with a
handful of seeds. Pure Python and SciPy: no torch, no Ray, no MLflow.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scipy.stats import t as student_t

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


def minimum_detectable_effect(differences: Sequence[float]) -> float:
    """2 x the standard deviation of the paired differences (NaN with fewer than 2)."""
    return 2 * statistics.stdev(differences) if len(differences) >= 2 else math.nan


@dataclass(frozen=True)
class Comparison:
    """An arm against a control, seed by seed."""

    arm: str
    control: str
    difference: Interval
    mde: float

    def verdict(self, scale: float = 100.0, unit: str = "points") -> str:
        """One plain sentence."""
        d = self.difference
        if d.n < 2:
            return f"{self.arm} vs {self.control}: {d.n} paired seed(s), no interval."
        shown = f"{scale * d.mean:+.1f} {unit} [{scale * d.low:+.1f}, {scale * d.high:+.1f}]"
        if d.excludes_zero():
            side = "above" if d.mean > 0 else "below"
            return f"{self.arm} is {side} {self.control}: {shown}, n={d.n}."
        return (
            f"{self.arm} is not distinguishable from {self.control}: {shown}, n={d.n} "
            f"(this protocol's MDE: {scale * self.mde:.1f} {unit})."
        )


def compare(
    name: str, arm: Mapping[int, float], control_name: str, control: Mapping[int, float]
) -> Comparison:
    differences = paired_differences(arm, control)
    return Comparison(
        arm=name,
        control=control_name,
        difference=mean_interval(differences),
        mde=minimum_detectable_effect(differences),
    )


# --- a sweep's arms ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArmScores:
    """One arm of a sweep (a configuration or a control): its score per repeat."""

    key: str  # config-3, control:none
    label: str  # what it runs, e.g. `strategy=selective ratio=0.6`
    control: str | None
    values: Mapping[int, float]  # repeat -> score (finite scores only)
    runs: int  # its trials, with or without a score

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
    configurations: list[ArmScores]  # best mean first; arms without a score last
    controls: list[ArmScores]
    vs_controls: dict[tuple[str, str], Comparison]  # (configuration key, control) -> comparison
    best_vs_runner_up: Comparison | None
    noise: str | None  # whether the configurations differ by more than seed noise

    @property
    def best(self) -> ArmScores | None:
        found = self.configurations[:1]
        return found[0] if found and found[0].values else None

    @property
    def repeats(self) -> int:
        return max((len(arm.values) for arm in self.configurations + self.controls), default=0)

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
                "and the MDE is a rough guide; 3 or more repeats give usable intervals."
            )
        if self.best_vs_runner_up is not None and self.repeats >= 2:
            lines.append("Best vs runner-up: " + self.best_vs_runner_up.verdict())
        for control in self.controls:
            found = self.vs_controls.get((best.key, control.control or ""))
            if found is not None and self.repeats >= 2:
                lines.append(f"Best vs control {control.control}: " + found.verdict())
        return lines

    def mlflow_metrics(self) -> dict[str, float]:
        """The verdict's numbers for the sweep's parent run."""
        best = self.best
        if best is None:
            return {}
        numbers = _interval_metrics("best_configuration", best.interval)
        if self.best_vs_runner_up is not None:
            numbers |= _interval_metrics("best_vs_runner_up", self.best_vs_runner_up.difference)
        for control in self.controls:
            found = self.vs_controls.get((best.key, control.control or ""))
            if found is not None:
                name = f"best_vs_control/{control.control}"
                numbers |= _interval_metrics(name, found.difference)
                numbers[f"{name}/mde"] = found.mde
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


def judge(runs: Sequence[ArmRun], metric: str, mode: str = "max") -> Verdict:
    """Group trials into arms, rank the configurations by mean, and compare the best with the
    runner-up and with every control, repeat by repeat."""
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
    sign = -1.0 if mode == "max" else 1.0

    def rank(arm: ArmScores) -> tuple[bool, float, str]:
        scored = bool(arm.values)
        return (not scored, sign * arm.interval.mean if scored else 0.0, arm.key)

    configurations = sorted((a for a in arms if a.control is None), key=rank)
    controls = sorted((a for a in arms if a.control is not None), key=lambda a: a.key)
    vs_controls = {
        (arm.key, control.control or ""): compare(
            arm.name, arm.values, control.name, control.values
        )
        for arm in configurations
        for control in controls
    }
    scored = [arm for arm in configurations if arm.values]
    runner_up = None
    if len(scored) >= 2:
        best, second = scored[0], scored[1]
        runner_up = compare(
            f"the best, {best.name},", best.values, f"the runner-up, {second.name}", second.values
        )
    return Verdict(metric, mode, configurations, controls, vs_controls, runner_up, _noise(scored))


def _noise(configurations: Sequence[ArmScores]) -> str | None:
    """A sentence on whether the configurations' means differ by more than seed noise: a
    two-way ANOVA blocked by repeat (the repeats every configuration has; a repeat's seed is
    shared by every arm, so blocking removes what the seeds share, as pairing does). None with
    fewer than two configurations."""
    if len(configurations) < 2:
        return None
    if max(len(arm.values) for arm in configurations) < 2:
        return (
            "Each configuration ran once, so these numbers cannot be told from seed noise "
            "(set search.repeats: 3 or more)."
        )
    common = sorted(set.intersection(*(set(arm.values) for arm in configurations)))
    k, b = len(configurations), len(common)
    if b < 2:
        return None
    table = [[arm.values[r] for r in common] for arm in configurations]
    grand = statistics.fmean(v for row in table for v in row)
    arm_means = [statistics.fmean(row) for row in table]
    block_means = [statistics.fmean(row[j] for row in table) for j in range(b)]
    between = b * sum((m - grand) ** 2 for m in arm_means)
    blocks = k * sum((m - grand) ** 2 for m in block_means)
    total = sum((v - grand) ** 2 for row in table for v in row)
    error = total - between - blocks
    spread = statistics.pstdev(arm_means)
    if error <= 1e-15 * max(total, 1e-300):
        return None  # no residual noise to compare with (e.g. every run scored the same)
    from scipy.stats import f as f_distribution

    statistic = (between / (k - 1)) / (error / ((k - 1) * (b - 1)))
    p_value = float(f_distribution.sf(statistic, k - 1, (k - 1) * (b - 1)))
    how = f"ANOVA over {b} repeats blocked by seed, p = {p_value:.3f}"
    if p_value > 0.05:
        return (
            f"The configurations' means (spread {spread:.3f}) differ no more than seed noise "
            f"explains ({how}): read the ranking and the importances as noise."
        )
    return (
        f"The configurations' means (spread {spread:.3f}) differ by more than seed noise ({how})."
    )


@dataclass(frozen=True)
class ParetoPoint:
    """One arm on a multi-objective sweep's plane: its mean of every objective over its runs."""

    key: str
    label: str
    means: tuple[float, ...]
    runs: int
    on_front: bool  # no other arm is as good on every objective and better on one


def pareto(
    rows: Sequence[tuple[str, str, Mapping[str, Any]]],
    metrics: Sequence[str],
    modes: Sequence[str],
) -> list[ParetoPoint]:
    """The arms of `rows` ((arm key, label, a trial's metrics) each) with their mean objectives
    (finite values only; an arm missing one objective is left out), the Pareto front first, each
    part best first on the first objective."""
    values: dict[str, list[tuple[float, ...]]] = {}
    labels: dict[str, str] = {}
    for key, label, measured in rows:
        point = tuple(_finite(measured.get(metric)) for metric in metrics)
        labels[key] = label
        values.setdefault(key, []).append(point)
    means: dict[str, tuple[float, ...]] = {}
    for key, points in values.items():
        columns = [[v for v in column if not math.isnan(v)] for column in zip(*points, strict=True)]
        if all(columns):
            means[key] = tuple(statistics.fmean(column) for column in columns)
    signs = [1.0 if mode == "max" else -1.0 for mode in modes]

    def dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
        pairs = [(s * x, s * y) for s, x, y in zip(signs, a, b, strict=True)]
        return all(x >= y for x, y in pairs) and any(x > y for x, y in pairs)

    points = [
        ParetoPoint(
            key,
            labels[key],
            mean,
            len(values[key]),
            not any(dominates(other, mean) for name, other in means.items() if name != key),
        )
        for key, mean in means.items()
    ]
    return sorted(points, key=lambda p: (not p.on_front, -signs[0] * p.means[0]))


def _finite(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) else math.nan
