"""Intervals, paired differences, the MDE, Holm and blocked ranking: checked against values worked
out by hand or against SciPy."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from scipy import stats as scipy_stats

from smsweep.verdict.family import blocked_means, holm
from smsweep.verdict.stats import (
    ArmRun,
    compare,
    judge,
    mean_interval,
    minimum_detectable_effect,
    paired_differences,
)


def test_mean_interval_is_a_student_t_interval():
    interval = mean_interval([0.40, 0.42, 0.44])
    # mean 0.42, sd 0.02, se 0.02 / sqrt(3), t(0.975, 2) = 4.3027
    half = 4.302652729911275 * 0.02 / math.sqrt(3)
    assert interval.mean == pytest.approx(0.42)
    assert (interval.low, interval.high) == pytest.approx((0.42 - half, 0.42 + half))
    assert interval.n == 3 and interval.show() == "0.420 [0.370, 0.470]"
    one = mean_interval([0.5, math.nan])
    assert (one.mean, one.low, one.high, one.n) == (0.5, 0.5, 0.5, 1)
    assert one.show() == "0.500 (n=1)" and not one.excludes_zero()
    assert mean_interval([]).n == 0


def test_paired_differences_use_the_seeds_both_arms_have():
    arm = {0: 0.50, 1: 0.46, 2: 0.49, 7: 0.9}
    control = {0: 0.47, 1: 0.45, 2: 0.45, 3: 0.1}
    differences = paired_differences(arm, control)
    assert differences == pytest.approx([0.03, 0.01, 0.04])
    # lambda(3, 0.05) = 5.6535: the noncentrality at which the t-test has 80 % power
    assert minimum_detectable_effect(differences) == pytest.approx(
        5.653489 * 0.015275252 / math.sqrt(3), rel=1e-5
    )
    assert math.isnan(minimum_detectable_effect([0.1]))


@pytest.mark.parametrize("n", [2, 3, 5, 10, 30])
def test_the_mde_is_the_effect_found_with_80_percent_power_and_falls_with_n(n):
    from smsweep.verdict.power import minimum_detectable_effect as mde
    from smsweep.verdict.power import repeats_for

    effect = mde(0.02, n)
    critical = scipy_stats.t.ppf(0.975, n - 1)
    noncentrality = effect * math.sqrt(n) / 0.02
    # the lower tail is below 1e-6 here (and NaN in SciPy at df 1)
    found = scipy_stats.nct.sf(critical, n - 1, noncentrality)
    assert found == pytest.approx(0.80, abs=1e-6)
    assert mde(0.02, n + 1) < effect  # more repeats, a smaller MDE
    assert mde(0.02, n, alpha=0.005) > effect  # a corrected level, a larger one
    assert repeats_for(effect * 1.001, 0.02) == n  # the planner inverts it
    assert repeats_for(effect * 0.99, 0.02) > n  # ... and a smaller effect needs more


def test_holm_steps_down_and_its_levels_match_its_decisions():
    declared, level = holm(np.array([[0.01, 0.04, 0.03]]), np.ones((1, 3)))
    # 0.01 < 0.05 / 3: declared; 0.03 > 0.05 / 2: the procedure stops there
    assert declared.tolist() == [[True, False, False]]
    assert level == pytest.approx(np.array([[0.05 / 3, 0.025, 0.025]]))
    declared, level = holm(np.array([[0.004, 0.001]]), np.array([[10.0, 1.0]]))
    # selection-adjusted 0.04 and 0.001: 0.001 < 0.025, then 0.04 < 0.05
    assert declared.tolist() == [[True, True]]
    assert level == pytest.approx(np.array([[0.005, 0.025]]))


def test_blocked_means_fit_the_additive_model_where_a_cell_is_missing():
    # arm b = arm a + 1 on every seed; b's repeat 2 failed: its blocked mean is still a's + 1
    scores = np.array([[[0.30, 0.50, 0.10], [1.30, 1.50, np.nan]]])
    means, sd = blocked_means(scores)
    assert means[0] == pytest.approx([0.30, 1.30], abs=1e-9)
    assert sd[0] == pytest.approx(0.0, abs=1e-9)
    assert np.nanmean(scores[0, 1]) == pytest.approx(1.40)  # the plain mean is moved


def test_the_verdict_says_whether_zero_is_inside_the_interval():
    # differences 0.04, 0.05, 0.045: sd 0.005, half-width 4.30 * 0.005 / sqrt(3) = 0.0124
    above = compare(
        "selective", {0: 0.51, 1: 0.50, 2: 0.495}, "random", {0: 0.47, 1: 0.45, 2: 0.45}
    )
    assert above.difference.excludes_zero()
    assert above.verdict() == "selective is above random: +4.5 points [+3.3, +5.7], n=3."
    null = compare("selective", {0: 0.50, 1: 0.44, 2: 0.49}, "random", {0: 0.47, 1: 0.47, 2: 0.45})
    assert not null.difference.excludes_zero()
    assert null.verdict().startswith(
        "selective vs random: no evidence of a difference at this power (MDE 12.4 points)"
    )
    assert "noise" not in null.verdict() and "not distinguishable" not in null.verdict()
    expected = scipy_stats.ttest_rel([0.51, 0.50, 0.495], [0.47, 0.45, 0.45]).pvalue
    assert above.p_value == pytest.approx(expected, rel=1e-9)
    assert "1 paired seed(s)" in compare("a", {0: 1.0}, "b", {0: 0.5}).verdict()


def _runs(table: dict[str, list[float]], controls=("none",)) -> list[ArmRun]:
    return [
        ArmRun(key, key, key if key in controls else None, repeat, value)
        for key, values in table.items()
        for repeat, value in enumerate(values)
    ]


def test_judge_ranks_by_mean_and_pairs_by_repeat():
    # Repeat 2 is a hard seed for every arm: pairing removes it.
    verdict = judge(
        _runs({"b": [0.50, 0.52, 0.40], "a": [0.46, 0.49, 0.36], "none": [0.40, 0.43, 0.31]}),
        "miou",
    )
    assert [arm.key for arm in verdict.configurations] == ["b", "a"]
    assert verdict.best.key == "b" and verdict.best.interval.n == 3
    versus = verdict.vs_controls[("b", "none")]
    assert versus.difference.mean == pytest.approx(0.0933333, rel=1e-5)
    assert versus.difference.excludes_zero()  # differences .10 .09 .09
    sentences = verdict.sentences()
    assert sentences[0].startswith(
        "The family judged: the best of 2 configurations against the runner-up and 1 control "
        "(2 comparisons; Holm over the 2, each corrected for picking the best out of 2)"
    )
    assert sentences[1].startswith("Best vs runner-up: the best, b, is above the runner-up, a:")
    # p = 0.0013 x 2 configurations < 0.05 / 2: the interval is drawn at 1 - 0.05 / 4
    assert sentences[2].startswith(
        "Best vs control none: b is above control none: +9.3 points [+6.4, +12.3] "
        "(98.8% interval), n=3."
    )
    assert "winner's curse" in sentences[3]
    judged = verdict.best_vs_controls["none"]
    test = scipy_stats.ttest_rel([0.50, 0.52, 0.40], [0.40, 0.43, 0.31])
    assert judged.p_value == pytest.approx(test.pvalue, rel=1e-9)
    low, high = test.confidence_interval(confidence_level=1 - judged.level)
    assert (judged.difference.low, judged.difference.high) == pytest.approx((low, high))
    assert verdict.mlflow_metrics()["best_vs_control/none"] == pytest.approx(versus.difference.mean)
    assert verdict.mlflow_metrics()["best_vs_control/none/n"] == 3
    assert "differ by more than seed noise" in verdict.noise


def test_judge_with_one_repeat_says_there_is_no_interval():
    verdict = judge(_runs({"a": [0.5], "b": [0.4], "none": [0.3]}), "miou")
    assert verdict.repeats == 1 and len(verdict.sentences()) == 1
    assert verdict.sentences()[0].startswith("Every arm ran once: there is no interval")
    assert verdict.noise.startswith("Each configuration ran once")


def test_judge_minimises_and_skips_trials_without_a_score():
    runs = _runs({"a": [0.3, 0.31], "b": [0.2, 0.22]}, controls=())
    runs.append(ArmRun("c", "c", None, 0, None))
    verdict = judge(runs, "loss", mode="min")
    assert [arm.key for arm in verdict.configurations] == ["b", "a", "c"]
    assert verdict.configurations[-1].runs == 1 and not verdict.configurations[-1].values
    assert "2 repeats an interval has 1 degree of freedom" in verdict.sentences()[0]


def test_the_noise_note_when_configurations_differ_by_seed_noise_alone():
    verdict = judge(
        _runs({"a": [0.50, 0.42, 0.47, 0.44], "b": [0.45, 0.47, 0.43, 0.48]}, controls=()), "miou"
    )
    assert "show no evidence of differing beyond seed noise at this power" in verdict.noise
    assert "no evidence of a difference either way" in verdict.noise
    assert "as noise" not in verdict.noise


def test_a_failed_repeat_does_not_move_an_arms_paired_rank():
    # Repeat 2 is a bad seed for everyone (-0.10). Arm b is truly 0.01 above a; b's repeat 2
    # failed, so its plain mean skips the bad seed and would put it far ahead of c (truly 0.02
    # above a); the blocked mean keeps b below c.
    seed = [0.0, 0.01, -0.10]
    runs = {
        "a": [0.40 + s for s in seed],
        "b": [0.41 + s for s in seed[:2]],
        "c": [0.42 + s for s in seed],
    }
    table = [ArmRun(k, k, None, r, v) for k, values in runs.items() for r, v in enumerate(values)]
    table.append(ArmRun("b", "b", None, 2, None))
    verdict = judge(table, "miou")
    assert [arm.key for arm in verdict.configurations] == ["c", "b", "a"]
    blocked = {arm.key: arm.blocked for arm in verdict.configurations}
    assert blocked["b"] - blocked["a"] == pytest.approx(0.01)
    assert verdict.configurations[1].interval.mean > verdict.configurations[0].interval.mean


def test_a_configuration_picked_beforehand_is_judged_without_the_picking_factor():
    table = {"a": [0.50, 0.52, 0.48], "b": [0.40, 0.60, 0.45], "none": [0.45, 0.46, 0.44]}
    searched = judge(_runs(table), "miou")
    confirmed = judge(_runs(table), "miou", picked="b")
    assert searched.best.key == "a" and confirmed.best.key == "b"
    assert confirmed.best_vs_runner_up is None and confirmed.picked_from == 1
    assert confirmed.best_vs_controls["none"].level == pytest.approx(0.05)
    assert (
        "a configuration chosen before these repeats against 1 control"
        in (confirmed.sentences()[0])
    )
    with pytest.raises(ValueError, match="name one of a, b"):
        judge(_runs(table), "miou", picked="c")


def test_the_pareto_front_uses_blocked_means_and_marks_dominance_inside_the_intervals():
    from smsweep.verdict.stats import pareto

    seed = [0.0, 0.05, -0.05, 0.02]
    rows = []
    for key, miou, cost, jitter in [
        ("fast", 0.40, 10.0, [0.0, 0.001, -0.001, 0.0]),  # clearly cheapest
        ("good", 0.50, 20.0, [0.0, 0.002, -0.001, -0.001]),  # clearly best
        ("near", 0.499, 20.01, [0.03, -0.03, 0.02, -0.02]),  # dominated by good, within noise
        ("poor", 0.30, 30.0, [0.0, 0.001, 0.0, -0.001]),  # dominated beyond the intervals
    ]:
        for repeat, (s, j) in enumerate(zip(seed, jitter, strict=True)):
            if key == "good" and repeat == 2:
                continue  # a failed repeat on the bad seed: the blocked mean is not lifted
            rows.append((key, key, {"miou": miou + s + j, "cost": cost + j}, repeat))
    points = {p.key: p for p in pareto(rows, ["miou", "cost"], ["max", "min"])}
    assert {k for k, p in points.items() if p.on_front} == {"fast", "good"}
    plain = statistics.fmean(r[2]["miou"] for r in rows if r[0] == "good")  # 0.524
    assert abs(points["good"].means[0] - 0.50) < abs(plain - 0.50) / 3
    assert points["near"].uncertain and not points["poor"].uncertain
    assert points["good"].uncertain  # near may be as good within the intervals
    assert not points["fast"].uncertain
    unpaired = pareto([row[:3] for row in rows], ["miou", "cost"], ["max", "min"])
    assert {p.uncertain for p in unpaired} == {None}
