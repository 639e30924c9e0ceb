"""The sweep spec's schema, the sections of how a sweep runs: the search (space, repeats,
controls, objectives), the resources and tracking. See `schema` for the method's sections."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, field_validator, model_validator

from smsweep.spec.distribution import Distribution
from smsweep.spec.names import MLFLOW_SCHEMES
from smsweep.spec.schema import Section, documented


def trial_count(
    num_samples: int,
    controls: int,
    repeats: int,
    confirm: dict[str, int] | None = None,
    racing: dict[str, int] | None = None,
) -> int:
    """Tune trials of a sweep: every configuration and every control, `repeats` times each (with
    `racing`, at most `max_repeats` times each), and with `confirm` ({top, repeats}) the top
    configurations and the controls again on fresh seeds."""
    total = (num_samples + controls) * (racing["max_repeats"] if racing else repeats)
    if confirm:
        total += (min(confirm["top"], num_samples) + controls) * confirm["repeats"]
    return total


def score_key(metric: str, score: str) -> str:
    """The metric a trial is ranked by: `metric` (its last validation), `best/<metric>` or
    `tail/<metric>` (the mean of its last `search.tail` validations)."""
    return metric if score == "last" else f"{score}/{metric}"


class ControlArm(Section):
    name: str = documented(..., "the control's name in tables, tags and MLflow metrics")
    set: dict[str, Any] = documented(
        ..., "dotted key -> value: what this control changes in the spec"
    )

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise ValueError(f"control name {name!r} may hold letters, digits, '_', '.', '-'")
        return name


class Objective(Section):
    metric: str = documented(..., "a metric every trial reports, e.g. miou or cost/device_seconds")
    mode: Literal["max", "min"] = documented(..., "maximise or minimise it")


class ConfirmConfig(Section):
    """After the search: the best configurations and the controls again, on fresh seeds."""

    top: int = documented(
        1,
        "the best configurations of the search (seed-blocked means of the score) that run "
        "again; the verdict picks the best of them, corrected for picking out of `top`",
        ge=1,
        le=100,
    )
    repeats: int = documented(
        3,
        "fresh repeat seeds (numbered after the search's) each of them and every control runs "
        "on; the verdict, its differences and the best configuration come from these runs",
        ge=2,
        le=100,
    )


class RacingConfig(Section):
    """After the search's repeats: more repeats only where they can still decide."""

    max_repeats: int = documented(
        ...,
        "repeats a configuration (and each control) runs at most, the search's included",
        ge=3,
        le=100,
    )
    first_test: int = documented(
        5,
        "repeats before the first test that can drop a configuration (irace: 5)",
        ge=2,
        le=100,
    )


