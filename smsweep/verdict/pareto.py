"""A multi-objective sweep's Pareto front, from seed-blocked means, with its uncertainty.

Each arm's point is its blocked mean of every objective (`family.blocked_means`: the additive
arm + seed model, so an arm that lacks a repeat is not moved by that seed's luck). Whether one
arm dominates another is then asked of the paired 95 % intervals too: a dominance that no
objective's interval confirms lies inside the intervals, and the point is marked uncertain.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import t as student_t

from smsweep.verdict.family import blocked_means

Row = tuple[str, str, Mapping[str, Any]] | tuple[str, str, Mapping[str, Any], int]


@dataclass(frozen=True)
class ParetoPoint:
    """One arm on a multi-objective sweep's plane: its blocked mean of every objective."""

    key: str
    label: str
    means: tuple[float, ...]
    runs: int
    on_front: bool  # no other arm is as good on every objective and better on one
    # True: what puts it on (or off) the front lies inside the paired 95 % intervals. On the
    # front: another arm is as good on every objective within them. Off it: no arm that
    # dominates it is ahead beyond them on any objective. None: fewer than 2 shared repeats.
    uncertain: bool | None = None


def pareto(rows: Sequence[Row], metrics: Sequence[str], modes: Sequence[str]) -> list[ParetoPoint]:
    """The arms of `rows` ((arm key, label, a trial's metrics[, its repeat]) each) with their
    blocked mean objectives (finite values only; an arm missing one objective is left out),
    the Pareto front first, each part best first on the first objective. Rows without a repeat
    are taken as unpaired: plain means, and no intervals to mark uncertainty with."""
    labels: dict[str, str] = {}
    cells: dict[str, dict[int, list[tuple[float, ...]]]] = {}
    paired = all(len(row) == 4 for row in rows)
    for number, row in enumerate(rows):
        key, label, measured = row[0], row[1], row[2]
        repeat = int(row[3]) if paired else number  # type: ignore[misc]
        labels[key] = label
        point = tuple(_finite(measured.get(metric)) for metric in metrics)
        cells.setdefault(key, {}).setdefault(repeat, []).append(point)
    keys = [
        key
        for key, by_repeat in cells.items()
        if all(
            any(not math.isnan(p[i]) for points in by_repeat.values() for p in points)
            for i in range(len(metrics))
        )
    ]
    repeats = sorted({r for key in keys for r in cells[key]})
    # (objectives, arms, repeats); a repeat run twice (a retry) counts as its mean
    table = np.full((len(metrics), len(keys), len(repeats)), np.nan)
    for a, key in enumerate(keys):
        for r, repeat in enumerate(repeats):
            points = cells[key].get(repeat, [])
            for i in range(len(metrics)):
                found = [p[i] for p in points if not math.isnan(p[i])]
                table[i, a, r] = sum(found) / len(found) if found else np.nan
    if paired:
        means = blocked_means(table)[0] if keys else np.zeros((len(metrics), 0))
    else:
        means = np.nanmean(table, axis=2) if keys else np.zeros((len(metrics), 0))
    signs = np.array([1.0 if mode == "max" else -1.0 for mode in modes])
    better = signs[:, None] * means  # (objectives, arms), larger is better

    def dominates(a: int, b: int) -> bool:
        return bool(np.all(better[:, a] >= better[:, b]) and np.any(better[:, a] > better[:, b]))

    points = []
    for a, key in enumerate(keys):
        on_front = not any(dominates(b, a) for b in range(len(keys)) if b != a)
        uncertain = _uncertain(a, on_front, table, signs, dominates) if paired else None
        runs = sum(len(points) for points in cells[key].values())
        points.append(
            ParetoPoint(key, labels[key], tuple(map(float, means[:, a])), runs, on_front, uncertain)
        )
    return sorted(points, key=lambda p: (not p.on_front, -signs[0] * p.means[0]))


def _uncertain(
    a: int, on_front: bool, table: np.ndarray, signs: np.ndarray, dominates
) -> bool | None:
    """Whether arm a's place on or off the front lies inside the paired 95 % intervals."""
    others = [b for b in range(table.shape[1]) if b != a]
    sides = {b: _sides(table, signs, b, a) for b in others}  # +1 b ahead, -1 behind, 0 inside
    if any(side is None for side in sides.values()):
        return None
    if on_front:  # could another arm be at least as good on every objective?
        return any(all(s >= 0 for s in sides[b]) for b in others)
    # off it: does any arm that dominates it do so beyond the intervals on some objective?
    return not any(any(s > 0 for s in sides[b]) for b in others if dominates(b, a))


def _sides(table: np.ndarray, signs: np.ndarray, b: int, a: int) -> list[int] | None:
    """Per objective: +1 if b is ahead of a beyond the paired 95 % interval, -1 if behind,
    0 if the interval holds zero; None with fewer than 2 shared repeats."""
    found = []
    for i, sign in enumerate(signs):
        differences = sign * (table[i, b] - table[i, a])
        differences = differences[np.isfinite(differences)]
        n = len(differences)
        if n < 2:
            return None
        mean, sd = float(differences.mean()), float(differences.std(ddof=1))
        half = float(student_t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
        found.append(1 if mean - half > 0 else -1 if mean + half < 0 else 0)
    return found


def _finite(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) else math.nan
