"""What a sweep prints, and that its progress callback survives Tune's pickling."""

from __future__ import annotations

import builtins

from ray import cloudpickle

from smsweep.console import Progress, short


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
