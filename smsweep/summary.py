"""The end of a sweep: trials ranked, arms judged (`stats.judge`), the parent MLflow run
closed with the verdict (its numbers, and its description in the MLflow UI: `report.note`),
the leaderboard and the verdict printed, the dashboard built."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

from smsweep.engines import tracking
from smsweep.engines.store import Location
from smsweep.engines.tuning import close_stale_study_trials
from smsweep.report.console import Echo, arms_table, leaderboard, pareto_lines
from smsweep.report.note import verdict_note
from smsweep.spec.config import SweepSpec
from smsweep.verdict.arms import score_label
from smsweep.verdict.confirmation import judge_sweep
from smsweep.verdict.stats import ParetoPoint, Verdict, pareto
from smsweep.verdict.variance import components, finetune_scores

FINISHED_FILE = "finished.json"  # written when a sweep has run every trial: `resume` stops there


PARTITION0_SAVED = "cost/partition0_saved_seconds"  # training seconds the partition-0 cache saved


@dataclass
class SweepSummary:
    experiment_dir: Location
    mlflow_uri: str
    rows: list[dict[str, Any]] = field(default_factory=list)  # best first
    interrupted: bool = False
    trial_ids: set[str] = field(default_factory=set)  # every trial Tune knows
    outage: str | None = None  # why the sweep stopped early: MLflow does not answer
    already_finished: bool = False  # `resume` of a sweep that had run every trial
    verdict: Verdict | None = None  # the arms over their repeats, once the sweep has finished

    @property
    def finished(self) -> int:
        return sum(row["status"] == "TERMINATED" for row in self.rows)

    @property
    def exit_code(self) -> int:
        """130 interrupted; 1 when no trial gave a result; else 0."""
        if self.interrupted:
            return 130
        if self.already_finished:
            return 0
        return 0 if self.finished else 1


def finish(
    spec: SweepSpec,
    sweep_run,
    summary: SweepSummary,
    echo: Echo,
    study: tuple[str, str] | None = None,
) -> None:
    search = spec.search
    metric, label = search.score_metric, score_label(search.metric, search.score)
    status = "KILLED" if summary.interrupted else "FINISHED"
    tracking.close_trial_runs(sweep_run, {}, default="KILLED")
    if not summary.interrupted:
        retired = tracking.retire_orphans(sweep_run, summary.trial_ids)
        if retired:
            echo(f"removed {retired} MLflow run(s) of trials restarted under a new id")
        if study is not None:
            close_stale_study_trials(*study)
    best = next((row for row in summary.rows if row.get(metric) is not None), None)
    judged = judge_sweep(
        [(row["arm"], row.get(metric)) for row in summary.rows], metric, search.mode
    )
    summary.verdict = verdict = judged.verdict
    extra = judged.lines()  # after the verdict's own sentences: confirmation, noise
    judged_rows = [row for row in summary.rows if row["arm"].confirming == judged.confirmed]
    noise = components(
        [finetune_scores(row, search.metric) for row in judged_rows], verdict.residual_sd
    )
    if noise is not None:
        extra.append(noise.sentence())
    sentences = verdict.sentences() + extra
    front = [point for point in pareto_points(search, summary.rows) if point.on_front]
    reused = [row.get(PARTITION0_SAVED) or 0.0 for row in summary.rows]
    saved = sum(reused)
    tracking.finish_sweep_run(
        sweep_run,
        status,
        best and {**best, metric: best[metric]},
        metrics=judged.mlflow_metrics()
        | {"partition0_saved_seconds": saved}
        | (noise.mlflow_metrics() if noise is not None else {}),
        tags={"smsweep.verdict": " ".join(sentences)}
        | {
            tracking.NOTE: verdict_note(
                verdict,
                label,
                interrupted=summary.interrupted,
                after=extra,
            )
        }
        | ({"smsweep.best_configuration": verdict.best.name} if verdict.best else {})
        | ({"smsweep.pareto": ",".join(point.key for point in front)} if front else {}),
    )
    echo("")
    echo(leaderboard(summary.rows, metric, repeats=spec.search.repeats, label=label))
    if best is not None:
        echo(f"best trial {best['trial_id']}: {label} {best[metric]:.4f}")
    if judged.search is not None:
        echo("")
        echo("the search (these repeats chose the best):")
        echo(arms_table(judged.search))
        echo("the confirmation, on fresh seeds (the verdict below):")
        echo(arms_table(verdict))
    elif spec.search.repeats > 1 or spec.search.controls:
        echo("")
        echo(arms_table(verdict))
    for sentence in sentences + ([verdict.noise] if verdict.noise and verdict.repeats > 1 else []):
        echo(sentence)
    if front:
        echo(pareto_lines(front, search.objective_metrics, search.objective_modes))
    if saved:
        hits = sum(seconds > 0 for seconds in reused)
        echo(f"partition 0 came from the cache in {hits} trial(s): {saved:.0f} s of training saved")
    echo(f"results: {summary.experiment_dir}")
    try:
        from smsweep.report import build_report

        echo(f"dashboard: {build_report(summary.experiment_dir)}")
    except Exception as error:  # the sweep's results stand without the page
        echo(f"the dashboard could not be built ({error}); retry: python -m smsweep report DIR")
    echo(f"compare runs: mlflow ui --backend-store-uri {summary.mlflow_uri}")
    if summary.interrupted:
        echo(f"interrupted: continue with `python -m smsweep resume {summary.experiment_dir}`")
    elif not any(row["status"] == "ERROR" for row in summary.rows):  # resume would retry those
        finished = {
            "name": summary.experiment_dir.name,
            "trials": len(summary.rows),
            "at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "mlflow_uri": summary.mlflow_uri,
        }
        (summary.experiment_dir / FINISHED_FILE).write_text(json.dumps(finished))


def pareto_points(search, rows: list[dict[str, Any]]) -> list[ParetoPoint]:
    """The arms on the objectives' plane (empty for a single-objective sweep)."""
    if not search.objectives:
        return []
    measured = [(row["arm"].key, row["arm"].label, row, row["arm"].repeat) for row in rows]
    return pareto(measured, search.objective_metrics, search.objective_modes)


def ranked(rows: list[dict[str, Any]], metric: str, mode: str) -> list[dict[str, Any]]:
    sign = -1.0 if mode == "max" else 1.0
    for row in rows:
        if not math.isfinite(row.get(metric, math.nan)):
            row.pop(metric, None)
    return sorted(rows, key=lambda r: (r.get(metric) is None, sign * r.get(metric, 0.0)))