class SearchConfig(Section):
    num_samples: int = documented(
        6, "configurations the sampler proposes (each runs `repeats` times)", ge=1, le=100_000
    )
    repeats: int = documented(
        1,
        "R: runs of every configuration and control, one per repeat seed (weights, masks, "
        "fine-tuning; data and partitions stay); Optuna sees their mean",
        ge=1,
        le=100,
    )
    controls: tuple[str | ControlArm, ...] = documented(
        (),
        "baselines run in every sweep beside the sampler's configurations, R times each: a "
        "strategy name (e.g. none) or {name, set: {key: value}} (see Seeds and controls)",
    )
    max_concurrent: int = documented(
        1, "trials running at once (checked against the cluster)", ge=1, le=10_000
    )
    metric: str = documented("miou", "the metric Optuna optimises")
    mode: Literal["max", "min"] = documented("max", "maximise or minimise the metric")
    objectives: tuple[Objective, ...] = documented(
        (),
        "two or more {metric, mode} for a multi-objective search, e.g. miou max and "
        "cost/device_seconds min: Optuna looks for their Pareto front and the report draws "
        "it; the first sets metric and mode (the leaderboard and the verdict rank by it)",
    )
    score: Literal["last", "best", "tail"] = documented(
        "last",
        "a trial's score: its last validation (steady after an annealed schedule), its best "
        "one (`best/<metric>`: chosen on the validation split, so optimistic) or the mean of "
        "its last `tail` validations (`tail/<metric>`: steadier than one, see Seeds and "
        "controls); Optuna, the leaderboard and the report all use it",
    )
    tail: int = documented(
        3, "score: tail: how many of the last validations are averaged", ge=2, le=100
    )
    confirm: ConfirmConfig | None = documented(
        None,
        "{top, repeats}: once the search has run, its `top` configurations and every control "
        "run again on `repeats` fresh seeds, the verdict comes from those (free of the "
        "winner's curse) and the search's estimate is shown beside it; Optuna sees only the "
        "search; null: the verdict is judged on the repeats that chose the best (see Seeds "
        "and controls)",
    )
    racing: RacingConfig | None = documented(
        None,
        "{max_repeats, first_test}: after the search's `repeats`, the configurations not yet "
        "told apart from the best and the controls run one more repeat seed per round, and a "
        "configuration the best is declared above (paired t-tests, Holm) leaves the race, "
        "until one is left or each has max_repeats; Optuna sees the search's repeats (see "
        "Seeds and controls)",
    )
    scheduler: Literal["fifo", "asha"] = documented("fifo", "asha stops weak trials early")
    sampler: Literal["tpe", "random", "grid"] = documented(
        "tpe",
        "Optuna sampler; grid: every distinct combination of `choice` values once (`when` "
        "respected); tpe also searches several search.objectives (multi-objective TPE)",
    )
    grace_period: int = documented(
        1, "asha: fine-tuning validations before a trial may be stopped", ge=1
    )
    max_failures: int = documented(
        1, "retries of a failed trial (it continues from its last checkpoint)", ge=0, le=100
    )
    reuse_partition0: bool = documented(
        True,
        "partition 0 (the random warm-up of pretrain.warmup_masks, whatever masking.* is) is "
        "trained once per repeat seed for trials with the same data, model and pretrain "
        "section: the others start at partition 1 from the storage's partition0/ cache, with "
        "the same final weights (`python -m smsweep cache` lists and prunes it)",
    )
    space: dict[str, Distribution] = documented({}, "dotted key -> distribution (see Search space)")
    storage: str | None = documented(
        None,
        "Optuna storage URL of the sweep's study, named after the sweep (default: sqlite "
        "optuna.db in the experiment directory; a database URL on a cluster; required when "
        "--storage is an object store and the sweep searches); `optuna-dashboard URL` opens it",
    )

    @model_validator(mode="before")
    @classmethod
    def _first_objective_is_the_metric(cls, raw: Any) -> Any:
        """search.objectives' first entry sets metric and mode unless the spec sets them."""
        if not isinstance(raw, dict) or not raw.get("objectives"):
            return raw
        first = raw["objectives"][0]
        first = first.model_dump() if isinstance(first, BaseModel) else first
        if not isinstance(first, dict):
            return raw  # the field's own validation says what is wrong
        filled = dict(raw)
        for key in ("metric", "mode"):
            if key in first and key not in raw:
                filled[key] = first[key]
        return filled

    @property
    def objective_metrics(self) -> tuple[str, ...]:
        """What Optuna optimises: the ranked metric, then the other objectives' metrics."""
        return (self.score_metric, *(o.metric for o in self.objectives[1:]))

    @property
    def objective_modes(self) -> tuple[str, ...]:
        return (self.mode, *(o.mode for o in self.objectives[1:]))

    @property
    def score_metric(self) -> str:
        """The metric trials are ranked by (`metric`, or `best/<metric>` with score: best)."""
        return score_key(self.metric, self.score)

    @property
    def searches(self) -> bool:
        """Whether the sweep has a searcher, and so an Optuna study: a space to sample, repeats
        or controls."""
        return bool(self.space or self.repeats > 1 or self.controls or self.confirm or self.racing)

    @property
    def trials(self) -> int:
        """Tune trials of the sweep: every configuration and control, `repeats` times each."""
        confirm = self.confirm.model_dump() if self.confirm else None
        racing = self.racing.model_dump() if self.racing else None
        return trial_count(self.num_samples, len(self.controls), self.repeats, confirm, racing)

    @property
    def all_repeats(self) -> int:
        """Repeat seeds of the sweep, at most: the search's (a race's), then the
        confirmation's."""
        searched = self.racing.max_repeats if self.racing else self.repeats
        return searched + (self.confirm.repeats if self.confirm else 0)


