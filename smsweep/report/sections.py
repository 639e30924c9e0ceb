"""The page's sections: one builder per `kind` in the dashboard definition, each returning the
section's HTML (a plotly figure, a table, images) or "" with a note. The charts are here; the
tables (leaderboard, arms and verdict, Pareto front) in `tables`."""

from __future__ import annotations

import base64
import html
import re
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from smsweep.report.helpers import (
    _describe,
    _finite,
    _first_line,
    _group,
    _is_number,
    _matches,
    _mean,
    _plot,
    _points,
    _show,
    _sort_key,
    short,
)
from smsweep.report.load import Sweep
from smsweep.report.sections_base import Notes, floor_line
from smsweep.report.tables import arms_table, html_table, leaderboard, pareto_table
from smsweep.spec.names import FACTORS, ROBUST_MEAN, ROBUST_PREFIX


def _by_category(sweep: Sweep, config: Mapping[str, Any], notes: Notes) -> str:
    import plotly.graph_objects as go

    x, y = config["x"], config["y"]
    groups = _group(_points(sweep.trials, x, y), key=lambda p: str(p[0]))
    if not groups:
        notes.append(f"No finished trial has both {x} and {y} yet.")
        return ""
    figure = go.Figure()
    for name, points in groups.items():
        figure.add_trace(
            go.Box(
                y=[p[1] for p in points],
                name=name,
                text=[p[2] for p in points],
                boxpoints="all",
                jitter=0.3,
                pointpos=0,
                hovertemplate=f"%{{text}}<br>{y} %{{y:.4f}}<extra>{html.escape(name)}</extra>",
            )
        )
    figure.update_layout(xaxis_title=x, yaxis_title=y, showlegend=False)
    floor_line(figure, sweep, config, notes)
    return _plot(figure, config)


def _scatter(sweep: Sweep, config: Mapping[str, Any], notes: Notes) -> str:
    import plotly.graph_objects as go

    x, y, color = config["x"], config["y"], config.get("color")
    points = [p for p in _points(sweep.trials, x, y, color) if _is_number(p[0])]
    if not points:
        notes.append(f"No finished trial has a numeric {x} and {y} yet.")
        return ""
    groups = _group(points, key=lambda p: str(p[3]) if color else y)
    figure = go.Figure()
    for name, members in groups.items():
        figure.add_trace(
            go.Scatter(
                x=[p[0] for p in members],
                y=[p[1] for p in members],
                text=[p[2] for p in members],
                name=name,
                mode="markers",
                marker={"size": 11, "opacity": 0.85},
                hovertemplate=f"%{{text}}<br>{x} %{{x:.3g}}<br>{y} %{{y:.4f}}"
                f"<extra>{html.escape(name)}</extra>",
            )
        )
    figure.update_layout(xaxis_title=x, yaxis_title=y, legend_title_text=color or "")
    floor_line(figure, sweep, config, notes)
    if len({p[0] for p in points}) == 1:
        notes.append(f"Every trial has the same {x}: nothing to compare along it.")
    return _plot(figure, config)


