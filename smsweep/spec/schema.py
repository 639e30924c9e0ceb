"""The sweep spec's schema, the sections of the method: data, model, pretraining, masking,
fine-tuning, MRM and robustness. Typed, frozen sections, each key with its bounds and
documentation (rendered into docs/spec-reference.md).

Every key is checked: an unknown key names the nearest valid one, a wrong type or an
out-of-range value names the legal range (explain.py). What keys allow together is in rules.py;
the whole spec is `config.SweepSpec`. Nothing here imports torch, Ray or MLflow: validating a
spec is cheap and has no side effects.
"""

from __future__ import annotations

import difflib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from smsweep.spec import registry
from smsweep.spec.names import (
    FACTORS,
    Factor,
)


class Section(BaseModel):
    """A section of the spec: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def documented(default: Any, doc: str, **bounds: Any) -> Any:
    """A field with its documentation (rendered into docs/spec-reference.md)."""
    return Field(default, description=doc, **bounds)


class DataConfig(Section):
    source: Literal["synthetic", "textures", "folder", "voc", "cityscapes"] = documented(
        "synthetic",
        "where images come from: generated shapes (synthetic) or texture mosaics (textures), or "
        "folder/voc/cityscapes read from `path`",
    )
    path: str | None = documented(None, "dataset root (required unless the source is generated)")
    image_size: int = documented(64, "square side the pipeline resizes/crops to", ge=16, le=4096)
    num_classes: int = documented(
        5,
        "segmentation classes (voc 21, cityscapes 19, synthetic 3..8, textures 2..8)",
        ge=2,
        le=1000,
    )
    skip_bad: bool = documented(
        False, "skip unreadable images (one warning lists them) instead of failing"
    )
    num_images: int = documented(
        128, "generated sources (synthetic, textures): how many images", ge=4, le=1_000_000
    )
    rare_share: float | None = documented(
        None,
        "generated sources (synthetic, textures; other sources ignore it, as num_images): the "
        "share of images that hold the rare class (null: the source's own, synthetic 0.12, "
        "textures 0.15); its instances stay small, so it stays rare by pixels; with few labels, "
        "raise it for a rare class that fine-tuning can learn at all",
        gt=0,
        le=1,
    )
    val_fraction: float = documented(0.2, "labeled images held out for validation", gt=0, le=0.9)
    label_fraction: float = documented(
        1.0, "of the other labeled images, the share used to fine-tune", gt=0, le=1
    )
    augment: bool = documented(
        True,
        "albumentations flips/crops/colour jitter when fine-tuning (pretraining uses a fixed crop "
        "so that precomputed masks cover the pixels they were scored on)",
    )


class ModelConfig(Section):
    encoder: str = documented("resnet18", "a segmentation-models-pytorch encoder name")
    encoder_weights: str | None = documented(
        None, "a local encoder weights file (e.g. ImageNet); nothing is ever downloaded"
    )
    encoder_depth: int = documented(
        5, "U-Net depth; data.image_size must be a multiple of 2**depth", ge=3, le=5
    )
    decoder_channels: tuple[int, ...] | None = documented(
        None, "decoder widths, one per depth level (default: smp's)"
    )
    channels_last: bool = documented(
        True,
        "run the convolutions in channels-last (NHWC) memory layout: same results within float "
        "rounding, faster on CPUs and tensor-core GPUs",
    )
    precision: Literal["auto", "fp32", "bf16"] = documented(
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


class ContrastiveConfig(Section):
    dim: int = documented(128, "size of the projected, normalised embedding", ge=8, le=4096)
    queue: int = documented(1024, "past keys kept as negatives (MoCo's queue)", ge=1, le=1_000_000)
    momentum: float = documented(
        0.99, "key encoder: exponential moving average of the query's", ge=0, lt=1
    )
    temperature: float = documented(0.2, "InfoNCE temperature", gt=0, le=10)
    hard_negatives: bool = documented(
        True,
        "add each image's key view with most of its salient region masked as a negative",
    )
    hard_ratio: float = documented(
        0.8, "share of the patches a hard negative masks, salient ones first", gt=0, lt=1
    )
    saliency_weights: str | None = documented(
        None,
        "a local file of encoder weights for the frozen saliency network; default: a frozen "
        "copy of the encoder taken at the start of each partition",
    )


class WarmupMasksConfig(Section):
    """Partition 0's masks: SMIR's random warm-up, the same for every strategy and every value of
    the searched `masking.*` keys, so one warm-up serves a whole repeat seed."""

    ratio: float = documented(
        0.5, "share of the patches partition 0 masks, at random (SMIR's r = 0.5)", gt=0, lt=1
    )
    patch_size: int = documented(
        8,
        "partition 0's patch side in pixels; must divide data.image_size (and be a multiple "
        "of the mask token's stride with masking.token_stage)",
        ge=1,
        le=1024,
    )
    fill: Literal["mean", "zero", "noise", "blur", "highpass"] = documented(
        "mean",
        "what partition 0's masked pixels are replaced with (later partitions: masking.fill)",
    )


class PretrainConfig(Section):
    objective: Literal["reconstruction", "contrastive"] = documented(
        "reconstruction",
        "reconstruction (masked pixels, `loss`) or contrastive (MoCo-v2 with the masks on the "
        "query branch only, see pretrain.contrastive)",
    )
    contrastive: ContrastiveConfig = ContrastiveConfig()
    partitions: int = documented(
        10, "P: the unlabeled images are split into P partitions", ge=1, le=1000
    )
    epochs_per_partition: int | None = documented(
        None,
        "passes over each partition (default 1 when steps_per_partition is not set either)",
        ge=1,
        le=100_000,
    )
    steps_per_partition: int | None = documented(
        None,
        "optimizer steps on each partition, cycling through it (instead of epochs_per_partition)",
        ge=1,
        le=10_000_000,
    )
    batch_size: int = documented(16, "images per step (per Train worker)", ge=1, le=4096)
    lr: float = documented(1e-3, "AdamW peak learning rate", gt=0, le=1)
    weight_decay: float = documented(0.0, "AdamW weight decay", ge=0, le=1)
    schedule: Schedule = documented(
        "cosine",
        "learning rate over all pretraining steps (every partition together): linear warm-up, "
        "then constant or cosine decay to 0",
    )
    warmup: float = documented(
        0.05, "share of the pretraining steps spent warming up the learning rate", ge=0, lt=1
    )
    warmup_masks: WarmupMasksConfig = WarmupMasksConfig()
    loss: str | dict[str, float] = documented(
        "msssim_l1", "a loss name, or {name: weight, ...} for a weighted sum"
    )
    data: DataConfig | None = documented(
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


class MixedConfig(Section):
    """The second (patch size, ratio) of Mix-and-Mask; the first is masking.patch_size/ratio."""

    patch_size: int = documented(16, "mixed: patch size of the second config", ge=1, le=1024)
    ratio: float = documented(0.5, "mixed: masking ratio of the second config", gt=0, lt=1)
    probability: float = documented(
        0.5, "mixed: chance that a batch uses the second config", ge=0, le=1
    )


class MaskingConfig(Section):
    strategy: str = documented(
        "random",
        "how patches are chosen (see Strategies)",
        json_schema_extra={"choices": "masking strategies"},
    )
    ratio: float = documented(
        0.5, "r: fraction of patches masked; exactly round(r*N) per image", gt=0, lt=1
    )
    patch_size: int = documented(
        8, "patch side in pixels; must divide data.image_size", ge=1, le=1024
    )
    samples: int = documented(
        5, "K: masked variants per image when scoring (selective)", ge=1, le=64
    )
    sampling: Literal["random", "complementary"] = documented(
        "random", "selective: K independent draws, or draws that mask every patch equally often"
    )
    fill: Literal["mean", "zero", "noise", "blur", "highpass", "token"] = documented(
        "mean",
        "what masked pixels are replaced with (highpass: the image's high frequencies over its "
        "mean; blur: a strong blur)",
    )
    refresh: Literal["auto", "batch", "partition"] = documented(
        "auto",
        "after partition 0: new masks every batch, or one mask per image for the whole partition "
        "(selective and saliency masks are always per partition); auto: batch for random, "
        "block and mixed",
    )
    token_stage: int | None = documented(
        None, "A2MIM: add a learnable mask token at this encoder stage (0 = input)", ge=0, le=5
    )
    ssim_weight: float = documented(1.0, "selective scoring: weight of (1 - SSIM)", ge=0)
    l1_weight: float = documented(1.0, "selective scoring: weight of L1", ge=0)
    largest_component: bool = documented(
        True, "saliency: keep only the largest foreground component"
    )
    mixed: MixedConfig = MixedConfig()

    @field_validator("strategy")
    @classmethod
    def _registered(cls, name: str) -> str:
        if name not in registry.STRATEGIES:
            near = difflib.get_close_matches(name, registry.names(), n=1)
            hint = f" (did you mean {near[0]}?)" if near else ""
            raise ValueError(
                f"{name!r} is not a masking strategy{hint}; choose one of: "
                f"{', '.join(registry.names())} (a strategy of your own: list its module under "
                "plugins)"
            )
        return name


class FinetuneConfig(Section):
    epochs: int | None = documented(
        None,
        "passes over the labeled train split (default 5 when steps is not set either)",
        ge=1,
        le=100_000,
    )
    steps: int | None = documented(
        None,
        "optimizer steps, cycling through the train split (instead of epochs)",
        ge=1,
        le=10_000_000,
    )
    evaluations: int | None = documented(
        None,
        "validations (each with a report and a checkpoint), evenly spaced in steps, the last "
        "after the final step; default: one per pass over the train split, at most 10",
        ge=1,
        le=10_000,
    )
    batch_size: int = documented(16, "images per step", ge=1, le=4096)
    lr: float = documented(1e-3, "AdamW peak learning rate", gt=0, le=1)
    weight_decay: float = documented(0.0, "AdamW weight decay", ge=0, le=1)
    schedule: Schedule = documented(
        "cosine", "learning rate over the fine-tuning steps: warm-up, then constant or cosine to 0"
    )
    warmup: float = documented(0.05, "share of the fine-tuning steps spent warming up", ge=0, lt=1)
    precise_bn: bool = documented(
        True,
        "before each validation, recompute the BatchNorm statistics over the train split (no "
        "augmentation) instead of the running average of the last steps: less noisy scores",
    )
    loss: Literal["ce", "ce_dice", "focal", "lovasz"] = documented(
        "ce",
        "the segmentation loss (segmentation-models-pytorch's losses): cross-entropy, "
        "cross-entropy + Dice, focal, or Lovasz-softmax",
    )
    rare_class_sampling: float | None = documented(
        None,
        "DAFormer's rare-class sampling: each step's images are drawn by first drawing a class "
        "with probability softmax((1 - its pixel share) / T), then an image holding it; the "
        "value is T (the paper's 0.01; smaller favours rare classes more); null: every pass a "
        "permutation of the train split",
        gt=0,
        le=10,
    )
    class_weights: Literal["none", "inverse_frequency"] = documented(
        "none",
        "per-class loss weights: none, or the inverse of each class's pixel share in the "
        "labelled train split (mean 1 over the classes present; rare classes weigh more)",
    )
    repeats: int = documented(
        1,
        "F: fine-tunes of the one pretrained model, each with its own head initialisation, batch "
        "orders and augmentation; every validation reports their mean (`miou`, the ranked "
        "metrics), each one's score (`finetune/<f>/miou`) and their spread "
        "(`finetune/miou_sd`); costs F times the fine-tuning (pretraining runs once)",
        ge=1,
        le=32,
    )
    freeze_encoder: bool = documented(
        False,
        "a frozen-encoder probe: train only the decoder and the segmentation head on the "
        "pretrained encoder, whose weights and BatchNorm statistics stay as pretraining left them",
    )
    probe: bool = documented(
        False,
        "beside the fine-tune, a frozen-encoder probe of the same pretrained weights (its own "
        "seeds, the same steps and validations), reported as `probe/miou`, `probe/iou/<class>`: "
        "both protocols in one trial, either one usable as search.metric; the fine-tune's "
        "numbers are those of a trial without it; costs the fine-tuning steps again, less the "
        "encoder's backward pass",
    )

    @model_validator(mode="after")
    def _one_budget(self) -> FinetuneConfig:
        if self.epochs is not None and self.steps is not None:
            raise ValueError(
                "give the fine-tuning budget once: finetune.epochs or finetune.steps, not both"
            )
        return self


class MrmConfig(Section):
    enabled: bool = documented(
        False,
        "MRM: while fine-tuning, mask encoder features at `stage` and rebuild them with a "
        "Rebuilder (dropped at inference); its loss x weight joins the segmentation loss",
    )
    ratio: float = documented(
        0.4, "share of the stage's positions masked (the paper's best: 0.4)", gt=0, lt=1
    )
    stage: int | None = documented(
        None,
        "encoder stage whose features are masked, 1..model.encoder_depth (default: the last)",
        ge=1,
    )
    weight: float = documented(
        0.5, "lambda: weight of the feature-reconstruction loss", ge=0, le=100
    )
    dim: int = documented(
        128, "the Rebuilder's width (at most the stage's channels)", ge=8, le=2048
    )
    blocks: int = documented(1, "Transformer blocks in the Rebuilder", ge=1, le=12)


class RobustnessConfig(Section):
    enabled: bool = documented(
        False,
        "after fine-tuning, validate the final model again under each factor's shift and log "
        "`robust/miou/<factor>` and `robust/miou_mean` (at every validation when search.metric "
        "is one of them)",
    )
    factors: tuple[Factor, ...] = documented(
        FACTORS,
        "shifts of the validation images: occlusion (grey squares), colour (hue, saturation, "
        "brightness), blur, noise, scale (zoom in/out, the mask alike) and texture (fine detail "
        "swapped for band-pass noise)",
        min_length=1,
    )
    severity: float = documented(0.5, "how strong every shift is (see Robustness)", gt=0, le=1)
