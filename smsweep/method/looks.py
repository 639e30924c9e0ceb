"""What a partition's masks look like as training on it begins: the mechanism diagnostics (do
the masks favour class boundaries or rare classes?) and the gallery PNG. Rank 0 only; no Ray."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from smsweep.method.data import Source
from smsweep.method.data.datasets import SegmentationDataset
from smsweep.method.data.transforms import pretrain_transform
from smsweep.method.gallery import gallery_rows, save_gallery
from smsweep.method.masking import mask_diagnostics
from smsweep.method.masking.fills import Fill
from smsweep.method.precision import FLOAT32, Precision
from smsweep.method.pretrain import MaskSource
from smsweep.method.scoring import load_images

GALLERY_IMAGES = 4  # rows in a partition's gallery
DIAGNOSTIC_IMAGES = 32  # labelled images of a partition the mechanism diagnostics look at


def diagnostics(
    source: Source,
    indices: tuple[int, ...],
    masks: MaskSource,
    generator: torch.Generator,
    image_size: int,
    device: torch.device,
) -> dict[str, Any]:
    """`diag/...` metrics of the partition's first labelled images (`mask_diagnostics`), keyed
    by class name; empty when the partition has no labelled image."""
    labelled = [i for i in indices if source.has_mask(i)][:DIAGNOSTIC_IMAGES]
    if not labelled:
        return {}
    view = SegmentationDataset(source, labelled, pretrain_transform(image_size, augment=False))
    images, labels = zip(*(view[k] for k in range(len(view))), strict=True)
    images, labels = torch.stack(images).to(device), torch.stack(labels).to(device)
    mask = masks(images, torch.tensor(labelled), generator)
    metrics = {}
    for key, value in mask_diagnostics(labels, mask).items():
        kind, _, class_id = key.partition("/")
        name = f"diag/{kind}/{source.class_names[int(class_id)]}" if class_id else f"diag/{kind}"
        metrics[name] = value
    return metrics


def gallery(
    model: nn.Module,
    fill: Fill,
    source: Source,
    indices: tuple[int, ...],
    masks: MaskSource,
    generator: torch.Generator,
    image_size: int,
    device: torch.device,
    partition: int,
    precision: Precision = FLOAT32,
) -> Path:
    """The partition's gallery (image | loss map | mask | reconstruction) in a new temporary
    directory, as `partition_NNN.png`; the caller moves it and removes the directory."""
    shown = list(indices[:GALLERY_IMAGES])
    images = load_images(source, shown, image_size).to(device)
    mask = masks(images, torch.tensor(shown), generator)
    rows = gallery_rows(model, images, mask, fill, generator, precision)
    return save_gallery(rows, Path(tempfile.mkdtemp()) / f"partition_{partition:03d}.png")