def _heatmap(sweep: Sweep, config: Mapping[str, Any], notes: Notes) -> str:
    import plotly.graph_objects as go

    x, y, z = config["x"], config["y"], config["z"]
    where = config.get("where") or {}
    chosen = [t for t in sweep.trials if _matches(t, where)]
    if not chosen:
        notes.append(f"No trial with {_describe(where)}: no {x} × {y} grid to show.")
        return ""
    cells: dict[tuple[Any, Any], list[float]] = {}
    for trial in chosen:
        value = trial.metrics.get(z)
        if value is None or x not in trial.params or y not in trial.params:
            continue
        cells.setdefault((trial.params[x], trial.params[y]), []).append(value)
    if not cells:
        notes.append(f"No finished trial with {_describe(where)} has {z} yet.")
        return ""
    xs = sorted({k[0] for k in cells}, key=_sort_key)
    ys = sorted({k[1] for k in cells}, key=_sort_key)
    grid = [[_mean(cells.get((a, b))) for a in xs] for b in ys]
    counts = [[len(cells.get((a, b), [])) for a in xs] for b in ys]
    figure = go.Figure(
        go.Heatmap(
            x=[str(v) for v in xs],
            y=[str(v) for v in ys],
            z=grid,
            customdata=counts,
            texttemplate="%{z:.3f}",
            colorscale="Viridis",
            colorbar={"title": {"text": f"mean {z}"}},
            hovertemplate=f"{x} %{{x}}<br>{y} %{{y}}<br>mean {z} %{{z:.4f}}<br>"
            "%{customdata} trial(s)<extra></extra>",
        )
    )
    figure.update_layout(xaxis_title=x, yaxis_title=y, xaxis_type="category", yaxis_type="category")
    return _plot(figure, config)