class ResourcesConfig(Section):
    cpus_per_trial: float = documented(1.0, "CPUs of the trial's own process", ge=0, le=1024)
    gpus_per_trial: float = documented(
        0.0,
        "GPUs of a trial: whole GPUs in equal shares for its Train workers (DDP), or a fraction "
        "with one worker or train_workers: 0",
        ge=0,
        le=64,
    )
    train_workers: int = documented(
        1,
        "Ray Train workers (DDP) per trial; 0: the trial's own process trains (no Train "
        "start-up, ~15 s less per trial; one worker with cpus_per_trial CPUs and "
        "gpus_per_trial GPUs; for small machines)",
        ge=0,
        le=1024,
    )
    cpus_per_worker: float = documented(1.0, "CPUs per Train worker", gt=0, le=1024)
    scoring_actors: int = documented(
        1, "Ray actors scoring patches between partitions (0: in-process)", ge=0, le=1024
    )
    cpus_per_actor: float = documented(1.0, "CPUs per scoring actor", gt=0, le=1024)
    gpus_per_actor: float = documented(0.0, "GPU fraction per scoring actor", ge=0, le=1)
    data_workers: int = documented(
        0,
        "DataLoader worker processes per training process (the trial's with train_workers: 0, "
        "else each Train worker's) loading and augmenting images; they share that process's "
        "CPUs (not reserved from Ray: raise cpus_per_worker or cpus_per_trial to match); the "
        "same batches as 0 (in-process loading)",
        ge=0,
        le=64,
    )
    pin_memory: Literal["auto", True, False] = documented(
        "auto",
        "load batches into pinned memory and copy them to the GPU without blocking; auto: on "
        "when training on CUDA; pinning has no effect on the CPU",
    )
    autoscale_cpus: float | None = documented(
        None,
        "CPUs an autoscaling cluster can grow to (its nodes' max_workers x CPUs); set, the "
        "capacity check counts these instead of the CPUs up now, and trials wait for nodes",
        gt=0,
    )
    autoscale_gpus: float | None = documented(
        None, "GPUs an autoscaling cluster can grow to (as autoscale_cpus)", ge=0
    )


class TrackingConfig(Section):
    mlflow_uri: str = documented(
        "sqlite:///mlflow.db", "MLflow tracking URI (sqlite, file, http(s), ...)"
    )
    experiment: str | None = documented(None, "MLflow experiment (default: the sweep's name)")
    keep_checkpoints: int = documented(
        1,
        "checkpoints kept per trial while it trains (resume needs the newest); a finished "
        "trial keeps its last one, with the final weights and without the optimizer state",
        ge=1,
        le=1000,
    )

    @field_validator("mlflow_uri")
    @classmethod
    def _supported_scheme(cls, uri: str) -> str:
        scheme = uri.split(":", 1)[0].split("+", 1)[0].lower() if ":" in uri else ""
        if scheme not in MLFLOW_SCHEMES:
            raise ValueError(
                f"unsupported MLflow tracking URI {uri!r}; use one of the schemes "
                f"{', '.join(MLFLOW_SCHEMES)} (e.g. sqlite:///mlflow.db or http://host:5000)"
            )
        return uri
