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
