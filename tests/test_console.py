"""What a sweep prints, and that its progress callback survives Tune's pickling."""

from __future__ import annotations

import builtins

from ray import cloudpickle

from smsweep.report.console import Progress, arms_table, leaderboard, short
from smsweep.verdict.stats import ArmRun, judge


def test_progress_pickles_after_ray_wraps_print(monkeypatch, capsys):
    # Ray replaces builtins.print in a driver once it has forwarded a worker's log line; Tune
    # pickles the callbacks with the experiment afterwards. The default echo must survive that.
    original = builtins.print
    monkeypatch.setattr(builtins, "print", lambda *args, **kwargs: original(*args, **kwargs))
    restored = cloudpickle.loads(cloudpickle.dumps(Progress(3, "miou", "max")))
    restored.echo("a line")
    assert capsys.readouterr().out == "a line\n"


def test_short_shows_the_last_key_part_and_three_digits():
    assert short({"masking.ratio": 0.52345, "masking.strategy": "selective"}) == (
        "ratio=0.523 strategy=selective"
    )


def _rows(numbers: dict[str, float]) -> list[dict]:
    """A finished trial (mIoU 0.47, pixel accuracy 0.93 and `numbers`) and a failed one."""
    return [
        {"trial_id": "a", "status": "TERMINATED", "miou": 0.47, "pixel_accuracy": 0.93}
        | numbers
        | {"params": {"x.r": 0.5}},
        {"trial_id": "b", "status": "ERROR", "params": {"x.r": 0.7}},
    ]


def test_leaderboard_shows_pixel_accuracy_and_the_trivial_predictors_floor():
    rows = _rows({"floor/miou": 0.165, "floor/pixel_accuracy": 0.826})
    lines = leaderboard(rows, "miou").splitlines()
    assert lines[0].split() == ["trial", "status", "miou", "pixel", "acc", "params"]
    assert lines[1].split() == ["a", "finished", "0.4700", "0.9300", "r=0.5"]
    assert lines[2].split() == ["b", "failed", "-", "-", "r=0.7"]
    assert lines[3].split()[:3] == ["floor", "0.1650", "0.8260"]
    assert len(leaderboard(rows[1:], "miou").splitlines()) == 2  # no floor known: no floor line


def test_leaderboard_shows_the_probe_beside_the_fine_tune_when_trials_ran_one():
    rows = _rows({"probe/miou": 0.31, "floor/miou": 0.165})
    lines = leaderboard(rows, "miou").splitlines()
    assert lines[0].split() == [
        "trial",
        "status",
        "miou",
        "pixel",
        "acc",
        "probe",
        "miou",
        "params",
    ]
    assert lines[1].split() == ["a", "finished", "0.4700", "0.9300", "0.3100", "r=0.5"]
    assert lines[2].split() == ["b", "failed", "-", "-", "-", "r=0.7"]
    assert lines[3].index("the majority") == lines[1].index("r=0.5")  # the columns line up
    ranked_by_probe = leaderboard(rows, "probe/miou").splitlines()
    assert "probe miou" not in ranked_by_probe[0]  # ranked by it: one column is enough


def test_arms_table_shows_intervals_and_the_difference_with_each_control():
    runs = [
        ArmRun(key, label, control, repeat, value)
        for key, label, control, values in [
            ("config-1", "strategy=random", None, [0.50, 0.52, 0.47]),
            ("control:none", "strategy=none", "none", [0.45, 0.46, 0.44]),
        ]
        for repeat, value in enumerate(values)
    ]
    lines = arms_table(judge(runs, "miou")).splitlines()
    assert lines[0] == (
        "arm           runs  miou mean [95% CI]      blocked  vs none, points       what"
    )
    assert lines[1].split()[:5] == ["config-1", "3", "0.497", "[0.434,", "0.559]"]
    assert lines[1].split()[5] == "0.497"  # the seed-blocked mean: no repeat is missing
    assert "+4.7 [" in lines[1] and lines[1].endswith("strategy=random")
    assert lines[2].split()[:3] == ["control", "none", "3"] and " - " in lines[2]
    columns = [line.index("3") for line in lines[1:]]  # the runs column lines up
    assert len(set(columns)) == 1


def test_arms_table_columns_fit_long_control_names():
    runs = [
        ArmRun(key, key, control, repeat, 0.4 + 0.01 * repeat)
        for key, control in [("config-1", None), ("control:contrastive", "contrastive")]
        for repeat in range(3)
    ]
    lines = arms_table(judge(runs, "miou")).splitlines()
    assert "vs contrastive, points  what" in lines[0]
    assert lines[1].index("0.410") == lines[2].index("0.410")


def test_a_live_status_line_is_replaced_and_then_cleared(capsys):
    from smsweep.report.console import say, status

    status("trial a partition 1/3: 40/120 steps")
    status("trial a partition 2/3: 80/120 steps")
    say("trial a finished")
    out = capsys.readouterr().out
    assert out == (
        "\r\x1b[Ktrial a partition 1/3: 40/120 steps"
        "\r\x1b[Ktrial a partition 2/3: 80/120 steps"
        "\r\x1b[Ktrial a finished\n"
    )
    say("next")
    assert capsys.readouterr().out == "next\n"  # no status line left to clear
