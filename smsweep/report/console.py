"""What a sweep prints: one line per trial event, and a summary at the end (not Tune's dump)."""

from __future__ import annotations

import logging
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ray import tune

from smsweep.spec.names import PROBE_MIOU
from smsweep.verdict.arms import Arm, short, status_word
from smsweep.verdict.stats import ParetoPoint, Verdict

Echo = Callable[[str], None]
_STATUS = {"shown": False}  # whether a live status line is on the terminal (driver only)


@dataclass(frozen=True)
class Output:
    """How much a sweep prints: `quiet` (trial ends and the summary), the default (every
    partition and validation too), `verbose` (and the engines' own logs: Ray, Tune, MLflow).
    `live`: on a terminal, partition and validation lines share one status line."""

    quiet: bool = False
    verbose: bool = False
    live: bool = False


def quiet_engines() -> None:
    """Ray's, Tune's and MLflow's INFO and WARNING chatter off (errors still show); Ray's own
    logger is set by `ray.init(logging_level=...)` in `cluster.connect`."""
    for name in ("ray.tune", "ray.train", "mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="mlflow")


def say(line: str) -> None:
    """The default echo: print the line now. A module function rather than `print` itself:
    Tune pickles its callbacks with the experiment, and once Ray has forwarded a worker's log to
    this process, `builtins.print` is Ray's wrapper, so the original `print` no longer pickles."""
    if _STATUS["shown"]:
        sys.stdout.write("\r\x1b[K")  # the status line makes way
        _STATUS["shown"] = False
    print(line, flush=True)


def status(line: str) -> None:
    """A live status line: replaced by the next one, cleared by the next `say`."""
    width = shutil.get_terminal_size((100, 20)).columns - 1
    sys.stdout.write("\r\x1b[K" + line[:width])
    sys.stdout.flush()
    _STATUS["shown"] = True


class Progress(tune.Callback):
    """Live progress: a line when a trial starts, per pretraining partition (steps, loss, how
    its masks were scored), per fine-tune validation, and at its end with the sweep's count and
    an estimate of the time left."""

    def __init__(
        self,
        total: int,
        metric: str,
        mode: str,
        echo: Echo = say,
        *,
        repeats: int = 1,
        detail: bool = True,
        live: bool = False,
    ) -> None:
        self.total, self.metric, self.mode, self.echo = total, metric, mode, echo
        self.repeats, self.detail, self.live = repeats, detail, live
        self.started: dict[str, float] = {}
        self.seconds: list[float] = []  # of the trials that ended in this session
        self.best: tuple[float, str] | None = None
        self.peak = 1  # the most trials seen running at once

    def _detail(self, line: str) -> None:
        if not self.detail:
            return
        (status if self.live else self.echo)(line)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.started[trial.trial_id] = time.monotonic()
        self.peak = max(self.peak, sum(t.status == "RUNNING" for t in trials) or 1)
        self.echo(
            f"trial {trial.trial_id} started    {Arm.of(trial.config).describe(self.repeats)}"
        )

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        value = result.get(self.metric)
        if "partition" in result and ("recon_loss" in result or "contrastive_loss" in result):
            self._detail(f"trial {trial.trial_id} {_partition_line(result)}")
        elif value is not None:
            steps = result.get("finetune_steps", "?")
            planned = result.get("plan/finetune_steps")
            steps = f"{steps}/{planned}" if planned else steps
            self._detail(
                f"trial {trial.trial_id} fine-tune step {steps}: {self.metric} {value:.4f}"
            )

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        value = (trial.last_result or {}).get(self.metric)
        seconds = time.monotonic() - self.started.get(trial.trial_id, time.monotonic())
        self.seconds.append(seconds)
        if value is not None:
            better = self.best is None or (
                value > self.best[0] if self.mode == "max" else value < self.best[0]
            )
            if better:
                self.best = (value, trial.trial_id)
        best = f"; best {self.best[0]:.4f} ({self.best[1]})" if self.best else ""
        shown = f"{self.metric} {value:.4f}" if value is not None else "no result"
        failure = (trial.last_result or {}).get("failure")
        if failure:
            shown = f"stopped: {failure}"[:120]
        self.echo(
            f"trial {trial.trial_id} finished   {shown} in {seconds:.0f} s   "
            f"[{self._counts(trials, trial)}{best}]"
        )

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.echo(
            f"trial {trial.trial_id} failed     see {trial.path}/error.txt   "
            f"[{self._counts(trials, trial)}]"
        )

    def _counts(self, trials, ended) -> str:
        """`3/9 done, 1 running; about 2 min left` (from the trials that ended so far)."""
        done = {t.trial_id for t in trials if t.status in ("TERMINATED", "ERROR")}
        done.add(ended.trial_id)
        running = sum(t.status == "RUNNING" and t.trial_id not in done for t in trials)
        line = f"{len(done)}/{self.total} done" + (f", {running} running" if running else "")
        left = self.total - len(done)
        if left > 0 and self.seconds:
            mean = sum(self.seconds) / len(self.seconds)
            line += f"; about {_duration(mean * left / min(self.peak, left))} left"
        return line


def _partition_line(result: Mapping[str, Any]) -> str:
    """`partition 2/3: 80/120 steps, recon loss 0.1234, masks scored on 2 actors (64 images,
    3.1 s)`."""
    partition, partitions = result["partition"], result.get("plan/partitions", "?")
    steps, planned = result.get("pretrain_steps", "?"), result.get("plan/pretrain_steps")
    line = f"partition {partition + 1}/{partitions}: {steps}" + (f"/{planned}" if planned else "")
    if "recon_loss" in result:
        line += f" steps, recon loss {result['recon_loss']:.4f}"
    else:
        line += f" steps, contrastive loss {result['contrastive_loss']:.4f}"
    if result.get("scored_images"):
        actors = result.get("scoring_actors") or 0
        where = f"on {actors} actor{'s' * (actors != 1)}" if actors else "in the trial"
        line += (
            f", masks scored {where} ({result['scored_images']} images, "
            f"{result.get('scoring_seconds', 0.0):.1f} s)"
        )
    return line


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(seconds, 1):.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def leaderboard(
    rows: Sequence[Mapping[str, Any]],
    metric: str,
    limit: int = 10,
    repeats: int = 1,
    label: str | None = None,
) -> str:
    """rows: {trial_id, status, metric value, pixel_accuracy?, probe/miou?, params, arm?};
    sorted best first by the caller. The last line is the trivial predictor's score (the
    `floor/` metrics), when known; `label` (e.g. `miou (last validation)`) heads the table when
    given. With `finetune.probe` the probe's mIoU gets a column beside the ranked metric."""

    def shown(value: Any) -> str:
        return f"{value:.4f}" if isinstance(value, float) else "-"

    probed = metric != PROBE_MIOU and any(isinstance(row.get(PROBE_MIOU), float) for row in rows)
    probe_head = f"{'probe miou':>11}" if probed else ""
    lines = [f"trials ranked by {label}"] if label else []
    lines.append(f"{'trial':<14}{'status':<15}{metric:>10}{'pixel acc':>11}{probe_head}  params")
    for row in rows[:limit]:
        probe = f"{shown(row.get(PROBE_MIOU)):>11}" if probed else ""
        lines.append(
            f"{row['trial_id']:<14}{status_word(row['status']):<15}{shown(row.get(metric)):>10}"
            f"{shown(row.get('pixel_accuracy')):>11}{probe}  "
            + (row["arm"].describe(repeats) if "arm" in row else short(row["params"]))
            + (f"  failed: {row['reason']}" if row.get("reason") else "")
        )
    floor = next((row for row in rows if isinstance(row.get("floor/miou"), float)), None)
    if floor is not None:
        lines.append(
            f"{'floor':<29}{shown(floor['floor/miou']):>10}"
            f"{shown(floor.get('floor/pixel_accuracy')):>11}{' ' * len(probe_head)}  "
            "the majority class everywhere: what a model that learned nothing scores"
        )
    return "\n".join(lines)


def arms_table(verdict: Verdict) -> str:
    """The configurations (best seed-blocked mean first) and the controls: runs, mean with its
    95 % interval over repeats, the seed-blocked mean (what the ranking uses: a failed repeat
    does not move it), the paired difference with every control (95 %, uncorrected; the
    sentences below are corrected for the family), and what the arm runs."""
    controls = [arm.control or "" for arm in verdict.controls]
    arms = verdict.configurations + verdict.controls
    keys = [f"control {arm.control}" if arm.control is not None else arm.key for arm in arms]
    width = max([len("arm"), *map(len, keys)]) + 2
    columns = [f"vs {name}, points" for name in controls]
    shown = {  # every cell of a column, so the widest one sets its width
        (arm.key, control): found.difference.show_points()
        for (arm_key, control), found in verdict.vs_controls.items()
        for arm in arms
        if arm.key == arm_key
    }
    widths = [
        max(
            len(column) + 2,
            22,
            2 + max((len(v) for (_, c), v in shown.items() if c == control), default=0),
        )
        for column, control in zip(columns, controls, strict=True)
    ]
    head = f"{'arm':<{width}}{'runs':>4}  {verdict.metric + ' mean [95% CI]':<24}{'blocked':<9}"
    head += "".join(f"{column:<{w}}" for column, w in zip(columns, widths, strict=True))
    lines = [head + "what"]
    for key, arm in zip(keys, arms, strict=True):
        blocked = f"{arm.blocked:.3f}" if arm.blocked == arm.blocked else "-"  # NaN: no score
        line = f"{key:<{width}}{len(arm.values):>4}  {arm.interval.show():<24}{blocked:<9}"
        for control, w in zip(controls, widths, strict=True):
            line += f"{shown.get((arm.key, control), '-'):<{w}}"
        lines.append(line + arm.label)
    return "\n".join(lines)


def pareto_lines(front: Sequence[ParetoPoint], metrics: Sequence[str], modes: Sequence[str]) -> str:
    """`Pareto front (miou max, cost/device_seconds min): 2 of the arms` and one line per arm
    on it, best first on the first objective."""
    objectives = ", ".join(f"{metric} {mode}" for metric, mode in zip(metrics, modes, strict=True))
    lines = [f"Pareto front ({objectives}):"]
    for point in front:
        values = "  ".join(
            f"{metric} {value:.4g}" for metric, value in zip(metrics, point.means, strict=True)
        )
        doubt = " [within the intervals]" if point.uncertain else ""
        lines.append(f"  {point.key:<16}{values}  ({point.runs} runs){doubt} {point.label}")
    return "\n".join(lines)
