"""What a sweep prints, and that its progress callback survives Tune's pickling."""

from __future__ import annotations

import builtins

from ray import cloudpickle

from smsweep.console import Progress, leaderboard, short


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


def test_leaderboard_shows_pixel_accuracy_and_the_trivial_predictors_floor():
    rows = [
        {"trial_id": "a", "status": "TERMINATED", "miou": 0.47, "pixel_accuracy": 0.93}
        | {"floor/miou": 0.165, "floor/pixel_accuracy": 0.826, "params": {"x.r": 0.5}},
        {"trial_id": "b", "status": "ERROR", "params": {"x.r": 0.7}},
    ]
    lines = leaderboard(rows, "miou").splitlines()
    assert lines[0].split() == ["trial", "status", "miou", "pixel", "acc", "params"]
    assert lines[1].split() == ["a", "TERMINATED", "0.4700", "0.9300", "r=0.5"]
    assert lines[2].split() == ["b", "ERROR", "-", "-", "r=0.7"]
    assert lines[3].split()[:3] == ["floor", "0.1650", "0.8260"]
    assert len(leaderboard(rows[1:], "miou").splitlines()) == 2  # no floor known: no floor line
