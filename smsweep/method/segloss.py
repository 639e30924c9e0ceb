"""What makes a rare class count while fine-tuning: the losses (`finetune.loss`, from
segmentation-models-pytorch's `smp.losses`), the per-class weights (`finetune.class_weights`) and
rare-class sampling of the labelled images (`finetune.rare_class_sampling`, as DAFormer does).

Every loss takes (logits (B, C, H, W), labels (B, H, W) with 255 ignored) and returns a scalar
in float32. Cross-entropy is `torch.nn.functional.cross_entropy` (what smp's own soft variant
reduces to without smoothing), so `ce` without weights trains exactly as before.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import Tensor

from smsweep.method.data import IGNORE_INDEX

SegmentationLoss = Callable[[Tensor, Tensor], Tensor]


def cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Unweighted cross-entropy, 255 ignored: `ce` without class weights, and the default of
    `finetune.finetune_epoch`."""
    return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)


def _cross_entropy(weights: Tensor | None) -> SegmentationLoss:
    def loss(logits: Tensor, labels: Tensor) -> Tensor:
        weight = weights.to(logits.device) if weights is not None else None
        return F.cross_entropy(logits, labels, weight=weight, ignore_index=IGNORE_INDEX)

    return loss


def _dice(weights: Tensor | None) -> SegmentationLoss:
    listed = weights.tolist() if weights is not None else None
    return smp.losses.DiceLoss("multiclass", ignore_index=IGNORE_INDEX, class_weights=listed)


def _ce_dice(weights: Tensor | None) -> SegmentationLoss:
    ce, dice = _cross_entropy(weights), _dice(weights)
    return lambda logits, labels: ce(logits, labels) + dice(logits, labels)


def _focal(weights: Tensor | None) -> SegmentationLoss:
    listed = weights.tolist() if weights is not None else None
    return smp.losses.FocalLoss("multiclass", ignore_index=IGNORE_INDEX, class_weights=listed)


def _lovasz(weights: Tensor | None) -> SegmentationLoss:
    if weights is not None:  # the rules refuse it; here for callers outside a spec
        raise ValueError("the Lovasz-softmax loss takes no class weights")
    return smp.losses.LovaszLoss("multiclass", ignore_index=IGNORE_INDEX)


# finetune.loss -> a builder taking the class weights (None: unweighted)
LOSSES: dict[str, Callable[[Tensor | None], SegmentationLoss]] = {
    "ce": _cross_entropy,
    "ce_dice": _ce_dice,
    "focal": _focal,
    "lovasz": _lovasz,
}


def segmentation_loss(name: str, weights: Tensor | None = None) -> SegmentationLoss:
    if name not in LOSSES:
        raise ValueError(f"unknown finetune.loss {name!r}; choose one of {', '.join(LOSSES)}")
    return LOSSES[name](weights)


def inverse_frequency(pixel_counts: Sequence[int] | Tensor) -> Tensor:
    """A weight per class, the inverse of its pixel share, scaled to mean 1 over the classes
    present; 0 for a class absent from the labelled split (nothing to learn it from)."""
    counts = torch.as_tensor(pixel_counts, dtype=torch.float64)
    present = counts > 0
    weights = torch.zeros_like(counts)
    weights[present] = counts[present].sum() / counts[present]
    weights[present] /= weights[present].mean()
    return weights.float()


def rare_class_order(
    presence: Tensor, shares: Tensor, temperature: float, generator: torch.Generator
) -> Tensor:
    """A pass of len(presence) image positions, drawn with replacement as DAFormer samples:
    a class c with probability softmax((1 - shares[c]) / temperature) over the classes some
    image holds, then uniformly an image that holds c. presence: (N, C) bool, image i holds
    class c; shares: (C,) each class's pixel share. Seeded by `generator` alone."""
    held = presence.any(dim=0)
    logits = (1.0 - shares.double()) / temperature
    logits[~held] = -math.inf
    class_probability = torch.softmax(logits, dim=0)
    classes = torch.multinomial(class_probability, len(presence), True, generator=generator)
    order = torch.empty(len(presence), dtype=torch.int64)
    for c in classes.unique().tolist():
        where = (classes == c).nonzero().flatten()
        holders = presence[:, c].nonzero().flatten()
        picks = torch.randint(len(holders), (len(where),), generator=generator)
        order[where] = holders[picks]
    return order
