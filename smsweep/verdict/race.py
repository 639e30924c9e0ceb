"""Racing: repeats spent where they decide something (irace's idea, on a sweep's paired seeds).

After the search's repeats, every configuration still in the race and every control run one
more repeat seed at a time; from `first_test` repeats on, after each round the leader (the best
seed-blocked mean among those racing) is tested against each other racer with a paired t-test,
Holm over the round's comparisons, and a racer the leader is declared above leaves the race. The
race ends when one configuration is left or `max_repeats` is reached.

Each round is tested anew, as irace does, without a correction for the earlier looks: a race
decides where to spend repeats, not what the sweep reports. The verdict judges the whole sweep
afterwards, corrected for picking the best of every configuration, and a confirmation on fresh
seeds (search.confirm) gives the number to report. Pure Python, numpy and SciPy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from smsweep.verdict.family import ALPHA, holm
from smsweep.verdict.stats import ArmRun, compare, judge


@dataclass(frozen=True)
class Round:
    """What a race's round decided: the leader, who races on, who left now."""

    leader: str | None
    racing: list[str]  # configuration keys still in the race, the leader first
    dropped: list[str]  # left the race at this round


def race_round(
    runs: Sequence[ArmRun],
    racing: Sequence[str],
    metric: str,
    mode: str = "max",
    *,
    test: bool = True,
    alpha: float = ALPHA,
) -> Round:
    """Judge the racers (`racing`: configuration keys) on every run so far; with `test`, drop
    those the leader is declared above (paired, Holm over the round's comparisons at `alpha`)."""
    verdict = judge(runs, metric, mode)
    ranked = [arm for arm in verdict.configurations if arm.key in racing and arm.values]
    silent = [key for key in racing if key not in {arm.key for arm in ranked}]  # no score yet
    if not ranked:
        return Round(None, list(racing), [])
    leader, others = ranked[0], ranked[1:]
    if not test or not others:
        return Round(leader.key, [arm.key for arm in ranked] + silent, [])
    sign = -1.0 if mode == "min" else 1.0
    tests = [compare(leader.key, leader.values, arm.key, arm.values) for arm in others]
    p = np.array([[found.p_value for found in tests]])
    declared, _ = holm(p, np.ones_like(p), alpha)
    dropped = [
        arm.key
        for arm, found, gone in zip(others, tests, declared[0], strict=True)
        if gone and sign * found.difference.mean > 0
    ]
    kept = [arm.key for arm in ranked if arm.key not in dropped]
    return Round(leader.key, kept + silent, dropped)
