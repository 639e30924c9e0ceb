"""The bench's inputs, shared with the tests: `Sizes` (what it runs on), `TRIAL_SPEC` (the tiny
real trial), the model and images, both scorers (vectorized and literal) with the variants they
forward and their forward-only floors, and the two training loops (smsweep's and a bare one).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from smsweep.method.losses import WeightedLoss, build_loss
from smsweep.method.masking import RandomMasking, upsample_mask
from smsweep.method.masking.base import evaluating, patch_grid
from smsweep.method.masking.fills import MeanFill
from smsweep.method.masking.reference import reference_patch_loss_scores
from smsweep.method.masking.scorer import (
    patch_loss_scores,
    per_image_generators,
    reconstruct,
    sample_masks,
)
from smsweep.method.models import MaskedUnet, build_unet
from smsweep.method.pretrain import per_batch_masks, pretrain_step


@dataclass(frozen=True)
class Sizes:
    """What the bench runs on. The defaults are the full bench: a realistic small U-Net (resnet18
    encoder, depth 4, ~3.1 M parameters), 64x64 images, batches of 16, patch 8 (an 8x8 grid),
    ratio 0.5, K = 5 samples (the paper's) and the library's default chunk of 64 variants, in the
    spec's default memory layout (`model.channels_last`)."""

    encoder: str = "resnet18"
    encoder_depth: int = 4
    decoder_channels: tuple[int, ...] = (64, 32, 16, 8)
    image_size: int = 64
    batch_size: int = 16  # images per scorer call and per training step
    patch_size: int = 8
    ratio: float = 0.5
    samples: int = 5  # K
    chunk_size: int = 64  # variants per forward (SelectiveMasking's default)
    train_steps: int = 3  # optimizer steps per timed training repetition
    partition_images: int = 64  # images the actors score per call (4 blocks of 16)
    repeats: int = 7  # timed repetitions per measurement, after one warm-up
    actor_cycles: int = 3  # 1-actor and 2-actor pools alternate this many times (see actors)
    seed: int = 0
    channels_last: bool = True  # model.channels_last (the spec's default)

    def as_dict(self) -> dict[str, Any]:
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in dataclasses.asdict(self).items()
        }


# The tiny real trial whose fits and fixed overhead are measured: 24 synthetic 32x32 images,
# 2 pretraining partitions (the second is scored by one actor), 1 fine-tuning epoch.
TRIAL_SPEC: dict[str, Any] = {
    "name": "bench-trial",
    "seed": 3,
    "data": {"image_size": 32, "num_classes": 4, "num_images": 24, "val_fraction": 0.25},
    "model": {"encoder": "resnet18", "encoder_depth": 3, "decoder_channels": [16, 8, 4]},
    "pretrain": {"partitions": 2, "epochs_per_partition": 1, "batch_size": 8},
    "masking": {"strategy": "selective", "ratio": 0.5, "patch_size": 8, "samples": 2},
    "finetune": {"epochs": 1, "batch_size": 8},
    "resources": {
        "cpus_per_trial": 0.5,
        "train_workers": 1,
        "cpus_per_worker": 1,
        "scoring_actors": 1,
        "cpus_per_actor": 0.5,
    },
}


def bench_model(sizes: Sizes) -> MaskedUnet:
    """The reconstruction U-Net `build.reconstruction_model` makes for these sizes (mean fill, no
    mask token), with weights seeded by `sizes.seed`."""
    torch.manual_seed(sizes.seed)
    unet = build_unet(
        sizes.encoder,
        classes=3,
        encoder_depth=sizes.encoder_depth,
        decoder_channels=sizes.decoder_channels,
        activation="sigmoid",
    )
    return MaskedUnet(unet, mask_stage=None, patch_sizes=[sizes.patch_size])


def bench_images(sizes: Sizes, count: int | None = None) -> Tensor:
    """`count` (default batch_size) synthetic scenes through the pretraining view, like
    `scoring.load_images`: (n, 3, S, S) float32 in [0, 1]."""
    from smsweep.method.data import SyntheticSource
    from smsweep.method.data.datasets import image_tensor
    from smsweep.method.data.transforms import pretrain_transform

    count = sizes.batch_size if count is None else count
    source = SyntheticSource(count, sizes.image_size, 5, sizes.seed)
    transform = pretrain_transform(sizes.image_size, augment=False)
    return torch.stack(
        [image_tensor(transform(image=source.load(i)[0])["image"]) for i in range(count)]
    )


def _scorer_settings(sizes: Sizes) -> dict[str, Any]:
    return {
        "patch_size": sizes.patch_size,
        "ratio": sizes.ratio,
        "samples": sizes.samples,
        "fill": MeanFill(),
        "sampling": "random",
    }


