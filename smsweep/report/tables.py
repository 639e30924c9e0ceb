"""The page's tables: the leaderboard, the arms over their repeats with the verdict, and the
Pareto front. Each builder returns the section's HTML or "" with a note."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from smsweep.report.helpers import (
    _finite,
    _is_number,
    _plot,
    _show,
)
from smsweep.report.load import Sweep
from smsweep.report.sections_base import FLOOR_COLUMNS, Notes
from smsweep.verdict.arms import status_word
from smsweep.verdict.variance import components, finetune_scores

Cells = list[tuple[str, bool]]  # (text, numeric)


def leaderboard(sweep: Sweep, config: Mapping[str, Any], notes: Notes) -> str:
    if not sweep.trials:
        notes.append("No trials yet.")
        return ""
    metrics = [sweep.metric] + [m for m in ("miou",) if m != sweep.metric]
    metrics += [m for m in FLOOR_COLUMNS if any(m in t.metrics for t in sweep.trials)]
    # Arm and repeat columns where a sweep has repeats or controls (see Seeds and controls).
    arms = any(t.arm.control is not None or t.arm.repeat for t in sweep.trials)
    head = ["#", "trial", "status", *(["arm", "repeat"] if arms else []), *sweep.space, *metrics]
    rows = []
    for number, trial in enumerate(sweep.trials, start=1):
        cells = [(str(number), True), (trial.trial_id, False), (status_word(trial.status), False)]
        arm = trial.arm
        if arms:
            cells += [
                (f"control {arm.control}" if arm.control is not None else arm.key, False),
                (str(arm.repeat + 1), True),
            ]
        cells += [
            (_show(trial.searched.get(key)), _is_number(trial.searched.get(key)))
            for key in sweep.space
        ]
        cells += [(_show(trial.metrics.get(m)), True) for m in metrics]
        rows.append((cells, trial.trial_id == sweep.best_trial))
    if len(rows) <= LEADERBOARD_ROWS:
        return html_table(head, rows)
    # a long sweep: the top stays in view, the rest folds (the page opens on what matters)
    rest = len(rows) - LEADERBOARD_ROWS
    return (
        html_table(head, rows[:LEADERBOARD_ROWS])
        + f"<details><summary>the other {rest} trials</summary>"
        + html_table(head, rows[LEADERBOARD_ROWS:])
        + "</details>"
    )


LEADERBOARD_ROWS = 20  # shown unfolded


def html_table(head: list[str], rows: list[tuple[Cells, bool]]) -> str:
    """A leaderboard-styled table; rows: (cells, highlighted)."""
    marks = {True: ' class="best"', False: ""}
    body = "".join(
        f"<tr{marks[marked]}>"
        + "".join(f"<td{' class=num' * num}>{html.escape(text)}</td>" for text, num in cells)
        + "</tr>"
        for cells, marked in rows
    )
    header = "".join(f"<th>{html.escape(name)}</th>" for name in head)
    return (
        f'<table class="leaderboard"><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>'
    )


def arms_table(sweep: Sweep, config: Mapping[str, Any], notes: Notes) -> str:
    """Every configuration (best mean first) and control: runs, mean with its 95 % interval over
    the repeats, the paired difference with each control, and the verdict in sentences."""
    verdict = sweep.verdict
    if verdict is None or not (verdict.configurations or verdict.controls):
        notes.append("No trials yet.")
        return ""
    controls = [arm.control or "" for arm in verdict.controls]
    head = ["arm", "runs", "scored", f"{verdict.metric} mean [95% CI]", "seed-blocked mean"]
    head += [f"Δ vs {name}, points [95% CI]" for name in controls]
    head += [f"MDE vs {name}, points" for name in controls]
    rows = []
    best = verdict.best
    for arm in verdict.configurations + verdict.controls:
        cells = [(arm.name, False), (str(arm.runs), True), (str(len(arm.values)), True)]
        cells.append((arm.interval.show() if arm.values else "–", True))
        cells.append((f"{arm.blocked:.3f}" if _finite(arm.blocked) is not None else "–", True))
        found = [verdict.vs_controls.get((arm.key, name)) for name in controls]
        cells += [(c.difference.show_points() if c else "–", True) for c in found]
        for comparison in found:
            mde = comparison.mde if comparison is not None else float("nan")
            cells.append((f"{100 * mde:.1f}" if _finite(mde) is not None else "–", True))
        rows.append((cells, best is not None and arm.key == best.key))
    table = html_table(head, rows)
    sentences = verdict.sentences() + ([verdict.noise] if verdict.noise else [])
    confirmed = sweep.judged is not None and sweep.judged.confirmed
    if confirmed:  # the search's estimate beside
        sentences += sweep.judged.lines()
        table = "<p>The confirmation, on fresh seeds (the verdict's runs):</p>" + table
    scores = [
        finetune_scores(trial.metrics, (sweep.spec.get("search") or {}).get("metric", "miou"))
        for trial in sweep.trials
        if trial.arm.confirming == confirmed
    ]
    noise = components(scores, verdict.residual_sd)
    if noise is not None:
        sentences.append(noise.sentence())
    sentences += _plan_sentence(sweep)
    said = "".join(f"<li>{html.escape(sentence)}</li>" for sentence in sentences)
    return f'{table}<ul class="verdict">{said}</ul>'


def _plan_sentence(sweep: Sweep) -> list[str]:
    """The planner's line (`smsweep plan`), where the sweep's seed noise is known."""
    from smsweep.errors import SpecError
    from smsweep.report.plan import REPORT_EFFECTS, plan_sentence, sweep_plans

    try:
        return [plan_sentence(sweep_plans(sweep, REPORT_EFFECTS))]
    except SpecError:  # fewer than 2 repeats: the sentences above already say so
        return []


def pareto_table(sweep: Sweep, config: Mapping[str, Any], notes: Notes) -> str:
    """The arms on the plane of the first two objectives (means over their runs), the Pareto
    front joined by a line, and a table of the arms on the front."""
    import plotly.graph_objects as go

    from smsweep.verdict.stats import pareto

    objectives = sweep.spec.get("search", {}).get("objectives") or []
    if len(objectives) < 2:
        notes.append(
            "A single-objective sweep: set search.objectives (e.g. miou max and "
            "cost/device_seconds min) for a Pareto front."
        )
        return ""
    metrics = [sweep.metric, *(o["metric"] for o in objectives[1:])]
    modes = [o["mode"] for o in objectives]
    rows = [
        (t.arm.key, t.arm.label, t.metrics, t.arm.repeat)
        for t in sweep.trials
        if t.run_id is not None
    ]
    points = pareto(rows, metrics, modes)
    if not points:
        notes.append(f"No finished trial has all of {', '.join(metrics)} yet.")
        return ""
    figure = go.Figure()
    for on_front, name in ((False, "dominated"), (True, "Pareto front")):
        members = sorted((p for p in points if p.on_front == on_front), key=lambda p: p.means[1])
        figure.add_trace(
            go.Scatter(
                x=[p.means[1] for p in members],
                y=[p.means[0] for p in members],
                text=[f"{p.key}: {p.label} ({p.runs} runs)" for p in members],
                name=name,
                mode="lines+markers" if on_front else "markers",
                marker={"size": 12 if on_front else 9, "opacity": 0.9},
                hovertemplate=f"%{{text}}<br>{metrics[1]} %{{x:.4g}}<br>{metrics[0]} %{{y:.4f}}"
                "<extra></extra>",
            )
        )
    figure.update_layout(xaxis_title=f"{metrics[1]} ({modes[1]})", yaxis_title=metrics[0])
    head = [
        "arm",
        "runs",
        *(
            f"{metric} ({mode}), seed-blocked mean"
            for metric, mode in zip(metrics, modes, strict=True)
        ),
    ]
    table = html_table(
        [*head, "on the front", "what it runs"],
        [
            (
                [(p.key, False), (str(p.runs), True)]
                + [(f"{value:.4g}", True) for value in p.means]
                + [(_front_words(p.uncertain), False), (p.label, False)],
                False,
            )
            for p in points
            if p.on_front
        ],
    )
    return _plot(figure, config) + table


def _front_words(uncertain: bool | None) -> str:
    if uncertain is None:
        return "no intervals (fewer than 2 shared repeats)"
    return (
        "within the intervals: another arm may dominate it" if uncertain else "beyond the intervals"
    )
