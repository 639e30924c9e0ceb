"""Small helpers the sections and the page share: plotting, grouping trials, showing values."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from smsweep.errors import first_line as _first_line  # noqa: F401  (the sections')
from smsweep.verdict.arms import short  # noqa: F401  (the console's and the sections')

if TYPE_CHECKING:
    from smsweep.report.load import Trial

MISSING = "–"


def _plot(figure: Any, config: Mapping[str, Any], height: int = 420) -> str:
    figure.update_layout(
        template="plotly_white",
        height=config.get("height", height),
        margin={"l": 60, "r": 20, "t": 20, "b": 50},
    )
    return figure.to_html(
        full_html=False,
        include_plotlyjs=False,  # inlined once, in the page's <head>
        config={"displaylogo": False, "responsive": True},
    )


def _points(trials: Iterable[Trial], *keys_and_metric: str) -> list[tuple[Any, ...]]:
    """(x, metric, trial id[, color]) for trials that have x and the metric."""
    x, metric, *rest = keys_and_metric
    points = []
    for trial in trials:
        value = trial.metrics.get(metric)
        if value is None or x not in trial.params:
            continue
        extra = [trial.params.get(key, MISSING) for key in rest]
        points.append((trial.params[x], value, trial.trial_id, *extra))
    return points


def _group(points: Sequence[tuple[Any, ...]], key: Callable) -> dict[str, list[tuple[Any, ...]]]:
    groups: dict[str, list[tuple[Any, ...]]] = {}
    for point in points:
        groups.setdefault(key(point), []).append(point)
    return dict(sorted(groups.items()))


def _matches(trial: Trial, where: Mapping[str, Sequence[Any]]) -> bool:
    return all(trial.params.get(key) in allowed for key, allowed in where.items())


def _describe(where: Mapping[str, Sequence[Any]]) -> str:
    return " and ".join(f"{k} in {', '.join(map(str, v))}" for k, v in where.items()) or "data"


def _mean(values: list[float] | None) -> float | None:
    return statistics.fmean(values) if values else None


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _sort_key(value: Any) -> tuple[int, Any]:
    return (0, value) if _is_number(value) else (1, str(value))


def _show(value: Any) -> str:
    if value is None:
        return MISSING
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.4g}"
    return str(value)
