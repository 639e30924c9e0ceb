"""Transfer pretrained weights into a segmentation U-Net, fine-tune it, measure mIoU. No Ray.

Metrics follow the usual semantic-segmentation convention: one confusion matrix over the whole
validation split (pixels labelled 255 ignored), IoU_c = TP / (TP + FP + FN), mIoU = mean over the
classes that occur in the labels or the predictions (a class absent from both has no IoU: NaN,
left out of the mean), pixel accuracy = correct / labelled pixels.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from smsweep.data import IGNORE_INDEX

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


def finetune_epoch(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    optimizer: torch.optim.Optimizer,
) -> float:
    """One pass of cross-entropy training (255 ignored); returns the mean loss per image."""
    model.train()
    total, count = 0.0, 0
    for images, labels in batches:
        logits = model(images)  # (B, classes, H, W)
        loss = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)
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


@torch.no_grad()
def confusion_matrix(
    model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], num_classes: int
) -> Tensor:
    """(num_classes, num_classes) int64, rows = label, columns = prediction; 255 ignored."""
    was_training = model.training
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    for images, labels in batches:
        predictions = model(images).argmax(dim=1)  # (B, H, W)
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
