"""Intervals, paired differences and the MDE: checked against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from smsweep.stats import (
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
    assert minimum_detectable_effect(differences) == pytest.approx(2 * 0.015275252, rel=1e-6)
    assert math.isnan(minimum_detectable_effect([0.1]))


def test_the_verdict_says_whether_zero_is_inside_the_interval():
    # differences 0.04, 0.05, 0.045: sd 0.005, half-width 4.30 * 0.005 / sqrt(3) = 0.0124
    above = compare(
        "selective", {0: 0.51, 1: 0.50, 2: 0.495}, "random", {0: 0.47, 1: 0.45, 2: 0.45}
    )
    assert above.difference.excludes_zero()
    assert above.verdict() == "selective is above random: +4.5 points [+3.3, +5.7], n=3."
    null = compare("selective", {0: 0.50, 1: 0.44, 2: 0.49}, "random", {0: 0.47, 1: 0.47, 2: 0.45})
    assert not null.difference.excludes_zero()
    assert "not distinguishable from random" in null.verdict()
    assert "MDE: " in null.verdict()
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
    assert sentences[0].startswith("Best vs runner-up: the best, b, is above the runner-up, a:")
    assert sentences[1].startswith("Best vs control none: b is above control none: +9.3 points")
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
    assert "differ no more than seed noise explains" in verdict.noise
