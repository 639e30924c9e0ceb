"""Everything checked before a sweep writes anything: spec, search space, names, data, resources.

`check_all` is what `validate` and `run` call first. It reads files but never writes one, so a
failing check leaves no storage directory, no MLflow database and no stray file behind. The
checks at the end (`check_metric`, `check_object_store`, `check_study_is_new`) need what only
`run` has (the opened data source, the storage, the study's database); the driver makes them
before its first write.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smsweep.engines.store import Location
from smsweep.errors import SpecError
from smsweep.spec.config import SweepSpec
from smsweep.spec.load import load_spec, resolve
from smsweep.spec.names import PROBE_PREFIX, ROBUST_MEAN, ROBUST_PREFIX
from smsweep.spec.space import control_params
from smsweep.trial.budget import Budget, budget_warnings, trial_budget
from smsweep.trial.reports import FINETUNE_METRICS
from smsweep.trial.resources import check_fits, local_capacity, trial_demand
from smsweep.verdict.arms import short, trials_line

# Searched keys that change a trial's budget (the data keys through its splits).
BUDGET_KEYS = ("pretrain.", "finetune.", "masking.strategy", "data.val_fraction", "data.label_")
_MAX_BUDGETS = 256


@dataclass(frozen=True)
class Checked:
    spec: SweepSpec
    source: Any  # the opened data source
    splits: Any  # smsweep.method.data.splits.Splits
    concurrency: int


def check_all(
    spec_path: Path, overrides: list[str], capacity: tuple[float, float] | None = None
) -> Checked:
    """Validate everything; `capacity` (CPUs, GPUs) defaults to this machine's."""
    spec = load_spec(spec_path, overrides)
    check_names(spec)
    from smsweep.method.data import open_source
    from smsweep.method.data.pretraining import trial_splits

    source = open_source(spec.data, seed=spec.seed)
    splits = trial_splits(spec, source)
    if capacity is None:
        autoscale = spec.resources.autoscale_cpus, spec.resources.autoscale_gpus
        if autoscale != (None, None):
            raise SpecError(
                "resources.autoscale_cpus / autoscale_gpus describe an autoscaling Ray cluster, "
                "but this sweep starts a local Ray, which does not scale; pass --address of the "
                "cluster (or RAY_ADDRESS), or remove them"
            )
        capacity = local_capacity(need_gpus=trial_demand(spec.resources).gpus > 0)
    concurrency = check_fits(spec, *capacity, where="this machine")
    return Checked(spec=spec, source=source, splits=splits, concurrency=concurrency)


def check_names(spec: SweepSpec) -> None:
    """Names that live in registries outside the spec: the encoder, the losses, weight files."""
    import segmentation_models_pytorch as smp

    from smsweep.method.losses import LOSSES

    encoders = sorted(smp.encoders.get_encoder_names())
    searched = spec.search.space.get("model.encoder")
    names = [spec.model.encoder, *(searched.choice or () if searched else ())]
    for name in names:
        if name not in encoders:
            near = difflib.get_close_matches(str(name), encoders, n=3)
            raise SpecError(
                f"model.encoder {name!r} is not a segmentation-models-pytorch encoder; "
                f"did you mean {' or '.join(near) if near else 'resnet18'}? "
                "(`python -c 'import segmentation_models_pytorch as smp; "
                "print(smp.encoders.get_encoder_names())'` lists them)"
            )
    weights = spec.model.encoder_weights
    if weights is not None and not Path(weights).is_file():
        raise SpecError(
            f"model.encoder_weights {weights!r} is not a file; give a local weights file "
            "(nothing is downloaded) or leave it empty to start from random weights"
        )
    losses = spec.pretrain.loss
    for name in [losses] if isinstance(losses, str) else list(losses):
        if name not in LOSSES:
            near = difflib.get_close_matches(name, list(LOSSES), n=1)
            hint = f"did you mean {near[0]!r}? " if near else ""
            raise SpecError(
                f"pretrain.loss {name!r} is not a known loss; {hint}"
                f"valid: {', '.join(sorted(LOSSES))}"
            )


def trial_budgets(spec: SweepSpec, source: Any) -> list[Budget]:
    """The budgets trials of this sweep can have: the spec's own, then one per combination of
    the searched values that change it (at most a few hundred)."""
    import itertools

    from smsweep.method.data.pretraining import trial_splits

    searched = {
        key: dist.values_to_check()
        for key, dist in spec.search.space.items()
        if key.startswith(BUDGET_KEYS)
    }
    combos = [
        dict(zip(searched, values, strict=True)) for values in itertools.product(*searched.values())
    ]
    budgets = []
    for params in [{}, *combos[:_MAX_BUDGETS]]:
        trial = resolve(spec, params)
        splits = trial_splits(trial, source)
        budgets.append((trial, trial_budget(trial, splits)))
    return budgets


