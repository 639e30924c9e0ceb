"""The contrastive pretraining objective (`pretrain.objective: contrastive`): MoCo-v2 with
masking on the query branch, as saliency-guided masking does it (papers/saliency_guided_masking.md).

Each image gives two augmented views (random resized crop, flip, colour jitter, grayscale, blur,
all drawn from the partition's seeded generator). The query view is masked by the trial's
strategy and filled (`masking.fill`: mean, blur, high-pass, ...); the key view is not masked
(masking the key branch hurts, the paper finds). The query encoder is the U-Net's encoder, so
fine-tuning receives it as after reconstruction; the key encoder is its momentum copy. The loss
is InfoNCE of each query against its key, the queue of past keys and, with hard negatives, its
own key view with most of its salient region masked (`HardSaliencyMasking` at `hard_ratio`),
which looks like the image but lacks the object.

Saliency (for the `saliency` strategies and the hard negatives) comes from a frozen network: a
copy of the encoder taken at the start of each partition, or the encoder weights in
`pretrain.contrastive.saliency_weights` (a local file).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from smsweep.method.masking import MaskingStrategy
from smsweep.method.masking.fills import Fill, gaussian_blur
from smsweep.method.precision import FLOAT32, Precision
from smsweep.method.pretrain import NonFiniteLoss, run_passes


class Projector(nn.Module):
    """MoCo-v2's head: global average pool of the deepest features, then a 2-layer MLP."""

    def __init__(self, channels: int, dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(channels, channels), nn.ReLU(), nn.Linear(channels, dim))

    def forward(self, deepest: Tensor) -> Tensor:
        return F.normalize(self.mlp(deepest.mean(dim=(2, 3))), dim=1)


class Saliency(nn.Module):
    """A frozen encoder, shaped as the saliency strategies read it (`.encoder`)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder.eval().requires_grad_(False)


class Contrastive(nn.Module):
    """The pretraining model of the contrastive objective: the reconstruction model (whose
    encoder is the query encoder and whose weights fine-tuning receives), the query projector,
    the momentum key encoder and projector, and the queue of keys. All of it is state: a
    checkpoint holds it and a resumed trial continues exactly."""

    def __init__(self, reconstruction: nn.Module, settings) -> None:
        super().__init__()
        self.reconstruction = reconstruction
        channels = reconstruction.encoder.out_channels[-1]
        self.query_head = Projector(channels, settings.dim)
        self.key_encoder = copy.deepcopy(reconstruction.encoder).requires_grad_(False)
        self.key_head = copy.deepcopy(self.query_head).requires_grad_(False)
        self.momentum, self.temperature = settings.momentum, settings.temperature
        self.register_buffer("queue", F.normalize(torch.randn(settings.queue, settings.dim), dim=1))
        self.register_buffer("queue_at", torch.zeros((), dtype=torch.long))

    @property
    def encoder(self) -> nn.Module:
        return self.reconstruction.encoder

    def query(self, images: Tensor) -> Tensor:
        return self.query_head(self.encoder(images)[-1])

    @torch.no_grad()
    def key(self, images: Tensor) -> Tensor:
        return self.key_head(self.key_encoder(images)[-1])

    @torch.no_grad()
    def follow(self) -> None:
        """Move the key encoder and head towards the query's (exponential moving average)."""
        pairs = [(self.key_encoder, self.encoder), (self.key_head, self.query_head)]
        for key_part, query_part in pairs:
            for key_value, value in zip(
                key_part.state_dict().values(), query_part.state_dict().values(), strict=True
            ):
                if key_value.dtype.is_floating_point:
                    key_value.mul_(self.momentum).add_(value.detach(), alpha=1 - self.momentum)
                else:
                    key_value.copy_(value)

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        size, at = self.queue.shape[0], int(self.queue_at)
        rows = (torch.arange(keys.shape[0], device=keys.device) + at) % size
        self.queue[rows] = keys.to(self.queue.dtype)
        self.queue_at.fill_((at + keys.shape[0]) % size)


def info_nce(query: Tensor, key: Tensor, queue: Tensor, hard: Tensor | None, temperature: float):
    """InfoNCE: each query's positive is its key; its negatives are the queue and, when given,
    its own hard negative. Returns (loss, logits): logits column 0 is the positive, the last
    column the hard negative."""
    columns = [(query * key).sum(dim=1, keepdim=True), query @ queue.T]
    if hard is not None:
        columns.append((query * hard).sum(dim=1, keepdim=True))
    logits = torch.cat(columns, dim=1).float() / temperature
    labels = torch.zeros(query.shape[0], dtype=torch.long, device=query.device)
    return F.cross_entropy(logits, labels), logits