def _importances(sweep: Sweep, config: Mapping[str, Any], notes: Notes) -> str:
    import optuna
    import plotly.graph_objects as go

    if sweep.study is None:
        notes.append(f"No parameter importances: {sweep.study_note}.")
        return ""
    if sweep.verdict is not None and sweep.verdict.noise:
        notes.append(sweep.verdict.noise)
    complete = [t for t in sweep.study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(complete) < 2:
        notes.append(
            f"Parameter importances need at least 2 finished trials; the study has {len(complete)}."
        )
        return ""
    values: dict[str, set[str]] = {}
    for trial in complete:
        for name, value in trial.params.items():
            values.setdefault(name, set()).add(repr(value))
    varied = [name for name, seen in values.items() if len(seen) > 1]
    if single := sorted(set(values) - set(varied)):
        notes.append(
            f"Not ranked (a single value in the trials that searched it): {', '.join(single)}."
        )
    if not varied:
        notes.append("No searched parameter took more than one value: nothing to rank.")
        return ""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # a multi-objective study: the importances for the first (ranked) objective
            first = None if len(sweep.study.directions) == 1 else (lambda t: t.values[0])
            found = optuna.importance.get_param_importances(
                sweep.study, params=varied, target=first
            )
    except (ValueError, RuntimeError) as error:  # e.g. too few trials for the evaluator
        notes.append(f"Optuna could not compute parameter importances: {_first_line(error)}")
        return ""
    notes += sorted({f"Optuna: {_first_line(w.message)}" for w in caught})
    if not any(found.values()):
        notes.append(
            f"{sweep.metric} did not vary with any searched parameter (all importances 0)."
        )
    names = list(found)[::-1]  # largest on top
    figure = go.Figure(
        go.Bar(
            x=[found[n] for n in names],
            y=names,
            orientation="h",
            texttemplate="%{x:.2f}",
            hovertemplate="%{y}: %{x:.3f}<extra></extra>",
        )
    )
    figure.update_layout(xaxis_title=f"importance for {sweep.metric}", xaxis_range=[0, 1])
    return _plot(figure, config, height=140 + 40 * len(names))


def _class_iou(sweep: Sweep, config: Mapping[str, Any], notes: Notes) -> str:
    import plotly.graph_objects as go

    trials = [t for t in sweep.trials if any(k.startswith("iou/") for k in t.metrics)]
    if not trials or not sweep.class_names:
        notes.append("No trial has per-class IoU yet (it is logged after fine-tuning).")
        return ""
    grid = [[_finite(t.metrics.get(f"iou/{name}")) for name in sweep.class_names] for t in trials]
    labels = [f"{t.trial_id} {short(t.searched)}".strip() for t in trials]
    figure = go.Figure(
        go.Heatmap(
            x=sweep.class_names,
            y=labels,
            z=grid,
            zmin=0,
            zmax=1,
            texttemplate="%{z:.2f}",
            colorscale="Viridis",
            colorbar={"title": {"text": "IoU"}},
            hovertemplate="%{y}<br>%{x}: IoU %{z:.4f}<extra></extra>",
        )
    )
    figure.update_layout(yaxis_autorange="reversed", xaxis_title="class")
    return _plot(figure, config, height=200 + 28 * len(trials))


def _robustness(sweep: Sweep, config: Mapping[str, Any], notes: Notes) -> str:
    """Trials x factors: the clean mIoU, the mIoU under each factor's shift and their mean."""
    factors = [f for f in FACTORS if any(ROBUST_PREFIX + f in t.metrics for t in sweep.trials)]
    trials = [t for t in sweep.trials if ROBUST_MEAN in t.metrics]
    if not trials:
        notes.append(
            "No trial has robustness metrics (robustness.enabled: true logs them after "
            "fine-tuning)."
        )
        return ""
    head = ["trial", "params", "miou", *factors, "mean of factors", "drop, points"]
    rows = []
    for trial in trials:
        values = [trial.metrics.get(ROBUST_PREFIX + f) for f in factors]
        clean, mean = trial.metrics.get("miou"), trial.metrics.get(ROBUST_MEAN)
        drop = 100 * (clean - mean) if _is_number(clean) and _is_number(mean) else None
        cells = [(trial.trial_id, False), (short(trial.searched) or "–", False)]
        cells += [(_show(value), True) for value in (clean, *values, mean)]
        cells.append((f"{drop:.1f}" if drop is not None else "–", True))
        rows.append((cells, trial.trial_id == sweep.best_trial))
    return html_table(head, rows)


def _curves(sweep: Sweep, config: Mapping[str, Any], notes: Notes) -> str:
    import plotly.graph_objects as go

    metric, offset = config["metric"], config.get("step_offset", 0)
    figure = go.Figure()
    for trial in sweep.trials:
        history = trial.history.get(metric) or []
        if not history:
            continue
        figure.add_trace(
            go.Scatter(
                x=[step + offset for step, _ in history],
                y=[value for _, value in history],
                name=f"{trial.trial_id} {short(trial.searched)}".strip(),
                mode="lines+markers",
                hovertemplate=f"{config.get('x', 'step')} %{{x}}<br>{metric} %{{y:.4f}}",
            )
        )
    if not figure.data:
        notes.append(f"No trial has logged {metric} yet.")
        return ""
    figure.update_layout(
        xaxis_title=config.get("x", "step"),
        yaxis_title=metric,
        xaxis_dtick=1,
        legend_title_text="trial",
    )
    floor_line(figure, sweep, config, notes)
    return _plot(figure, config)


def _gallery_section(sweep: Sweep, config: Mapping[str, Any], notes: Notes) -> str:
    if sweep.best is None:
        notes.append("No best trial yet.")
        return ""
    if not sweep.galleries:
        notes.append(f"Trial {sweep.best.trial_id} has no mask galleries.")
        return ""
    figures = []
    for name, png in sweep.galleries:
        data = base64.b64encode(png).decode("ascii")
        label = re.sub(r"partition 0*(\d)", r"partition \1", name.replace("_", " "))
        figures.append(
            f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(label)}</figcaption></figure>"
        )
    which = f"{sweep.best.trial_id} ({short(sweep.best.searched)})"
    intro = f"<p>Trial {html.escape(which)}</p>"
    return intro + f'<div class="galleries">{"".join(figures)}</div>'


SECTIONS: dict[str, Callable[[Sweep, Mapping[str, Any], Notes], str]] = {
    "leaderboard": leaderboard,
    "arms": arms_table,
    "pareto": pareto_table,
    "by_category": _by_category,
    "scatter": _scatter,
    "heatmap": _heatmap,
    "importances": _importances,
    "class_iou": _class_iou,
    "robustness": _robustness,
    "curves": _curves,
    "galleries": _gallery_section,
}
