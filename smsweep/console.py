"""What a sweep prints: one line per trial event, and a summary at the end (not Tune's dump)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ray import tune

from smsweep.arms import Arm
from smsweep.report.helpers import short
from smsweep.stats import Verdict

Echo = Callable[[str], None]


def say(line: str) -> None:
    """The default echo: print the line now. A module function rather than `print` itself:
    Tune pickles its callbacks with the experiment, and once Ray has forwarded a worker's log to
    this process, `builtins.print` is Ray's wrapper, so the original `print` no longer pickles."""
    print(line, flush=True)


class Progress(tune.Callback):
    """Concise live progress: a line when a trial starts, per fine-tune validation, and at its
    end."""

    def __init__(
        self, total: int, metric: str, mode: str, echo: Echo = say, repeats: int = 1
    ) -> None:
        self.total, self.metric, self.mode, self.echo = total, metric, mode, echo
        self.repeats = repeats
        self.started: dict[str, float] = {}
        self.best: tuple[float, str] | None = None
        self.finished = 0

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.started[trial.trial_id] = time.monotonic()
        self.echo(
            f"trial {trial.trial_id} started    {Arm.of(trial.config).describe(self.repeats)}"
        )

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        value = result.get(self.metric)
        if value is not None:
            steps = result.get("finetune_steps", "?")
            self.echo(f"trial {trial.trial_id} fine-tune step {steps}: {self.metric} {value:.4f}")

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.finished += 1
        value = (trial.last_result or {}).get(self.metric)
        seconds = time.monotonic() - self.started.get(trial.trial_id, time.monotonic())
        if value is not None:
            better = self.best is None or (
                value > self.best[0] if self.mode == "max" else value < self.best[0]
            )
            if better:
                self.best = (value, trial.trial_id)
        best = f"best {self.best[0]:.4f} ({self.best[1]})" if self.best else ""
        shown = f"{self.metric} {value:.4f}" if value is not None else "no result"
        failure = (trial.last_result or {}).get("failure")
        if failure:
            shown = f"stopped: {failure}"[:120]
        self.echo(
            f"trial {trial.trial_id} finished   {shown} in {seconds:.0f} s   "
            f"[{self.finished}/{self.total} done; {best}]"
        )

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.finished += 1
        self.echo(
            f"trial {trial.trial_id} FAILED     see {trial.path}/error.txt   "
            f"[{self.finished}/{self.total} done]"
        )


def leaderboard(
    rows: Sequence[Mapping[str, Any]], metric: str, limit: int = 10, repeats: int = 1
) -> str:
    """rows: {trial_id, status, metric value, pixel_accuracy?, params, arm?}; sorted best first
    by the caller. The last line is the trivial predictor's score (the `floor/` metrics), when
    known."""

    def shown(value: Any) -> str:
        return f"{value:.4f}" if isinstance(value, float) else "-"

    lines = [f"{'trial':<14}{'status':<12}{metric:>10}{'pixel acc':>11}  params"]
    for row in rows[:limit]:
        lines.append(
            f"{row['trial_id']:<14}{row['status']:<12}{shown(row.get(metric)):>10}"
            f"{shown(row.get('pixel_accuracy')):>11}  "
            + (row["arm"].describe(repeats) if "arm" in row else short(row["params"]))
        )
    floor = next((row for row in rows if isinstance(row.get("floor/miou"), float)), None)
    if floor is not None:
        lines.append(
            f"{'floor':<26}{shown(floor['floor/miou']):>10}"
            f"{shown(floor.get('floor/pixel_accuracy')):>11}  "
            "the majority class everywhere: what a model that learned nothing scores"
        )
    return "\n".join(lines)


def arms_table(verdict: Verdict) -> str:
    """The configurations (best mean first) and the controls: runs, mean with its 95 % interval
    over repeats, the paired difference with every control, and what the arm runs."""
    controls = [arm.control or "" for arm in verdict.controls]
    head = f"{'arm':<16}{'runs':>4}  {verdict.metric + ' mean [95% CI]':<24}"
    head += "".join(f"{'vs ' + name + ', points':<22}" for name in controls)
    lines = [head + "runs what"]
    for arm in verdict.configurations + verdict.controls:
        key = f"control {arm.control}" if arm.control is not None else arm.key
        line = f"{key:<16}{len(arm.values):>4}  {arm.interval.show():<24}"
        for control in controls:
            found = verdict.vs_controls.get((arm.key, control))
            line += f"{found.difference.show_points() if found else '-':<22}"
        lines.append(line + arm.label)
    return "\n".join(lines)
