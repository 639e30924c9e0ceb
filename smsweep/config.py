"""The sweep spec's schema: typed, frozen sections, each key with its bounds and documentation.

A spec is a YAML file with the sections below. Every key is checked: an unknown key names the
nearest valid one, a wrong type or an out-of-range value names the legal range (explain.py).
What keys allow together is in rules.py; reading, overriding and validating a file, with the
search space, is in spec.py. Nothing here imports torch, Ray or MLflow: validating a spec is cheap
and has no side effects.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from smsweep import rules
from smsweep.arms import score_key, trial_count
from smsweep.distribution import Distribution
from smsweep.explain import flatten
from smsweep.names import (  # noqa: F401  (the vocabulary, where readers of the schema look)
    FACTORS,
    FILLS,
    GENERATED_CLASSES,
    GENERATED_SOURCES,
    MLFLOW_SCHEMES,
    MODEL_BASED,
    SOURCES,
    STRATEGIES,
    Factor,
    Strategy,
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _f(default: Any, doc: str, **bounds: Any) -> Any:
    """A field with its documentation (rendered into docs/spec-reference.md)."""
    return Field(default, description=doc, **bounds)


class DataConfig(_Section):
    source: Literal["synthetic", "textures", "folder", "voc", "cityscapes"] = _f(
        "synthetic",
        "where images come from: generated shapes (synthetic) or texture mosaics (textures), or "
        "folder/voc/cityscapes read from `path`",
    )
    path: str | None = _f(None, "dataset root (required unless the source is generated)")
    image_size: int = _f(64, "square side the pipeline resizes/crops to", ge=16, le=4096)
    num_classes: int = _f(
        5,
        "segmentation classes (voc 21, cityscapes 19, synthetic 3..8, textures 2..8)",
        ge=2,
        le=1000,
    )
    skip_bad: bool = _f(False, "skip unreadable images (one warning lists them) instead of failing")
    num_images: int = _f(
        128, "generated sources (synthetic, textures): how many images", ge=4, le=1_000_000
    )
    val_fraction: float = _f(0.2, "labeled images held out for validation", gt=0, le=0.9)
    label_fraction: float = _f(
        1.0, "of the other labeled images, the share used to fine-tune", gt=0, le=1
    )
    augment: bool = _f(
        True,
        "albumentations flips/crops/colour jitter when fine-tuning (pretraining uses a fixed crop "
        "so that precomputed masks cover the pixels they were scored on)",
    )


class ModelConfig(_Section):
    encoder: str = _f("resnet18", "a segmentation-models-pytorch encoder name")
    encoder_weights: str | None = _f(
        None, "a local encoder weights file (e.g. ImageNet); nothing is ever downloaded"
    )
    encoder_depth: int = _f(
        5, "U-Net depth; data.image_size must be a multiple of 2**depth", ge=3, le=5
    )
    decoder_channels: tuple[int, ...] | None = _f(
        None, "decoder widths, one per depth level (default: smp's)"
    )
    channels_last: bool = _f(
        True,
        "run the convolutions in channels-last (NHWC) memory layout: same results within float "
        "rounding, faster on CPUs and tensor-core GPUs",
    )
    precision: Literal["auto", "fp32", "bf16"] = _f(
        "auto",
        "forward passes of pretraining, mask scoring and fine-tuning: bf16 autocast or float32; "
        "weights, optimizer steps, losses and loss maps stay float32; auto: bf16 on a CUDA "
        "device that runs it natively (compute capability 8.0+), fp32 elsewhere",
    )

    @field_validator("decoder_channels")
    @classmethod
    def _positive_channels(cls, value: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if value is not None and (not value or min(value) < 1):
            raise ValueError("decoder_channels must be a non-empty list of positive integers")
        return value


Schedule = Literal["constant", "cosine"]


class ContrastiveConfig(_Section):
    dim: int = _f(128, "size of the projected, normalised embedding", ge=8, le=4096)
    queue: int = _f(1024, "past keys kept as negatives (MoCo's queue)", ge=1, le=1_000_000)
    momentum: float = _f(0.99, "key encoder: exponential moving average of the query's", ge=0, lt=1)
    temperature: float = _f(0.2, "InfoNCE temperature", gt=0, le=10)
    hard_negatives: bool = _f(
        True,
        "add each image's key view with most of its salient region masked as a negative",
    )
    hard_ratio: float = _f(
        0.8, "share of the patches a hard negative masks, salient ones first", gt=0, lt=1
    )
    saliency_weights: str | None = _f(
        None,
        "a local file of encoder weights for the frozen saliency network; default: a frozen "
        "copy of the encoder taken at the start of each partition",
    )


class PretrainConfig(_Section):
    objective: Literal["reconstruction", "contrastive"] = _f(
        "reconstruction",
        "reconstruction (masked pixels, `loss`) or contrastive (MoCo-v2 with the masks on the "
        "query branch only, see pretrain.contrastive)",
    )
    contrastive: ContrastiveConfig = ContrastiveConfig()
    partitions: int = _f(10, "P: the unlabeled images are split into P partitions", ge=1, le=1000)
    epochs_per_partition: int | None = _f(
        None,
        "passes over each partition (default 1 when steps_per_partition is not set either)",
        ge=1,
        le=100_000,
    )
    steps_per_partition: int | None = _f(
        None,
        "optimizer steps on each partition, cycling through it (instead of epochs_per_partition)",
        ge=1,
        le=10_000_000,
    )
    batch_size: int = _f(16, "images per step (per Train worker)", ge=1, le=4096)
    lr: float = _f(1e-3, "AdamW peak learning rate", gt=0, le=1)
    weight_decay: float = _f(0.0, "AdamW weight decay", ge=0, le=1)
    schedule: Schedule = _f(
        "cosine",
        "learning rate over all pretraining steps (every partition together): linear warm-up, "
        "then constant or cosine decay to 0",
    )
    warmup: float = _f(0.05, "share of the pretraining steps spent warming up", ge=0, lt=1)
    loss: str | dict[str, float] = _f(
        "msssim_l1", "a loss name, or {name: weight, ...} for a weighted sum"
    )
    data: DataConfig | None = _f(
        None,
        "cross-pretraining: a separate source to pretrain on, with the keys of `data` (every "
        "image of it pretrains; val_fraction, label_fraction and augment do not apply; "
        "image_size must equal data.image_size); null: self-pretraining on the non-validation "
        "images of `data`",
    )

    @model_validator(mode="after")
    def _one_budget(self) -> PretrainConfig:
        if self.epochs_per_partition is not None and self.steps_per_partition is not None:
            raise ValueError(
                "give the pretraining budget once: pretrain.epochs_per_partition or "
                "pretrain.steps_per_partition, not both"
            )
        return self


class MixedConfig(_Section):
    """The second (patch size, ratio) of Mix-and-Mask; the first is masking.patch_size/ratio."""

    patch_size: int = _f(16, "mixed: patch size of the second config", ge=1, le=1024)
    ratio: float = _f(0.5, "mixed: masking ratio of the second config", gt=0, lt=1)
    probability: float = _f(0.5, "mixed: chance that a batch uses the second config", ge=0, le=1)


class MaskingConfig(_Section):
    strategy: Strategy = _f("random", "how patches are chosen (see Strategies)")
    ratio: float = _f(
        0.5, "r: fraction of patches masked; exactly round(r*N) per image", gt=0, lt=1
    )
    patch_size: int = _f(8, "patch side in pixels; must divide data.image_size", ge=1, le=1024)
    samples: int = _f(5, "K: masked variants per image when scoring (selective)", ge=1, le=64)
    sampling: Literal["random", "complementary"] = _f(
        "random", "selective: K independent draws, or draws that mask every patch equally often"
    )
    fill: Literal["mean", "zero", "noise", "blur", "highpass", "token"] = _f(
        "mean",
        "what masked pixels are replaced with (highpass: the image's high frequencies over its "
        "mean; blur: a strong blur)",
    )
    refresh: Literal["auto", "batch", "partition"] = _f(
        "auto",
        "after partition 0: new masks every batch, or one mask per image for the whole partition "
        "(selective and saliency masks are always per partition); auto: batch for random, "
        "block and mixed",
    )
    token_stage: int | None = _f(
        None, "A2MIM: add a learnable mask token at this encoder stage (0 = input)", ge=0, le=5
    )
    ssim_weight: float = _f(1.0, "selective scoring: weight of (1 - SSIM)", ge=0)
    l1_weight: float = _f(1.0, "selective scoring: weight of L1", ge=0)
    largest_component: bool = _f(True, "saliency: keep only the largest foreground component")
    mixed: MixedConfig = MixedConfig()


class FinetuneConfig(_Section):
    epochs: int | None = _f(
        None,
        "passes over the labeled train split (default 5 when steps is not set either)",
        ge=1,
        le=100_000,
    )
    steps: int | None = _f(
        None,
        "optimizer steps, cycling through the train split (instead of epochs)",
        ge=1,
        le=10_000_000,
    )
    evaluations: int | None = _f(
        None,
        "validations (each with a report and a checkpoint), evenly spaced in steps, the last "
        "after the final step; default: one per pass over the train split, at most 10",
        ge=1,
        le=10_000,
    )
    batch_size: int = _f(16, "images per step", ge=1, le=4096)
    lr: float = _f(1e-3, "AdamW peak learning rate", gt=0, le=1)
    weight_decay: float = _f(0.0, "AdamW weight decay", ge=0, le=1)
    schedule: Schedule = _f(
        "cosine", "learning rate over the fine-tuning steps: warm-up, then constant or cosine to 0"
    )
    warmup: float = _f(0.05, "share of the fine-tuning steps spent warming up", ge=0, lt=1)
    precise_bn: bool = _f(
        True,
        "before each validation, recompute the BatchNorm statistics over the train split (no "
        "augmentation) instead of the running average of the last steps: less noisy scores",
    )

    @model_validator(mode="after")
    def _one_budget(self) -> FinetuneConfig:
        if self.epochs is not None and self.steps is not None:
            raise ValueError(
                "give the fine-tuning budget once: finetune.epochs or finetune.steps, not both"
            )
        return self


class MrmConfig(_Section):
    enabled: bool = _f(
        False,
        "MRM: while fine-tuning, mask encoder features at `stage` and rebuild them with a "
        "Rebuilder (dropped at inference); its loss x weight joins the segmentation loss",
    )
    ratio: float = _f(
        0.4, "share of the stage's positions masked (the paper's best: 0.4)", gt=0, lt=1
    )
    stage: int | None = _f(
        None,
        "encoder stage whose features are masked, 1..model.encoder_depth (default: the last)",
        ge=1,
    )
    weight: float = _f(0.5, "lambda: weight of the feature-reconstruction loss", ge=0, le=100)
    dim: int = _f(128, "the Rebuilder's width (at most the stage's channels)", ge=8, le=2048)
    blocks: int = _f(1, "Transformer blocks in the Rebuilder", ge=1, le=12)


class RobustnessConfig(_Section):
    enabled: bool = _f(
        False,
        "after fine-tuning, validate the final model again under each factor's shift and log "
        "`robust/miou/<factor>` and `robust/miou_mean` (at every validation when search.metric "
        "is one of them)",
    )
    factors: tuple[Factor, ...] = _f(
        FACTORS,
        "shifts of the validation images: occlusion (grey squares), colour (hue, saturation, "
        "brightness), blur, noise, scale (zoom in/out, the mask alike) and texture (fine detail "
        "swapped for band-pass noise)",
        min_length=1,
    )
    severity: float = _f(0.5, "how strong every shift is (see Robustness)", gt=0, le=1)


class ControlArm(_Section):
    name: str = _f(..., "the control's name in tables, tags and MLflow metrics")
    set: dict[str, Any] = _f(..., "dotted key -> value: what this control changes in the spec")

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise ValueError(f"control name {name!r} may hold letters, digits, '_', '.', '-'")
        return name


class Objective(_Section):
    metric: str = _f(..., "a metric every trial reports, e.g. miou or cost/device_seconds")
    mode: Literal["max", "min"] = _f(..., "maximise or minimise it")


class SearchConfig(_Section):
    num_samples: int = _f(
        6, "configurations the sampler proposes (each runs `repeats` times)", ge=1, le=100_000
    )
    repeats: int = _f(
        1,
        "R: runs of every configuration and control, one per repeat seed (weights, masks, "
        "fine-tuning; data and partitions stay); Optuna sees their mean",
        ge=1,
        le=100,
    )
    controls: tuple[str | ControlArm, ...] = _f(
        (),
        "baselines run in every sweep beside the sampler's configurations, R times each: a "
        "strategy name (e.g. none) or {name, set: {key: value}} (see Seeds and controls)",
    )
    max_concurrent: int = _f(
        1, "trials running at once (checked against the cluster)", ge=1, le=10_000
    )
    metric: str = _f("miou", "the metric Optuna optimises")
    mode: Literal["max", "min"] = _f("max", "maximise or minimise the metric")
    objectives: tuple[Objective, ...] = _f(
        (),
        "two or more {metric, mode} for a multi-objective search, e.g. miou max and "
        "cost/device_seconds min: Optuna looks for their Pareto front and the report draws "
        "it; the first sets metric and mode (the leaderboard and the verdict rank by it)",
    )
    score: Literal["last", "best"] = _f(
        "last",
        "a trial's score: its last validation (steady after an annealed schedule) or its best "
        "one (`best/<metric>`: chosen on the validation split, so optimistic); Optuna, the "
        "leaderboard and the report all use it",
    )
    scheduler: Literal["fifo", "asha"] = _f("fifo", "asha stops weak trials early")
    sampler: Literal["tpe", "random", "grid"] = _f(
        "tpe",
        "Optuna sampler; grid: every distinct combination of `choice` values once (`when` "
        "respected); tpe also searches several search.objectives (multi-objective TPE)",
    )
    grace_period: int = _f(1, "asha: fine-tuning validations before a trial may be stopped", ge=1)
    max_failures: int = _f(
        1, "retries of a failed trial (it continues from its last checkpoint)", ge=0, le=100
    )
    reuse_partition0: bool = _f(
        True,
        "trials whose partition 0 is the same (random warm-up masks: same data, model, "
        "pretraining, repeat seed, ratio, patch size, fill) train it once: the others start "
        "at partition 1 from the storage's partition0/ cache, with the same final weights",
    )
    space: dict[str, Distribution] = _f({}, "dotted key -> distribution (see Search space)")
    storage: str | None = _f(
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
    def trials(self) -> int:
        """Tune trials of the sweep: every configuration and control, `repeats` times each."""
        return trial_count(self.num_samples, len(self.controls), self.repeats)


class ResourcesConfig(_Section):
    cpus_per_trial: float = _f(1.0, "CPUs of the trial's own process", ge=0, le=1024)
    gpus_per_trial: float = _f(
        0.0,
        "GPUs of a trial: whole GPUs in equal shares for its Train workers (DDP), or a fraction "
        "with one worker or train_workers: 0",
        ge=0,
        le=64,
    )
    train_workers: int = _f(
        1,
        "Ray Train workers (DDP) per trial; 0: the trial's own process trains (no Train "
        "start-up, ~15 s less per trial; one worker with cpus_per_trial CPUs and "
        "gpus_per_trial GPUs; for small machines)",
        ge=0,
        le=1024,
    )
    cpus_per_worker: float = _f(1.0, "CPUs per Train worker", gt=0, le=1024)
    scoring_actors: int = _f(
        1, "Ray actors scoring patches between partitions (0: in-process)", ge=0, le=1024
    )
    cpus_per_actor: float = _f(1.0, "CPUs per scoring actor", gt=0, le=1024)
    gpus_per_actor: float = _f(0.0, "GPU fraction per scoring actor", ge=0, le=1)
    data_workers: int = _f(
        0,
        "DataLoader worker processes per training process (the trial's with train_workers: 0, "
        "else each Train worker's) loading and augmenting images; they share that process's "
        "CPUs (not reserved from Ray: raise cpus_per_worker or cpus_per_trial to match); the "
        "same batches as 0 (in-process loading)",
        ge=0,
        le=64,
    )
    pin_memory: Literal["auto", True, False] = _f(
        "auto",
        "load batches into pinned memory and copy them to the GPU without blocking; auto: on "
        "when training on CUDA; pinning has no effect on the CPU",
    )
    autoscale_cpus: float | None = _f(
        None,
        "CPUs an autoscaling cluster can grow to (its nodes' max_workers x CPUs); set, the "
        "capacity check counts these instead of the CPUs up now, and trials wait for nodes",
        gt=0,
    )
    autoscale_gpus: float | None = _f(
        None, "GPUs an autoscaling cluster can grow to (as autoscale_cpus)", ge=0
    )


class TrackingConfig(_Section):
    mlflow_uri: str = _f("sqlite:///mlflow.db", "MLflow tracking URI (sqlite, file, http(s), ...)")
    experiment: str | None = _f(None, "MLflow experiment (default: the sweep's name)")
    keep_checkpoints: int = _f(
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


class SweepSpec(_Section):
    name: str = _f(
        "sweep",
        "sweep name: the experiment directory and MLflow experiment",
        min_length=1,
        max_length=100,
    )
    seed: int = _f(0, "seeds data, partitions, masks, weights and the sampler", ge=0, le=2**31 - 1)
    repeat: int = _f(
        0,
        "which repeat of its configuration a trial is (search.repeats sets it): repeat r > 0 "
        "seeds weights, masks and fine-tuning from (seed, r); data and partitions follow seed",
        ge=0,
        le=99,
    )
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    pretrain: PretrainConfig = PretrainConfig()
    masking: MaskingConfig = MaskingConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    mrm: MrmConfig = MrmConfig()
    robustness: RobustnessConfig = RobustnessConfig()
    search: SearchConfig = SearchConfig()
    resources: ResourcesConfig = ResourcesConfig()
    tracking: TrackingConfig = TrackingConfig()

    @field_validator("name")
    @classmethod
    def _name_is_a_directory_name(cls, name: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise ValueError(
                f"name {name!r} must be usable as a directory name: letters, digits, '_', '.', '-'"
            )
        return name

    @model_validator(mode="after")
    def _consistent(self) -> SweepSpec:
        for problem in rules.problems(self):
            raise ValueError(problem)
        return self

    def flat(self) -> dict[str, Any]:
        """The spec as dotted keys (`masking.ratio`: 0.5), for tracking params; search omitted."""
        dumped = self.model_dump(mode="json", exclude={"search"})
        return flatten(dumped)

    def tracked(self) -> dict[str, Any]:
        """The MLflow params: `flat()` and `pretrain.source`, self or cross (pretrain.data)."""
        return self.flat() | {"pretrain.source": "self" if self.pretrain.data is None else "cross"}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)
