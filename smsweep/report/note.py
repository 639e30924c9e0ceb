"""The verdict as the sweep's parent run shows it in the MLflow UI: its description, in markdown.

MLflow keeps a run's description in the system tag `mlflow.note.content` and renders it as
markdown at the top of the run's page. The sweep writes it when it ends (and again when a
`resume` ends): the arms over their repeats and the verdict's sentences, the same numbers the
console and the dashboard show.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from smsweep.verdict.stats import ArmScores, Verdict

NOTE_LIMIT = 5000  # characters: what `tracking.finish_sweep_run` keeps of a tag
_MARKDOWN = re.compile(r"([\\`*_{}\[\]<>#|])")  # characters markdown would read as markup


def verdict_note(
    verdict: Verdict, label: str, *, interrupted: bool = False, after: Sequence[str] = ()
) -> str:
    """The parent run's description: a heading, one table row per arm (configurations best
    first, then the controls: scored repeats, mean, 95 % interval and the paired difference
    with each control), then the verdict's sentences. The table leads: the UI folds a long
    description after its first lines, and the best arm's row says most there. `label`: what
    the arms are ranked by, e.g. `miou (last validation)`. Configurations at the bottom of the
    table are left out (and counted) when the note would pass NOTE_LIMIT. `after`: sentences
    that follow the verdict's (a confirmation's search estimate beside the confirmed one)."""
    head = [f"### Verdict: {_text(label)}", ""]
    if interrupted:
        head += [
            "*The sweep stopped before its last trial (`resume` continues it): this verdict "
            "covers the trials that had finished.*",
            "",
        ]
    controls = [arm.control or "" for arm in verdict.controls]
    columns = ["arm", "what", "n", "mean", "95% interval"]
    columns += [f"vs control {_text(name)}, points" for name in controls]
    head += [_row(columns), _row(["---", "---", "--:", "--:", "---"] + ["---"] * len(controls))]
    sentences = verdict.sentences()
    if verdict.noise and verdict.repeats > 1:
        sentences.append(verdict.noise)
    sentences += after
    foot = [
        "",
        "n: repeats with a score. The differences with the controls are paired by repeat, "
        "95% and uncorrected; the sentences below are corrected for the family.",
        "",
    ] + [f"- {_text(sentence)}" for sentence in sentences]
    configurations = list(verdict.configurations)
    while True:
        rows = [_arm_row(verdict, arm, controls) for arm in configurations + verdict.controls]
        left_out = len(verdict.configurations) - len(configurations)
        more = [_row([f"… {left_out} more configurations", "", "", "", ""] + [""] * len(controls))]
        note = "\n".join(head + rows + (more if left_out else []) + foot)
        if len(note) <= NOTE_LIMIT or not configurations:
            return note[:NOTE_LIMIT]
        configurations.pop()


def _arm_row(verdict: Verdict, arm: ArmScores, controls: list[str]) -> str:
    interval = arm.interval
    mean = "–" if math.isnan(interval.mean) else f"{interval.mean:.3f}"
    spread = f"[{interval.low:.3f}, {interval.high:.3f}]" if interval.n >= 2 else "–"
    cells = [
        f"control {arm.control}" if arm.control is not None else arm.key,
        "" if arm.control is not None else arm.label,
        str(interval.n),
        mean,
        spread,
    ]
    for control in controls:
        found = verdict.vs_controls.get((arm.key, control))
        cells.append(found.difference.show_points() if found else "")
    return _row([_text(cell) for cell in cells])


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _text(text: str) -> str:
    """Plain text, shown as written: markdown's markup characters escaped."""
    return _MARKDOWN.sub(r"\\\1", text)
