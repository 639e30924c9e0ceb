"""Spec -> objects: the one place where sweep-spec names become strategies, fills, models, losses.

Everything past this module receives objects, not names (STYLE: registries only at the YAML
boundary). All builders are pure and cheap, so a Train worker and a scoring actor can each build
the same objects from the same resolved spec.
"""

from __future__ import annotations

from typing import TypeVar

import torch
from torch import nn

from smsweep.method.losses import WeightedLoss, build_loss
from smsweep.method.masking import (
    HardSaliencyMasking,
    MaskingStrategy,
    RandomMasking,
    build_fill,
)
from smsweep.method.masking.fills import Fill, ZeroFill
from smsweep.method.models import MaskedUnet, build_unet
from smsweep.spec import registry
from smsweep.spec.config import SweepSpec

ModelT = TypeVar("ModelT", bound=nn.Module)


def input_fill(spec: SweepSpec) -> Fill:
    """What masked pixels become at the input after partition 0. `token` is zeros here: the
    learnable value is the model's stage-0 token (see `reconstruction_model`), so it trains and
    ships with the weights."""
    if spec.masking.fill == "token":
        return ZeroFill()
    return build_fill(spec.masking.fill)


def warmup_fill(spec: SweepSpec) -> Fill:
    """What partition 0's masked pixels become at the input: `pretrain.warmup_masks.fill`, the
    same whatever `masking.fill` is (a mask token, when the model has one, is added there too)."""
    return build_fill(spec.pretrain.warmup_masks.fill)


def mask_stage(spec: SweepSpec) -> int | None:
    """Where the learnable mask token is added: `masking.token_stage`, or the input for
    `fill: token`, or nowhere."""
    if spec.masking.fill == "token":
        return 0
    return spec.masking.token_stage


def reconstruction_model(spec: SweepSpec) -> MaskedUnet:
    """The pretraining U-Net: 3 sigmoid outputs (images are in [0, 1]), with the A2MIM token."""
    model = spec.model
    unet = build_unet(
        model.encoder,
        classes=3,
        encoder_weights=model.encoder_weights,
        encoder_depth=model.encoder_depth,
        decoder_channels=model.decoder_channels,
        activation="sigmoid",
    )
    patch_sizes = [size for size, _ in masking_strategy(spec).configs]
    patch_sizes.append(spec.pretrain.warmup_masks.patch_size)
    return memory_layout(
        spec, MaskedUnet(unet, mask_stage=mask_stage(spec), patch_sizes=patch_sizes)
    )


def segmentation_model(spec: SweepSpec):
    """The fine-tuning U-Net: one logit per class; `model.encoder_weights` when given."""
    model = spec.model
    unet = build_unet(
        model.encoder,
        classes=spec.data.num_classes,
        encoder_weights=model.encoder_weights,
        encoder_depth=model.encoder_depth,
        decoder_channels=model.decoder_channels,
    )
    return memory_layout(spec, unet)


def memory_layout(spec: SweepSpec, model: ModelT) -> ModelT:
    """`model.channels_last`: the 4-D weights in NHWC order, so every convolution (and its
    gradient) runs in that layout; NCHW inputs are converted by the first convolution.
    docs/performance.md has the measured difference."""
    if spec.model.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def masking_strategy(spec: SweepSpec) -> MaskingStrategy:
    """The strategy the spec names, with every setting it reads from `masking` (its class's
    `from_spec`)."""
    cls = registry.strategy(spec.masking.strategy).load()
    return cls.from_spec(spec.masking, input_fill(spec))


def mask_refresh(spec: SweepSpec) -> str:
    """How often masks change after partition 0: "batch" or "partition". `auto` means
    "partition" for the strategies whose masks are scored from the model (they always are) and
    "batch" for the model-free ones."""
    if spec.masking.refresh != "auto":
        return spec.masking.refresh
    return "partition" if masking_strategy(spec).needs_model else "batch"


def warmup_strategy(spec: SweepSpec) -> RandomMasking:
    """Partition 0 of SMIR: random masks at `pretrain.warmup_masks`' patch size and ratio (no
    model yet), whatever the searched `masking.*` keys are, so one warm-up serves them all."""
    warmup = spec.pretrain.warmup_masks
    return RandomMasking(warmup.patch_size, warmup.ratio)


def hard_negative_masking(spec: SweepSpec) -> HardSaliencyMasking | None:
    """The contrastive objective's hard negatives: most of the salient region masked
    (`pretrain.contrastive.hard_ratio` of the patches, foreground first); None when off."""
    settings = spec.pretrain.contrastive
    if not settings.hard_negatives:
        return None
    masking = spec.masking
    return HardSaliencyMasking(masking.patch_size, settings.hard_ratio, masking.largest_component)


def pretrain_loss(spec: SweepSpec) -> WeightedLoss:
    loss = spec.pretrain.loss
    return build_loss({loss: 1.0} if isinstance(loss, str) else dict(loss))
