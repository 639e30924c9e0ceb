"""The verdict's error rates, measured by simulating sweeps with a known truth: every arm scores
0.40 + a seed effect shared by every arm of a repeat + its own noise (2 points). The arrays go
through `family.decide`, the code `stats.judge` runs on one sweep; a sample of sweeps also goes
through `judge` itself, which must decide the same. No training: a few seconds in all."""

from __future__ import annotations

import math

import numpy as np
import pytest

from smsweep.verdict.arms import Arm
from smsweep.verdict.confirmation import judge_sweep
from smsweep.verdict.family import decide
from smsweep.verdict.power import power, repeats_for
from smsweep.verdict.stats import ArmRun, judge

SWEEPS = 3000
NOISE = 0.02  # one score's own noise: 2 points of mIoU
SEED = 0.03  # the seed effect every arm of a repeat shares
ALPHA = 0.05
# the rate may exceed alpha by two standard errors of a proportion measured on SWEEPS sweeps
TOLERANCE = 2 * math.sqrt(ALPHA * (1 - ALPHA) / SWEEPS)


def _sweeps(rng, sweeps, arms, repeats, seed=SEED, effect=None):
    """Scores (sweeps, arms, repeats): configurations first, the control last; `effect`
    (sweeps,) is added to arm 0."""
    scores = 0.40 + rng.normal(0, seed, (sweeps, 1, repeats))
    scores = scores + rng.normal(0, NOISE, (sweeps, arms, repeats))
    if effect is not None:
        scores[:, 0] += effect[:, None]
    return scores


def _judged(scores, configurations):
    """`stats.judge` on one simulated sweep (configurations c0..; the control last)."""
    runs = [
        ArmRun(
            f"c{arm:02d}" if arm < configurations else "control:none",
            "",
            None if arm < configurations else "none",
            repeat,
            float(value),
        )
        for arm, row in enumerate(scores)
        for repeat, value in enumerate(row)
    ]
    return judge(runs, "miou")


@pytest.mark.parametrize("repeats", [3, 5])
@pytest.mark.parametrize("configurations", [2, 5, 20])
def test_under_the_null_the_verdict_declares_a_difference_at_most_alpha(configurations, repeats):
    rng = np.random.default_rng(1000 * configurations + repeats)
    scores = _sweeps(rng, SWEEPS, configurations + 1, repeats)
    found = decide(scores, configurations)
    control, runner_up = found.vs_controls[0].declared, found.vs_runner_up.declared
    assert control.mean() <= ALPHA + TOLERANCE
    assert runner_up.mean() <= ALPHA + TOLERANCE
    assert (control | runner_up).mean() <= ALPHA + TOLERANCE  # the family as a whole
    # judge says the same as the arrays, sweep by sweep
    for sweep in range(40):
        verdict = _judged(scores[sweep], configurations)
        best = found.ranking[sweep, 0]
        assert verdict.best.key == f"c{best:02d}"
        comparison = verdict.best_vs_controls["none"]
        assert comparison.difference.excludes_zero() == control[sweep]
        assert comparison.level == pytest.approx(found.vs_controls[0].level[sweep])
        assert verdict.best_vs_runner_up.difference.excludes_zero() == runner_up[sweep]


@pytest.mark.parametrize("repeats", [3, 5, 10])
def test_the_stated_mde_is_found_with_about_80_percent_power(repeats):
    """One configuration against one control: the MDE a sweep states (its sd estimated from its
    own repeats) is used as the true effect of a fresh sweep, which finds it this often. With
    the sd known the power would be 0.80 exactly; an estimated sd gives about 0.63 / 0.69 /
    0.74 at 3 / 5 / 10 repeats, and 2 x sd (the old MDE) gave 0.39 / 0.78 / 0.99."""
    rng = np.random.default_rng(repeats)
    sweeps = 4 * SWEEPS
    stated = decide(_sweeps(rng, sweeps, 2, repeats), 1).vs_controls[0].mde
    found = decide(_sweeps(rng, sweeps, 2, repeats, effect=stated), 1).vs_controls[0]
    assert 0.6 <= found.declared.mean() <= 0.95
    # judge states the same MDE as the arrays
    scores = _sweeps(rng, 5, 2, repeats)
    arrays = decide(scores, 1).vs_controls[0].mde
    for sweep in range(5):
        verdict = _judged(scores[sweep], 1)
        assert verdict.best_vs_controls["none"].mde == pytest.approx(arrays[sweep])


