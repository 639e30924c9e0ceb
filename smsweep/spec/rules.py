"""Cross-field rules of the sweep spec: what each key allows alone is in the schema
(schema.py, search_schema.py); what keys allow together is here, one short function per
subject, each problem said with its fix. `config.SweepSpec` runs them all once, at validation."""

from __future__ import annotations

from typing import Protocol

from smsweep.spec import registry
from smsweep.spec.names import (
    FIXED_NUM_CLASSES,
    GENERATED_CLASSES,
    GENERATED_SOURCES,
    PROBE_PREFIX,
    ROBUST_MEAN,
    ROBUST_PREFIX,
)
from smsweep.spec.schema import (
    DataConfig,
    FinetuneConfig,
    MaskingConfig,
    ModelConfig,
    MrmConfig,
    PretrainConfig,
    RobustnessConfig,
)
from smsweep.spec.search_schema import ResourcesConfig, SearchConfig


class Spec(Protocol):
    """The sections the rules read (a `config.SweepSpec`)."""

    repeat: int
    data: DataConfig
    model: ModelConfig
    pretrain: PretrainConfig
    masking: MaskingConfig
    finetune: FinetuneConfig
    mrm: MrmConfig
    robustness: RobustnessConfig
    search: SearchConfig
    resources: ResourcesConfig


def problems(spec: Spec) -> list[str]:
    """What is wrong between the keys of a spec whose keys are each valid (empty: nothing)."""
    return [
        *search_problems(spec),
        *patch_size_problems(spec),
        *resource_problems(spec.resources),
        *objective_problems(spec),
        *model_problems(spec),
        *data_problems(spec),
        *measured_metric_problems(spec),
    ]


def search_problems(spec: Spec) -> list[str]:
    """The scheduler, the objectives and the repeat against the search."""
    search = spec.search
    problems: list[str] = []
    if search.scheduler == "asha" and (search.repeats > 1 or search.controls):
        problems.append(
            "search.scheduler: asha stops trials early, so the repeats of a configuration and "
            "its controls would end at different budgets and their mean and paired differences "
            "would mix them; use scheduler: fifo with search.repeats or search.controls"
        )
    if search.objectives:
        first = search.objectives[0]
        if len(search.objectives) < 2:
            problems.append(
                "search.objectives needs two or more objectives (one is search.metric and "
                "search.mode); add one such as {metric: cost/device_seconds, mode: min}"
            )
        if (first.metric, first.mode) != (search.metric, search.mode):
            problems.append(
                f"search.metric {search.metric} ({search.mode}) differs from the first of "
                f"search.objectives, {first.metric} ({first.mode}); leave metric and mode out "
                "(the first objective sets them) or make them agree"
            )
        metrics = [o.metric for o in search.objectives]
        if len(set(metrics)) < len(metrics):
            problems.append("search.objectives names a metric twice; give each metric once")
        if search.scheduler == "asha":
            problems.append(
                "search.scheduler: asha stops trials on one metric, and the other objectives "
                "(e.g. cost) are known only when a trial ends; use scheduler: fifo"
            )
    if spec.repeat >= search.all_repeats and search.all_repeats > 1:
        problems.append(
            f"repeat {spec.repeat} is not one of the {search.all_repeats} repeats "
            f"(0..{search.all_repeats - 1}); the sweep sets it, leave it out of the spec"
        )
    if search.racing is not None:
        racing = search.racing
        if racing.max_repeats <= search.repeats:
            problems.append(
                f"search.racing.max_repeats {racing.max_repeats} must be more than "
                f"search.repeats {search.repeats} (the repeats every configuration runs before "
                "the race); raise it or drop search.racing"
            )
        if racing.first_test > racing.max_repeats:
            problems.append(
                f"search.racing.first_test {racing.first_test} is more than max_repeats "
                f"{racing.max_repeats}: no test would ever drop a configuration; lower it"
            )
        if search.num_samples < 2:
            problems.append(
                "search.racing races configurations against each other: it needs "
                "search.num_samples of 2 or more"
            )
        if search.scheduler == "asha":
            problems.append(
                "search.racing adds whole repeats, and asha would stop them early; use "
                "scheduler: fifo with search.racing"
            )
    if search.confirm is not None:
        if search.confirm.top > search.num_samples:
            problems.append(
                f"search.confirm.top {search.confirm.top} is more than the "
                f"{search.num_samples} configurations the search proposes; lower it to at most "
                "search.num_samples"
            )
        if search.scheduler == "asha":
            problems.append(
                "search.confirm runs whole trials on fresh seeds, and asha would stop them "
                "early against the search's trials; use scheduler: fifo with search.confirm"
            )
    return problems


