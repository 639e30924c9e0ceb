"""Power of a paired comparison: the minimum detectable effect (MDE) and the repeats a target
effect needs.

A comparison of two arms is a two-sided one-sample t-test on their n paired differences (one
per shared repeat seed) at level alpha. With the differences' standard deviation sd, the test
statistic follows a noncentral t with n - 1 degrees of freedom and noncentrality
effect x sqrt(n) / sd, so its power is

    power(effect) = P(T'(n - 1, effect sqrt(n) / sd) > c) + P(T'(n - 1, ...) < -c),
    c = t(1 - alpha / 2, n - 1).

The MDE is the effect at which that power is 80 %: MDE = lambda(n, alpha) x sd / sqrt(n), where
lambda solves power = 0.8 for the noncentrality. It falls with n twice over: through sqrt(n)
and through the t quantiles (lambda is 5.65 at n = 3, 3.76 at n = 5, 3.15 at n = 10 for alpha
0.05). Pure SciPy and numpy: no torch, no Ray.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import optimize
from scipy.stats import nct
from scipy.stats import t as student_t

ALPHA = 0.05
POWER = 0.80
MOST_REPEATS = 1000  # a planner answer beyond this is "not reachable by repeats"


def power(effect: float, sd: float, n: int, alpha: float = ALPHA) -> float:
    """The chance that a paired t-test at `alpha` over `n` differences of standard deviation
    `sd` finds a true difference `effect` (NaN with fewer than 2 differences)."""
    if n < 2 or not sd > 0:
        return math.nan
    return _power_at(abs(effect) * math.sqrt(n) / sd, n - 1, alpha)


def _power_at(noncentrality: float, df: int, alpha: float) -> float:
    critical = float(student_t.ppf(1 - alpha / 2, df))
    upper = float(nct.sf(critical, df, noncentrality))
    # The lower tail is negligible at the noncentralities asked here, and SciPy's noncentral t
    # returns NaN for it far out; zero is then its value to double precision.
    lower = float(np.nan_to_num(nct.sf(critical, df, -noncentrality)))
    return upper + lower


@functools.lru_cache(maxsize=4096)
def multiplier(n: int, alpha: float = ALPHA, target: float = POWER) -> float:
    """lambda(n, alpha): the noncentrality at which the paired t-test has power `target`; the
    MDE is lambda x sd / sqrt(n). NaN with fewer than 2 differences."""
    if n < 2:
        return math.nan
    df = n - 1
    guess = float(student_t.ppf(1 - alpha / 2, df) + student_t.ppf(target, df))
    low, high = 0.5 * guess, 2.0 * guess
    while _power_at(high, df, alpha) < target:  # a very small alpha at df 1 can need more
        high *= 2
    return float(optimize.brentq(lambda x: _power_at(x, df, alpha) - target, low, high))


def minimum_detectable_effect(sd: float, n: int, alpha: float = ALPHA) -> float:
    """The smallest true difference found with 80 % power by a paired t-test at `alpha` over
    `n` differences whose standard deviation is `sd` (NaN with fewer than 2)."""
    if n < 2 or math.isnan(sd):
        return math.nan
    return multiplier(n, alpha) * sd / math.sqrt(n)


def mde_array(sd: np.ndarray, n: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """`minimum_detectable_effect` elementwise (NaN where n < 2): one root per distinct
    (n, alpha), so a simulation of thousands of sweeps costs a handful of roots."""
    sd, n, alpha = np.broadcast_arrays(
        np.asarray(sd, float), np.asarray(n, int), np.asarray(alpha, float)
    )
    factors = np.full(sd.shape, math.nan)
    pairs = zip(n.ravel(), alpha.ravel(), strict=True)
    for count, level in {(int(c), float(a)) for c, a in pairs if c >= 2}:
        factors[(n == count) & (alpha == level)] = multiplier(count, level)
    with np.errstate(invalid="ignore", divide="ignore"):
        return factors * sd / np.sqrt(n)


def repeats_for(effect: float, sd: float, alpha: float = ALPHA, target: float = POWER) -> int:
    """The fewest repeats (paired differences) at which a paired t-test at `alpha` finds a
    true difference `effect` with power `target`, given differences of standard deviation `sd`;
    0 when more than MOST_REPEATS would be needed."""
    if not effect or not sd > 0:
        raise ValueError(
            f"effect ({effect}) and sd ({sd}) must be positive; pass the effect in "
            "the metric's units (0.02 for 2 points of mIoU)"
        )
    for n in range(2, MOST_REPEATS + 1):
        if power(effect, sd, n, alpha) >= target:
            return n
    return 0