def test_a_failed_repeat_does_not_let_the_seed_effect_into_the_ranking():
    """Null, 5 configurations, 3 repeats, configuration 0's first repeat failed: how often it
    ranks best must not depend on how large the seed effect is (with plain means it does)."""
    rng = np.random.default_rng(7)

    def best_rate(seed, blocked=True):
        scores = _sweeps(rng, SWEEPS, 6, 3, seed=seed)
        scores[:, 0, 0] = np.nan
        if blocked:
            return (decide(scores, 5).ranking[:, 0] == 0).mean()
        return (np.nanmean(scores[:, :5], axis=2).argmax(axis=1) == 0).mean()

    calm, stormy = best_rate(0.0), best_rate(5 * NOISE)
    assert abs(stormy - calm) <= 3 * math.sqrt(2 * 0.25 * 0.75 / SWEEPS)
    assert best_rate(5 * NOISE, blocked=False) > calm + 0.1  # the leak this test would see


def test_the_power_formula_and_the_planners_repeats_hold_in_simulated_sweeps():
    """Configuration 0 is truly 2 points above the control, 4 others are not. At the repeats
    the planner asks for (the true sd, the level Holm's strictest step holds the best vs the
    control to), the verdict declares the best above the control at least 80 % of the time;
    and power() matches a simulated paired t-test at a corrected level (about 0.5 here)."""
    rng = np.random.default_rng(11)
    configurations, effect = 5, 0.02
    level = ALPHA / (configurations * 2)  # picked out of 5, Holm over 2 comparisons
    difference_sd = math.sqrt(2) * NOISE
    repeats = repeats_for(effect, difference_sd, level)
    scores = _sweeps(rng, SWEEPS, configurations + 1, repeats, effect=np.full(SWEEPS, effect))
    found = decide(scores, configurations)
    assert (found.vs_controls[0].declared & (found.vs_controls[0].mean > 0)).mean() >= 0.80
    # power(): one comparison at the corrected level, 20 repeats
    scores = _sweeps(rng, 4 * SWEEPS, 2, 20, effect=np.full(4 * SWEEPS, effect))
    simulated = decide(scores, 1, alpha=level).vs_controls[0].declared.mean()
    expected = power(effect, difference_sd, 20, level)
    assert abs(simulated - expected) <= 3 * math.sqrt(expected * (1 - expected) / (4 * SWEEPS))


def test_the_confirmed_difference_is_unbiased_where_the_searchs_leans_upward():
    """Null, 5 configurations and a control, 3 repeats to search and 3 fresh ones to confirm:
    the best's difference with the control, measured on the repeats that picked it, leans
    upward (the winner's curse); measured on the confirmation's seeds it averages zero (within
    0.2 points at 2 points of noise). `judge_sweep` reads the same two numbers off a sweep's
    runs as the arrays do."""
    rng = np.random.default_rng(13)
    configurations, repeats = 5, 3
    scores = _sweeps(rng, SWEEPS, configurations + 1, 2 * repeats)
    search, fresh = scores[..., :repeats], scores[..., repeats:]
    found = decide(search, configurations)
    best = found.ranking[:, 0]
    chosen = fresh[np.arange(SWEEPS), best][:, None]  # (sweeps, 1, repeats)
    confirmed = decide(np.concatenate([chosen, fresh[:, -1:]], axis=1), 1, picked=0)
    searched = found.vs_controls[0].mean
    assert searched.mean() > 0.005  # the curse: half a point and more
    assert abs(confirmed.vs_controls[0].mean.mean()) <= 0.002
    for sweep in range(5):
        runs = [
            (
                Arm(
                    {},
                    repeat,
                    control="none" if arm == configurations else None,
                    configuration=None if arm == configurations else arm + 1,
                    phase="confirm" if repeat >= repeats else "search",
                ),
                float(scores[sweep, arm, repeat]),
            )
            for arm in range(configurations + 1)
            for repeat in range(2 * repeats)
            if repeat < repeats or arm in (best[sweep], configurations)
        ]
        judged = judge_sweep(runs, "miou")
        assert judged.verdict.best.key == f"config-{best[sweep] + 1}"
        difference = judged.verdict.best_vs_controls["none"].difference.mean
        assert difference == pytest.approx(confirmed.vs_controls[0].mean[sweep])
        assert judged.search.best_vs_controls["none"].difference.mean == pytest.approx(
            searched[sweep]
        )
        assert judged.verdict.family.startswith("a configuration chosen before these repeats")