def patch_size_problems(spec: Spec) -> list[str]:
    """Patch sizes against the image size."""
    data, masking = spec.data, spec.masking
    problems: list[str] = []
    if data.image_size % masking.patch_size:
        problems.append(
            f"masking.patch_size {masking.patch_size} must divide data.image_size "
            f"{data.image_size}; pick a divisor such as {divisors_hint(data.image_size)}"
        )
    warmup = spec.pretrain.warmup_masks
    if data.image_size % warmup.patch_size:
        problems.append(
            f"pretrain.warmup_masks.patch_size {warmup.patch_size} (partition 0's random "
            f"masks) must divide data.image_size {data.image_size}; set "
            f"pretrain.warmup_masks.patch_size to a divisor such as "
            f"{divisors_hint(data.image_size)}"
        )
    if masking.strategy == "mixed" and data.image_size % masking.mixed.patch_size:
        problems.append(
            f"masking.mixed.patch_size {masking.mixed.patch_size} must divide data.image_size "
            f"{data.image_size}; pick a divisor such as {divisors_hint(data.image_size)}"
        )
    return problems


def resource_problems(resources: ResourcesConfig) -> list[str]:
    """GPUs per Train worker, CPUs of a trial that trains itself."""
    problems: list[str] = []
    if resources.train_workers > 1 and resources.gpus_per_trial > 0:
        per_worker = resources.gpus_per_trial / resources.train_workers
        if per_worker < 1 or per_worker != int(per_worker):
            problems.append(
                f"resources.gpus_per_trial {resources.gpus_per_trial} gives each of the "
                f"{resources.train_workers} Train workers {per_worker:g} GPUs, but DDP needs whole "
                "GPUs per worker (two ranks on one GPU fail in NCCL); set gpus_per_trial to a "
                f"multiple of train_workers, e.g. {resources.train_workers}, or train_workers: 1 "
                "to share a GPU"
            )
    if resources.train_workers == 0 and resources.cpus_per_trial == 0:
        problems.append(
            "resources.train_workers: 0 trains in the trial's own process, which has no CPUs: "
            "set resources.cpus_per_trial (e.g. 2 on a laptop)"
        )
    return problems


def objective_problems(spec: Spec) -> list[str]:
    """Masking refresh and pretrain.objective against the strategy and fill."""
    masking = spec.masking
    problems: list[str] = []
    entry = registry.strategy(masking.strategy)
    if masking.refresh != "auto" and masking.refresh not in entry.refresh:
        allowed = [name for name, e in registry.STRATEGIES.items() if masking.refresh in e.refresh]
        problems.append(
            f"masking.refresh: {masking.refresh} is not one of {masking.strategy}'s refresh "
            f"modes ({', '.join(entry.refresh)}); {', '.join(allowed)} allow it, else use "
            "refresh: auto"
        )
    objective = spec.pretrain.objective
    if objective not in entry.objectives:
        problems.append(
            f"masking.strategy: {masking.strategy} cannot mask for pretrain.objective: "
            f"{objective}; use one of {', '.join(registry.for_objective(objective))}"
        )
    if objective == "contrastive":
        if masking.fill == "token" or masking.token_stage is not None:
            problems.append(
                "pretrain.objective: contrastive feeds the encoder directly, without the "
                "reconstruction model's mask token; use masking.fill mean, blur, highpass, zero "
                "or noise and no masking.token_stage"
            )
        if masking.refresh == "partition":
            problems.append(
                "pretrain.objective: contrastive masks each augmented query view as it is drawn "
                "(a mask per partition would not match the crops); use masking.refresh: auto"
            )
    return problems


def model_problems(spec: Spec) -> list[str]:
    """Stages (MRM, mask token) and strides against the encoder's depth."""
    data, masking, model = spec.data, spec.masking, spec.model
    problems: list[str] = []
    finetune = spec.finetune
    if finetune.loss == "lovasz" and finetune.class_weights != "none":
        problems.append(
            "finetune.loss: lovasz takes no class weights (the Lovasz-softmax averages over "
            "classes already); use finetune.class_weights: none, or loss ce, ce_dice or focal"
        )
    if finetune.freeze_encoder and spec.mrm.enabled:
        problems.append(
            "finetune.freeze_encoder keeps the encoder as pretrained, and mrm.enabled trains "
            "the encoder's features: use one of them (mrm.enabled: false for a probe)"
        )
    if finetune.probe and finetune.freeze_encoder:
        problems.append(
            "finetune.probe trains a frozen-encoder probe beside the fine-tune, and with "
            "finetune.freeze_encoder the fine-tune is such a probe already: use one of them"
        )
    if spec.mrm.stage is not None and spec.mrm.stage > model.encoder_depth:
        problems.append(
            f"mrm.stage {spec.mrm.stage} is deeper than model.encoder_depth "
            f"{model.encoder_depth}; use a stage in 1..{model.encoder_depth}"
        )
    stride = 2**model.encoder_depth
    if data.image_size % stride:
        problems.append(
            f"data.image_size {data.image_size} must be a multiple of {stride} for a U-Net with "
            f"model.encoder_depth {model.encoder_depth}; use a multiple of {stride} or a "
            "smaller depth"
        )
    if masking.token_stage is not None and masking.fill == "token":
        problems.append(
            "masking.fill: token already puts the learnable token at the input (stage 0); with "
            "masking.token_stage set, use another input fill such as mean"
        )
    elif masking.token_stage is not None:
        if masking.token_stage > model.encoder_depth:
            problems.append(
                f"masking.token_stage {masking.token_stage} is deeper than model.encoder_depth "
                f"{model.encoder_depth}; use a stage in 0..{model.encoder_depth}"
            )
        else:
            stride = 2**masking.token_stage
            sizes = {
                "masking.patch_size": masking.patch_size,
                "pretrain.warmup_masks.patch_size": spec.pretrain.warmup_masks.patch_size,
            }
            if masking.strategy == "mixed":
                sizes["masking.mixed.patch_size"] = masking.mixed.patch_size
            problems += [
                f"{key} {size} must be a multiple of the stride {stride} of masking.token_stage "
                f"{masking.token_stage}; use a multiple of {stride} or an earlier stage"
                for key, size in sizes.items()
                if size % stride
            ]
    return problems