def vectorized_scores(model: nn.Module, images: Tensor, sizes: Sizes) -> Tensor:
    """The library's scorer: (B, h, w)."""
    generator = torch.Generator().manual_seed(sizes.seed)
    return patch_loss_scores(
        model, images, generator=generator, chunk_size=sizes.chunk_size, **_scorer_settings(sizes)
    )


def literal_scores(model: nn.Module, images: Tensor, sizes: Sizes) -> Tensor:
    """The literal reference on the same inputs and draws: (B, h, w)."""
    generator = torch.Generator().manual_seed(sizes.seed)
    return reference_patch_loss_scores(
        model, images, generator=generator, **_scorer_settings(sizes)
    )


def masked_variants(images: Tensor, sizes: Sizes) -> tuple[Tensor, Tensor]:
    """The B*K filled inputs and pixel masks the scorer feeds the model, drawn the way it draws
    them (image by image: K masks, then the fill): (B*K, C, H, W) and (B*K, 1, H, W)."""
    grid = patch_grid(images, sizes.patch_size)
    generator = torch.Generator().manual_seed(sizes.seed)
    fill = MeanFill()
    inputs, masks = [], []
    for image, image_generator in zip(
        images, per_image_generators(images.shape[0], generator, None), strict=True
    ):
        draws = sample_masks(
            grid,
            ratio=sizes.ratio,
            samples=sizes.samples,
            sampling="random",
            generator=image_generator,
        ).to(images.device)
        pixel_mask = upsample_mask(draws, sizes.patch_size)  # (K, 1, H, W)
        target = image.unsqueeze(0).expand(sizes.samples, -1, -1, -1)
        inputs.append(fill(target, pixel_mask, image_generator))
        masks.append(pixel_mask)
    return torch.cat(inputs), torch.cat(masks)


def forward_floor(model: nn.Module, inputs: Tensor, masks: Tensor, chunk_size: int) -> int:
    """The scorer's floor: only the model on the prepared variants, `chunk_size` at a time, in
    eval mode without grad. `reconstruct` is the scorer's call: model(inputs) for a model
    without a mask token. Returns the number of variants forwarded."""
    forwarded = 0
    with evaluating(model):
        for x, m in zip(inputs.split(chunk_size), masks.split(chunk_size), strict=True):
            reconstruct(model, x, m)
            forwarded += x.shape[0]
    return forwarded


def literal_forwards(model: nn.Module, inputs: Tensor, masks: Tensor) -> int:
    """The literal reference's model cost alone: the B*K variants one at a time."""
    return forward_floor(model, inputs, masks, chunk_size=1)


@dataclass
class TrainParts:
    """What both training loops share: same loss object, same images, same masking settings."""

    images: Tensor
    loss: WeightedLoss
    strategy: RandomMasking
    fill: MeanFill


def train_parts(sizes: Sizes, device: torch.device | str = "cpu") -> TrainParts:
    return TrainParts(
        images=bench_images(sizes).to(device),
        loss=build_loss({"msssim_l1": 1.0}),
        strategy=RandomMasking(sizes.patch_size, sizes.ratio),
        fill=MeanFill(),
    )


def make_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    """The pretraining optimizer with the spec's defaults (pretrain.lr 1e-3, weight_decay 0)."""
    return torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)


def smsweep_steps(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    parts: TrainParts,
    generator: torch.Generator,
    steps: int,
) -> list[float]:
    """`steps` steps as `pretrain.train_partition` runs them: a fresh mask from the strategy, then
    `pretrain_step`. Returns the losses."""
    masks = per_batch_masks(parts.strategy)
    indices = torch.arange(parts.images.shape[0])
    losses = []
    for _ in range(steps):
        mask = masks(parts.images, indices, generator)
        losses.append(
            pretrain_step(
                model,
                parts.images,
                mask,
                fill=parts.fill,
                loss=parts.loss,
                optimizer=optimizer,
                generator=generator,
            )
        )
    return losses


def fixed_pixel_mask(parts: TrainParts, seed: int) -> Tensor:
    """The bare loop's mask: the strategy's first draw from `seed`, precomputed (B, 1, H, W)."""
    return parts.strategy(parts.images, torch.Generator().manual_seed(seed)).pixels()


def bare_steps(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    parts: TrainParts,
    pixel_mask: Tensor,
    steps: int,
) -> list[Tensor]:
    """The floor: a plain torch loop, mean fill inline, fixed mask, no checks, no host syncs.
    Returns the (detached) losses."""
    images = parts.images
    losses = []
    for _ in range(steps):
        inputs = torch.where(pixel_mask, images.mean(dim=(2, 3), keepdim=True), images)
        value = parts.loss(model(inputs), images, pixel_mask)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        losses.append(value.detach())
    return losses
