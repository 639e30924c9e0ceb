"""What every section builder shares: the notes list and the trivial predictor's floor."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from smsweep.report.helpers import (
    _is_number,
)
from smsweep.report.load import Sweep

Notes = list[str]


# What the trivial predictor (the majority class everywhere) scores on each trial's validation
# split: the floor a trial has to clear before its number says anything.
FLOOR_COLUMNS = ("pixel_accuracy", "floor/miou", "floor/pixel_accuracy")


FLOOR_LABEL = "trivial predictor (majority class)"


def floor_line(figure: Any, sweep: Sweep, config: Mapping[str, Any], notes: Notes) -> None:
    """A dashed line at the mean floor (`config["floor"]`, e.g. floor/miou) of the trials."""
    name = config.get("floor")
    values = [t.metrics[name] for t in sweep.trials if _is_number(t.metrics.get(name))]
    if not name or not values:
        return
    level = sum(values) / len(values)
    figure.add_hline(
        y=level,
        line_dash="dash",
        line_color="#888",
        annotation_text=f"{FLOOR_LABEL}: {level:.3f}",
        annotation_position="bottom right",
    )
    if max(values) - min(values) > 0.005:
        notes.append(
            f"The trials' {name} ranges {min(values):.3f}-{max(values):.3f} (their validation "
            "splits differ); the line is its mean."
        )