def budget_lines(spec: SweepSpec, source: Any) -> list[str]:
    """Per trial: images per split and partition, optimizer steps per phase (the range over the
    search space when it changes them), then a warning per phase too short to learn."""
    budgets = trial_budgets(spec, source)
    _, base = budgets[0]
    lines = [f"  {line}" for line in base.lines()]
    pretraining = [b.pretrain_steps for _, b in budgets if b.pretrains]
    finetuning = [b.finetune_steps for _, b in budgets]
    if len(set(pretraining)) > 1 or len(set(finetuning)) > 1:
        lines.append(
            "  across the search space: "
            + (f"pretraining {_span(pretraining)} steps, " if pretraining else "")
            + f"fine-tuning {_span(finetuning)} steps"
        )
    warnings = []
    for trial, budget in budgets:
        warnings += [w for w in budget_warnings(trial, budget) if w not in warnings]
    return lines + [f"  warning: {warning}" for warning in warnings]


def _span(values: list[int]) -> str:
    return str(min(values)) if min(values) == max(values) else f"{min(values)}-{max(values)}"


def describe(checked: Checked) -> str:
    spec, splits = checked.spec, checked.splits
    demand = trial_demand(spec.resources)
    space = spec.search.space
    lines = [
        f"ok: sweep {spec.name!r} is valid",
        f"  data: {spec.data.source}, {len(checked.source)} images at {spec.data.image_size}px, "
        f"{len(splits.pretrain_partitions)} pretraining partitions, "
        f"{len(splits.train)} train / {len(splits.val)} val labeled",
        "  pretraining: "
        + (
            f"cross, on {spec.pretrain.data.source} ({len(splits.pretrain)} images)"
            if spec.pretrain.data is not None
            else f"self, on the {len(splits.pretrain)} non-validation images of data"
        ),
        f"  trials: {trials_line(spec.search)}, {checked.concurrency} at a time, "
        f"each {demand.breakdown}",
        "  search: "
        + (
            ", ".join(f"{key} ~ {dist.kind}{list(dist.args)}" for key, dist in space.items())
            or "nothing searched"
        ),
        *(
            [
                "  controls: "
                + ", ".join(f"{name} ({short(params)})" for name, params in controls.items())
            ]
            if (controls := control_params(spec))
            else []
        ),
        "  per trial:",
        *(f"  {line}" for line in budget_lines(spec, checked.source)),
    ]
    return "\n".join(lines)


COST_METRICS = ("cost/seconds", "cost/device_seconds", "cost/scoring_share")  # at a trial's end


def check_study_is_new(url: str, name: str) -> None:
    """A new sweep must not continue another sweep's study in a shared storage."""
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return  # a new file: nothing to collide with, and nothing written here
    import optuna  # only a sweep with a study storage pays for the import

    try:
        names = optuna.study.get_all_study_names(storage=url)
    except Exception as error:
        raise SpecError(
            f"search.storage {url!r} cannot be opened ({str(error).splitlines()[0]}); give an "
            "Optuna storage URL such as sqlite:///studies.db or postgresql://host/db"
        ) from None
    if name in names:
        raise SpecError(
            f"the Optuna storage {url} already holds a study named {name!r}; choose another "
            "--name, or continue that sweep with `python -m smsweep resume`"
        )


def check_object_store(spec: SweepSpec, storage: Location) -> None:
    """What an object store as --storage cannot hold: the default sqlite Optuna study."""
    if spec.search.searches and not spec.search.storage:
        raise SpecError(
            f"with --storage {storage} (an object store) the Optuna study cannot live beside "
            "the sweep (sqlite needs a filesystem); set search.storage to a database URL the "
            "driver reaches (e.g. postgresql://host/db on a cluster, or sqlite:///optuna.db "
            "on this machine), e.g. --set search.storage=sqlite:///optuna.db"
        )


def check_metric(spec: SweepSpec, class_names: tuple[str, ...]) -> None:
    known = [*FINETUNE_METRICS, *(f"iou/{name}" for name in class_names)]
    if spec.finetune.probe:  # the rules say when a probe/ metric lacks the probe
        known += [PROBE_PREFIX + metric for metric in known]
    robustness = spec.robustness  # the rules check a robust metric against its factors
    if robustness.enabled:
        known += [ROBUST_MEAN, *(ROBUST_PREFIX + factor for factor in robustness.factors)]
    if spec.search.metric not in known:
        raise SpecError(
            f"search.metric {spec.search.metric!r} is not reported by a trial; use one of "
            f"{', '.join(known)}"
        )
    for objective in spec.search.objectives[1:]:
        if objective.metric not in (*known, *COST_METRICS):
            raise SpecError(
                f"search.objectives metric {objective.metric!r} is not reported by a trial; "
                f"use one of {', '.join((*known, *COST_METRICS))}"
            )