def augmented(images: Tensor, generator: torch.Generator) -> Tensor:
    """One MoCo-v2 view of each image in [0, 1]: random resized crop (scale 0.3-1, aspect
    3/4-4/3), horizontal flip, colour jitter (brightness, contrast, saturation 0.4) with p 0.8,
    grayscale p 0.2, Gaussian blur p 0.5; every draw from `generator`."""
    batch, _, height, width = images.shape
    draws = torch.rand(batch, 10, generator=generator)
    views = []
    for image, u in zip(images, draws, strict=True):
        area = (0.3 + 0.7 * float(u[0])) * height * width
        aspect = math.exp(math.log(3 / 4) + float(u[1]) * math.log(16 / 9))
        crop_h = max(1, min(height, round(math.sqrt(area / aspect))))
        crop_w = max(1, min(width, round(math.sqrt(area * aspect))))
        top = int(float(u[2]) * (height - crop_h + 1))
        left = int(float(u[3]) * (width - crop_w + 1))
        crop = image[:, top : top + crop_h, left : left + crop_w][None]
        view = F.interpolate(crop, size=(height, width), mode="bilinear", align_corners=False)[0]
        if u[4] < 0.5:
            view = view.flip(-1)
        if u[5] < 0.8:
            brightness, contrast, saturation = (1 + 0.8 * (float(v) - 0.5) for v in u[6:9])
            view = view * brightness
            view = (view - view.mean()) * contrast + view.mean()
            gray = view.mean(dim=0, keepdim=True)
            view = (view - gray) * saturation + gray
        if u[9] < 0.2:
            view = view.mean(dim=0, keepdim=True).expand_as(view)
        views.append(view.clamp(0, 1))
    stacked = torch.stack(views)
    blurred = torch.rand(batch, generator=generator) < 0.5
    if blurred.any():
        stacked[blurred] = gaussian_blur(stacked[blurred], sigma=1.0)
    return stacked


def contrastive_step(
    model: Contrastive,
    images: Tensor,
    strategy: MaskingStrategy,
    *,
    fill: Fill,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    saliency: nn.Module | None,
    hard: MaskingStrategy | None,
    precision: Precision = FLOAT32,
) -> float:
    """One optimizer step of the contrastive objective on a batch; returns the loss."""
    query_view = augmented(images.cpu(), generator).to(images.device)
    key_view = augmented(images.cpu(), generator).to(images.device)
    masks = strategy(query_view, generator, model=saliency if strategy.needs_model else None)
    filled = fill(query_view, masks.pixels().to(images.device), generator)
    with precision.context(images.device):
        query = model.query(filled)
    model.follow()
    with precision.context(images.device):
        key = model.key(key_view)
        negative = None
        if hard is not None:
            hidden = hard(key_view, generator, model=saliency).pixels().to(images.device)
            negative = model.key(fill(key_view, hidden, generator))
    loss, _ = info_nce(query.float(), key.float(), model.queue, _maybe(negative), model.temperature)
    number = float(loss.detach())
    if not math.isfinite(number):
        raise NonFiniteLoss(f"contrastive loss is {number}: lower pretrain.lr")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    model.enqueue(key.float())
    return number


def _maybe(tensor: Tensor | None) -> Tensor | None:
    return None if tensor is None else tensor.float()


def train_partition_contrastive(
    model: Contrastive,
    batches: Callable[[int], Iterable[tuple[Tensor, Tensor]]],
    strategy: MaskingStrategy,
    *,
    steps: int,
    fill: Fill,
    optimizer: torch.optim.Optimizer,
    mask_seed: Callable[[int], int],
    saliency: nn.Module | None,
    hard: MaskingStrategy | None,
    learning_rate: Callable[[int], float] | None = None,
    first_step: int = 0,
    precision: Precision = FLOAT32,
) -> float:
    """`steps` contrastive steps on one partition, pass after pass (`pretrain.run_passes`);
    returns the mean loss over the last pass's worth of steps."""
    model.train()

    def step(images: Tensor, indices: Tensor, generator: torch.Generator) -> float:
        return contrastive_step(
            model,
            images,
            strategy,
            fill=fill,
            optimizer=optimizer,
            generator=generator,
            saliency=saliency,
            hard=hard,
            precision=precision,
        )

    return run_passes(batches, step, steps, mask_seed, learning_rate, first_step)


def frozen_saliency(model: Contrastive, weights: str | None, build_encoder) -> Saliency:
    """The saliency network of a partition: the encoder's weights in the file `weights`
    (loaded into a fresh encoder by `build_encoder(path)`), or a frozen copy of the encoder as
    it is now."""
    if weights:
        return Saliency(build_encoder(weights))
    return Saliency(copy.deepcopy(model.encoder))
