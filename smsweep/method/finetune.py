"""Transfer pretrained weights into a segmentation U-Net, fine-tune it, measure mIoU. No Ray.

Metrics follow the usual semantic-segmentation convention: one confusion matrix over the whole
validation split (pixels labelled 255 ignored), IoU_c = TP / (TP + FP + FN), mIoU = mean over the
classes that occur in the labels or the predictions (a class absent from both has no IoU: NaN,
left out of the mean), pixel accuracy = correct / labelled pixels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from smsweep.method.data import IGNORE_INDEX
from smsweep.method.precision import FLOAT32, Precision
from smsweep.method.segloss import cross_entropy

HEAD_PREFIX = "segmentation_head."


@dataclass(frozen=True)
class Transfer:
    """What `transfer_weights` did: loaded keys count, the replaced head, the unused keys."""

    loaded: int
    replaced: tuple[str, ...]
    skipped: tuple[str, ...]

    def summary(self) -> str:
        return (
            f"loaded {self.loaded} tensors; new head: {', '.join(self.replaced) or 'none'}; "
            f"not transferred: {', '.join(self.skipped) or 'none'}"
        )


def transfer_weights(pretrained: Mapping[str, Tensor], target: nn.Module) -> Transfer:
    """Copy a reconstruction model's weights (MaskedUnet state: `unet.*`, `token`) into a
    segmentation U-Net. Strict on matching keys: every encoder and decoder tensor of `target`
    must be present with the same shape (else ValueError naming them); the segmentation head is
    replaced (new number of outputs) and reported; source keys with no place in `target` (the
    mask token) are reported as skipped."""
    source = {key.removeprefix("unet."): value for key, value in pretrained.items()}
    state = target.state_dict()
    body = [key for key in state if not key.startswith(HEAD_PREFIX)]
    missing = [key for key in body if key not in source]
    mismatched = [key for key in body if key in source and source[key].shape != state[key].shape]
    if missing or mismatched:
        raise ValueError(
            f"pretrained weights do not fit the segmentation U-Net: missing {missing[:5]}, "
            f"shape mismatch {mismatched[:5]}; pretraining and fine-tuning must use the same "
            "model.encoder, encoder_depth and decoder_channels"
        )
    target.load_state_dict({**state, **{key: source[key] for key in body}})
    replaced = tuple(key for key in state if key.startswith(HEAD_PREFIX))
    skipped = tuple(sorted(key for key in pretrained if key.removeprefix("unet.") not in state))
    return Transfer(loaded=len(body), replaced=replaced, skipped=skipped)


def freeze_encoder(model: nn.Module) -> nn.Module:
    """`model`'s encoder with its parameters frozen (an optimizer built after this leaves them
    out): the part a frozen-encoder probe does not train."""
    encoder = model.encoder
    for parameter in encoder.parameters():
        parameter.requires_grad_(False)
    return encoder


def finetune_epoch(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    optimizer: torch.optim.Optimizer,
    *,
    max_steps: int | None = None,
    learning_rate: Callable[[int], float] | None = None,
    first_step: int = 0,
    precision: Precision = FLOAT32,
    auxiliary: list[float] | None = None,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    frozen: nn.Module | None = None,
) -> float:
    """One pass of training with `loss_fn` (default: cross-entropy; 255 ignored), stopped after
    `max_steps` steps when given; returns the mean loss per image. learning_rate(step) sets the
    rate before each step, steps numbered from `first_step`. The forwards run in `precision`,
    the loss in float32.
    A model that returns (logits, auxiliary loss) in training (`mrm.WithRebuilder`) has that
    loss added; `auxiliary` then collects its value at every step.
    `frozen` (a part of `model` whose parameters do not train, e.g. a probed encoder) stays in
    eval mode: in train mode its BatchNorm layers would normalise with each batch's statistics
    and move their running ones, so the frozen part would not compute what it was given."""
    model.train()
    if frozen is not None:
        frozen.eval()
    total, count = 0.0, 0
    for step, (images, labels) in enumerate(batches):
        if max_steps is not None and step >= max_steps:
            break
        if learning_rate is not None:
            learning_rate(first_step + step)
        with precision.context(images.device):
            output = model(images)  # (B, classes, H, W), or with an auxiliary loss
        logits, extra = output if isinstance(output, tuple) else (output, None)
        loss = (loss_fn or cross_entropy)(logits.float(), labels)
        if extra is not None:
            loss = loss + extra.float()
            if auxiliary is not None:
                auxiliary.append(float(extra.detach()))
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"fine-tuning loss is {float(loss.detach())}: lower finetune.lr"
                if labels.ne(IGNORE_INDEX).any()
                else "a fine-tuning batch has no labelled pixel (all 255): check the masks"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * images.shape[0]
        count += images.shape[0]
    return total / max(count, 1)


def step_batches(
    num_items: int, batch_size: int, first_step: int, steps: int, order: Callable[[int], Tensor]
) -> list[tuple[int, list[list[int]]]]:
    """The batches of optimizer steps first_step .. first_step + steps - 1, as (pass, batches)
    segments, one per pass they touch. Pass p visits the items in `order(p)` (a permutation of
    range(num_items)), `batch_size` at a time, the last batch of a pass possibly smaller; step s
    is batch s % per_pass of pass s // per_pass. A resumed run can start at any step without
    replaying the ones before it."""
    per_pass = math.ceil(num_items / batch_size)
    segments: list[tuple[int, list[list[int]]]] = []
    for step in range(first_step, first_step + steps):
        pass_index, position = divmod(step, per_pass)
        if not segments or segments[-1][0] != pass_index:
            segments.append((pass_index, []))
            permutation = order(pass_index).tolist()
        start = position * batch_size
        segments[-1][1].append(permutation[start : start + batch_size])
    return segments


def label_counts(labels: Iterable[Tensor], num_classes: int) -> Tensor:
    """Labelled pixels per class over batches of masks (B, H, W), 255 ignored: (num_classes,)."""
    counts = torch.zeros(num_classes, dtype=torch.int64)
    for batch in labels:
        kept = batch[batch != IGNORE_INDEX].cpu()
        counts += torch.bincount(kept, minlength=num_classes)[:num_classes]
    return counts


def trivial_metrics(
    val_counts: Tensor, train_counts: Tensor, class_names: Sequence[str]
) -> dict[str, float]:
    """`floor/miou` and `floor/pixel_accuracy` of the trivial predictor: the fine-tuning split's
    majority class everywhere, on validation labels with `val_counts` pixels per class. The floor
    a fine-tuned model has to clear before any comparison between trials means anything."""
    majority = int(train_counts.argmax())
    confusion = torch.zeros(len(val_counts), len(val_counts), dtype=torch.int64)
    confusion[:, majority] = val_counts
    metrics = segmentation_metrics(confusion, class_names)
    return {f"floor/{key}": metrics[key] for key in ("miou", "pixel_accuracy")}


BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    precision: Precision = FLOAT32,
    frozen: nn.Module | None = None,
) -> int:
    """Recompute every BatchNorm layer's running mean and variance as the plain average over
    `batches` (images, ignored labels) with the current weights; returns the layers updated.
    The forwards run in `precision`, as the validation that uses the statistics does. The
    layers of `frozen` (a frozen encoder) keep their statistics and normalise with them.

    During training the running statistics are an exponential average over the last ~10 batches
    (momentum 0.1), so on a small, augmented train split they drift from step to step, and two
    validations a few steps apart can differ by points of mIoU with almost the same weights.
    Statistics computed over a fixed set of images make the validation a function of the
    weights only."""
    kept = set(frozen.modules()) if frozen is not None else set()
    norms = [m for m in model.modules() if isinstance(m, BATCH_NORMS) and m not in kept]
    if not norms:
        return 0
    momenta = [norm.momentum for norm in norms]
    was_training = model.training
    model.train()
    if frozen is not None:
        frozen.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average
    try:
        for images, _ in batches:
            with precision.context(images.device):
                model(images)
    finally:
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
        model.train(was_training)
    return len(norms)


@torch.no_grad()
def confusion_matrix(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    num_classes: int,
    precision: Precision = FLOAT32,
) -> Tensor:
    """(num_classes, num_classes) int64, rows = label, columns = prediction; 255 ignored. The
    forwards run in `precision`."""
    was_training = model.training
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    for images, labels in batches:
        with precision.context(images.device):
            logits = model(images)  # (B, classes, H, W)
        predictions = logits.float().argmax(dim=1)  # (B, H, W)
        keep = labels != IGNORE_INDEX
        pairs = labels[keep].cpu() * num_classes + predictions[keep].cpu()
        confusion += torch.bincount(pairs, minlength=num_classes**2).view(num_classes, -1)
    model.train(was_training)
    return confusion


def segmentation_metrics(confusion: Tensor, class_names: Sequence[str]) -> dict[str, float]:
    """miou, pixel_accuracy and iou/<class name> for every class (NaN when absent)."""
    confusion = confusion.double()
    true_positive = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - true_positive
    iou = torch.where(union > 0, true_positive / union.clamp(min=1), torch.nan)
    present = iou[~iou.isnan()]
    labelled = float(confusion.sum())
    metrics = {
        "miou": float(present.mean()) if len(present) else math.nan,
        "pixel_accuracy": float(true_positive.sum()) / labelled if labelled else math.nan,
    }
    metrics |= {f"iou/{name}": float(value) for name, value in zip(class_names, iou, strict=True)}
    return metrics
