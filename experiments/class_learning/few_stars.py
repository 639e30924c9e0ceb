"""How many labelled stars does the rare class need? A stripped-down fine-tune, not the trial.

    python experiments/class_learning/few_stars.py

A U-Net of the quickstart's shape (resnet18, depth 3, decoder 32/16/8) trained from random
weights for 300 steps (batch 8, AdamW 3e-3, one-cycle, weighted cross-entropy with
inverse-frequency weights, horizontal flips only) on synthetic images 0..NT-1 (seed 0, 48 px,
5 classes), validated on images 300..363. Prints the train and validation IoU per class and where
the rare star's validation pixels went (predicted class counts). The generator is changed
through the environment, one knob at a time:

- RP: the share of images holding a star (the generator's 0.12)
- RR: the star's radius range as a share of the side (here 0.12,0.16; the generator's 0.08,0.11)
- TX: the star's texture: spokes (10 wedges), rings10 / rings8 (rings s/10 or s/8 apart),
  grid (lines s/12 apart), or rings20 (the generator's rings, s/20 apart)
- NT: labelled train images (48, as the quickstart)
- INV=1: a colour-invariance augmentation (each channel inverted with p 0.5, channels shuffled)
"""

from __future__ import annotations

import os

import numpy as np
import segmentation_models_pytorch as smp
import torch

from smsweep.method.data import _synthetic

TEXTURES = {
    "spokes": lambda a, b, s, rng: (np.sin(5 * np.arctan2(b, a)) > 0).astype(np.float32),
    "rings20": lambda a, b, s, rng: (np.sin(2 * np.pi * np.hypot(a, b) / (s / 20)) > 0).astype(
        np.float32
    ),
    "rings10": lambda a, b, s, rng: (np.sin(2 * np.pi * np.hypot(a, b) / (s / 10)) > 0).astype(
        np.float32
    ),
    "rings8": lambda a, b, s, rng: (np.sin(2 * np.pi * np.hypot(a, b) / (s / 8)) > 0).astype(
        np.float32
    ),
    "grid": lambda a, b, s, rng: (((a % (s / 12)) < 1.5) | ((b % (s / 12)) < 1.5)).astype(
        np.float32
    ),
}
CLASSES, STAR = 5, 4


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    _synthetic.RARE_RADIUS = tuple(map(float, os.environ.get("RR", "0.12,0.16").split(",")))
    _synthetic.TEXTURES[_synthetic.RARE_SHAPE] = TEXTURES[os.environ.get("TX", "spokes")]
    share = float(os.environ.get("RP", "0.12"))
    source = _synthetic.SyntheticSource(400, 48, CLASSES, 0, rare_share=share)
    labelled, steps = int(os.environ.get("NT", "48")), 300
    x_train, y_train = _batch(source, range(labelled))
    x_val, y_val = _batch(source, range(300, 364))
    stars = [int((y == STAR).flatten(1).any(1).sum()) for y in (y_train, y_val)]
    print(f"images with a star: {stars[0]} of {labelled} labelled, {stars[1]} of 64 validated")
    model = smp.Unet(
        "resnet18",
        encoder_weights=None,
        encoder_depth=3,
        decoder_channels=[32, 16, 8],
        classes=CLASSES,
    )
    counts = torch.bincount(y_train.flatten(), minlength=CLASSES).double()
    weights = 1 / (counts / counts.sum())
    loss_fn = torch.nn.CrossEntropyLoss(weight=(weights / weights.mean()).float())
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, 3e-3, total_steps=steps, pct_start=0.05
    )
    generator = torch.Generator().manual_seed(0)
    for step in range(steps):
        pick = torch.randint(0, labelled, (8,), generator=generator)
        x, y = x_train[pick], y_train[pick]
        if step % 2:
            x, y = x.flip(-1), y.flip(-1)
        if os.environ.get("INV"):
            inverted = (torch.rand(x.shape[0], 3, 1, 1, generator=generator) < 0.5).float()
            x = (x * (1 - 2 * inverted))[:, torch.randperm(3, generator=generator)]
        model.train()
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    for name, x, y in (("train", x_train, y_train), ("val", x_val, y_val)):
        iou, star_row = _iou(model, x, y)
        print(f"{name}: IoU per class {iou}, star pixels predicted as {star_row}")


def _batch(source: _synthetic.SyntheticSource, indices: range) -> tuple[torch.Tensor, torch.Tensor]:
    images, masks = zip(*(source.load(i) for i in indices), strict=True)
    x = torch.tensor(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    return (x - 0.5) / 0.25, torch.tensor(np.stack(masks)).long()


def _iou(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[list[float], list[int]]:
    model.eval()
    with torch.no_grad():
        predicted = model(x).argmax(1)
    confusion = torch.zeros(CLASSES, CLASSES, dtype=torch.long)
    for truth in range(CLASSES):
        for guess in range(CLASSES):
            confusion[truth, guess] = ((y == truth) & (predicted == guess)).sum()
    hits = confusion.diag().double()
    union = confusion.sum(0) + confusion.sum(1) - confusion.diag()
    return [round(v, 3) for v in (hits / union).tolist()], confusion[STAR].tolist()


if __name__ == "__main__":
    main()
