"""Intervals, paired differences and the MDE: checked against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from smsweep.stats import compare, mean_interval, minimum_detectable_effect, paired_differences


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
