"""The power planner: repeats per arm for a target effect and what they cost, from a sweep's
own noise and trial times (`smsweep plan DIR --effect 2` and a line in the report)."""

from __future__ import annotations

import math

import pytest

from smsweep import report
from smsweep.cli import main
from smsweep.report.plan import REPORT_EFFECTS, plan, plan_sentence, sweep_plans
from smsweep.verdict.arms import Arm
from smsweep.verdict.power import power, repeats_for
from smsweep.verdict.stats import ArmRun, judge
from tests.test_report import _sections, _sweep, _trial

# 3 configurations and a control over 4 repeats: a shared seed effect plus 1-2 points of noise
SCORES = {
    "config-1": [0.50, 0.55, 0.46, 0.52],
    "config-2": [0.49, 0.53, 0.47, 0.50],
    "config-3": [0.47, 0.54, 0.44, 0.51],
    "control:none": [0.45, 0.50, 0.43, 0.47],
}


def _runs() -> list[ArmRun]:
    return [
        ArmRun(key, key, "none" if key.startswith("control") else None, repeat, value)
        for key, values in SCORES.items()
        for repeat, value in enumerate(values)
    ]


def test_the_plan_is_the_fewest_repeats_with_80_percent_power_at_the_familys_level():
    verdict = judge(_runs(), "miou")
    found = plan(verdict, 0.02, trial_seconds=[100.0, 140.0], device_seconds=[200.0, 280.0])
    # the best of 3 against 1 control, Holm over 2 comparisons: 0.05 / (3 x 2)
    assert found.alpha == pytest.approx(0.05 / 6)
    assert found.difference_sd == pytest.approx(math.sqrt(2) * verdict.residual_sd)
    n = found.repeats
    assert n == repeats_for(0.02, found.difference_sd, found.alpha)
    assert power(0.02, found.difference_sd, n, found.alpha) >= 0.8
    assert power(0.02, found.difference_sd, n - 1, found.alpha) < 0.8
    assert found.trials == 4 * n
    line = found.line()
    assert line.startswith(f"2.0 points: {n} repeats per arm, {4 * n} trials, ")
    seconds = 4 * n * 120.0  # the trials at their mean of 120 s
    shown = f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"
    assert f"{shown} of trial time" in line
    assert plan(verdict, 0.05).repeats < n < plan(verdict, 0.01).repeats  # smaller: more


def test_the_plan_needs_the_sweeps_noise():
    from smsweep.errors import SpecError

    once = judge([ArmRun("a", "a", None, 0, 0.5), ArmRun("b", "b", None, 0, 0.4)], "miou")
    with pytest.raises(SpecError, match=r"set search\.repeats: 3"):
        plan(once, 0.02)


def test_the_report_plans_from_the_trials_seconds():
    trials = []
    for key, values in SCORES.items():
        for repeat, value in enumerate(values):
            trial = _trial(f"{key}-{repeat}", "random", 0.5, value)
            control = "none" if key.startswith("control") else None
            number = None if control else int(key.removeprefix("config-"))
            trial.arm = Arm({}, repeat=repeat, control=control, configuration=number)
            trial.metrics |= {"cost/seconds": 600.0, "cost/device_seconds": 1200.0}
            trials.append(trial)
    sweep = _sweep(trials)
    sweep.verdict = judge([t.arm.scored(t.metrics["miou"]) for t in trials], "miou")
    plans = sweep_plans(sweep, REPORT_EFFECTS)
    assert [p.trial_seconds for p in plans] == [600.0] * 3
    expected = plan_sentence(plans)
    assert expected.startswith("Planning (80% power for the best against a control at level ")
    section = _sections(report.render(sweep, report.load_dashboard()))["arms"]
    assert expected.replace("'", "&#x27;") in section


def test_plan_names_the_fix_for_a_directory_that_is_no_sweep(tmp_path, capsys):
    assert main(["plan", str(tmp_path), "--effect", "2"]) != 0
    assert "is not a sweep directory" in capsys.readouterr().err