def data_problems(spec: Spec) -> list[str]:
    """Each data source, and the pretraining images against the partitions."""
    data = spec.data
    problems: list[str] = []
    problems += source_problems(data, "data")
    cross = spec.pretrain.data
    if cross is not None:
        problems += source_problems(cross, "pretrain.data")
        if cross.image_size != data.image_size:
            problems.append(
                f"pretrain.data.image_size {cross.image_size} differs from data.image_size "
                f"{data.image_size}: the pretrained weights and masks are for one image size; "
                f"set pretrain.data.image_size: {data.image_size}"
            )
    if cross is not None and cross.source in GENERATED_SOURCES:
        if cross.num_images < spec.pretrain.partitions:
            problems.append(
                f"pretrain.partitions {spec.pretrain.partitions} exceeds the "
                f"{cross.num_images} pretraining images of pretrain.data; raise "
                "pretrain.data.num_images or lower pretrain.partitions"
            )
    elif cross is None and data.source in GENERATED_SOURCES:
        pretrain_images = data.num_images - max(1, round(data.num_images * data.val_fraction))
        if pretrain_images < spec.pretrain.partitions:
            problems.append(
                f"pretrain.partitions {spec.pretrain.partitions} exceeds the {pretrain_images} "
                f"pretraining images; raise data.num_images or lower pretrain.partitions"
            )
    return problems


def measured_metric_problems(spec: Spec) -> list[str]:
    """A robust/ or probe/ search metric against the settings that measure it."""
    search = spec.search
    problems: list[str] = []
    probed = [
        metric
        for metric in (search.metric, *(objective.metric for objective in search.objectives))
        if metric.startswith(PROBE_PREFIX)
    ]
    if probed and not spec.finetune.probe:
        problems.append(
            f"{probed[0]} is measured only with finetune.probe: true (a frozen-encoder probe "
            "beside the fine-tune); set it, or rank by the fine-tune's metric"
        )
    robustness = spec.robustness
    if search.metric.startswith("robust/"):
        known = [ROBUST_MEAN, *(ROBUST_PREFIX + factor for factor in robustness.factors)]
        if not robustness.enabled:
            problems.append(
                f"search.metric {search.metric} is measured only with robustness.enabled: true; "
                "enable it or rank by another metric"
            )
        elif search.metric not in known:
            problems.append(
                f"search.metric {search.metric!r} is not measured; with robustness.factors "
                f"{list(robustness.factors)} use one of {', '.join(known)}"
            )
    return problems


def source_problems(data: DataConfig, key: str) -> list[str]:
    """What is wrong between the keys of one data source (`key`: data or pretrain.data)."""
    problems = []
    fixed = FIXED_NUM_CLASSES.get(data.source)
    if fixed is not None and data.num_classes != fixed:
        problems.append(
            f"{key}.num_classes is {data.num_classes} but source {data.source!r} has {fixed} "
            f"classes; set {key}.num_classes: {fixed}"
        )
    low, high = GENERATED_CLASSES.get(data.source, (2, 1000))
    if not low <= data.num_classes <= high:
        problems.append(
            f"{key}.num_classes {data.num_classes} is out of range for the {data.source} source; "
            f"use {low}..{high}"
        )
    if data.source not in GENERATED_SOURCES and not data.path:
        problems.append(f"{key}.path is required for source {data.source!r}; set it to the root")
    return problems


def divisors_hint(size: int) -> str:
    divisors = [d for d in range(2, min(size, 64) + 1) if size % d == 0]
    return ", ".join(map(str, divisors[-4:])) or "1"
