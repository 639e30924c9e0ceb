"""Selective-masking patch scores (SMIR, arXiv 2512.06981), vectorized.

The model (eval mode, no grad) reconstructs K masked variants of every image; a per-pixel loss
map, (1 - SSIM with a 3x3 window cut to the pixel's patch) + L1 (`smsweep.method.masking.loss_map`),
is averaged per patch over the samples in which the patch was masked. A patch's score thus
depends on its own pixels only, wherever it sits. `smsweep.method.masking.reference` is the same
computation written literally with loops; the tests hold the two within 1e-5.

Scores can tie (the never-masked rule gives those patches one score): the mask breaks ties at
random, from a permutation seeded per image (`MaskingStrategy.__call__` from the batch
generator, `smsweep.method.pretrain.MaskTable.from_scores` from each image's seed), never by
position.

`patch_loss_scores` is a plain function of (model, images) so a Ray actor that only has the
model weights and a list of images can run it; pass `seeds` to make each image's draws depend on
its own seed only, so shards scored in different processes give the same scores.

On a GPU the host's work hides behind the forwards it has queued: the masks of the images a
chunk needs are drawn on the CPU as that chunk is built, so chunk i + 1's draws run while chunk
i's forwards do (the same masks as drawing all first: each image draws from its generator in
image order), and the loss map is one compiled function (`loss_map.compiled_patch_mean_losses`)
instead of ~30 elementwise passes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from smsweep.errors import SpecError
from smsweep.method.masking.base import (
    check_patch_size,
    check_ratio,
    evaluating,
    mask_count,
    patch_grid,
    to_device,
    upsample_mask,
)
from smsweep.method.masking.fills import Fill
from smsweep.method.masking.loss_map import compiled_patch_mean_losses, pixel_loss_map

SAMPLINGS = ("random", "complementary")
LOSS_GROUP_ELEMENTS = 2**17  # input values per loss-map call (10 variants of 3x64x64)


def patch_loss_scores(
    model: nn.Module,
    images: Tensor,
    *,
    patch_size: int,
    ratio: float,
    samples: int,
    fill: Fill,
    generator: torch.Generator | None = None,
    sampling: str = "random",
    ssim_weight: float = 1.0,
    l1_weight: float = 1.0,
    chunk_size: int = 64,
    seeds: Sequence[int] | None = None,
    compile_loss_map: bool | None = None,
) -> Tensor:
    """Per-patch reconstruction loss: images (B, C, H, W) in [0, 1] -> (B, H/p, W/p) float32.

    Draws: image b's K masks (`sample_masks`), then its fill noise, come from `seeds[b]` when
    seeds are given (then an image's scores do not depend on the other images in the call), else
    from `generator`, image after image. The B*K variants go through the model `chunk_size` at a
    time. A model with `takes_pixel_mask = True` (MaskedUnet) also gets the pixel mask.
    `compile_loss_map`: the loss map through `torch.compile` (a C++ compiler on a CPU, Triton on
    a GPU; compiled once per process and input shape); None: on CUDA only (on a CPU the eager
    map in cache-sized groups needs no compiler and no compile time).

    Never-masked rule: a patch that was masked in none of the K samples (probability (1-r)^K
    with random sampling) gets the mean score of that image's patches that were masked at least
    once, so it is neither preferred nor excluded by the top-k. Such patches tie: give the
    scores to `top_k_mask` with random tie keys (see the module docstring).
    """
    patch_size = check_patch_size(patch_size)
    ratio = check_ratio(ratio)
    check_scorer_settings(samples, sampling, ssim_weight, l1_weight, chunk_size)
    if images.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    if seeds is not None and len(seeds) != images.shape[0]:
        raise ValueError(f"got {len(seeds)} seeds for {images.shape[0]} images: pass one per image")
    height, width = patch_grid(images, patch_size)
    if mask_count(height * width, ratio) == 0:
        raise SpecError(
            f"ratio={ratio} of {height * width} patches rounds to 0 masked patches: "
            f"increase ratio or use a smaller patch_size"
        )
    generators = per_image_generators(images.shape[0], generator, seeds)
    weights = (ssim_weight, l1_weight)
    if compile_loss_map is None:
        compile_loss_map = images.device.type == "cuda"
    draw = dict(grid=(height, width), ratio=ratio, samples=samples, sampling=sampling)
    drawn: list[Tensor] = []  # masks on the images' device: (K, h, w) or (n, K, h, w) each
    patch_losses: list[Tensor] = []
    with evaluating(model):
        if getattr(fill, "draws", True):
            chunks = _filled_image_by_image(images, generators, fill, drawn, draw, chunk_size)
        else:
            chunks = _filled_chunk_by_chunk(images, generators, fill, drawn, draw, chunk_size)
        for x, y, m in chunks:
            reconstructions = reconstruct(model, x, m)
            patch_losses += _patch_losses(reconstructions, y, patch_size, weights, compile_loss_map)
    grids = torch.cat(drawn).view(images.shape[0], samples, height, width)
    losses = torch.cat(patch_losses).view(grids.shape)  # (B, K, h, w)
    return masked_patch_mean(losses, grids).float()


Chunk = tuple[Tensor, Tensor, Tensor]  # (filled inputs, targets, pixel masks) of n variants


def _filled_chunk_by_chunk(
    images: Tensor,
    generators: list[torch.Generator],
    fill: Fill,
    drawn: list[Tensor],
    draw: dict[str, Any],
    chunk_size: int,
) -> Iterator[Chunk]:
    """For fills that draw nothing: the masks of the images whose variants a chunk holds are
    drawn as it is built, in image order (then appended to `drawn`, (n, K, h, w) on the images'
    device), so that on a GPU the host draws chunk i + 1's masks while chunk i's forwards run;
    each chunk is built and filled in a few batched operations (on a GPU, per-image steps cost
    more in launches than in arithmetic)."""
    samples, patch_size = draw["samples"], images.shape[-1] // draw["grid"][1]
    total, ready = len(generators) * samples, 0  # variants in all; images drawn so far
    pending = torch.empty(0, *draw["grid"], dtype=torch.bool, device=images.device)
    for start in range(0, total, chunk_size):
        end = min(start + chunk_size, total)
        needed = -(-end // samples)  # the images variants start..end-1 belong to
        if needed > ready:
            grids = sample_mask_batch(generators=generators[ready:needed], **draw)
            drawn.append(to_device(grids, images.device))  # (n, K, h, w)
            pending = torch.cat([pending, drawn[-1].flatten(0, 1)])
            ready = needed
        variants, pending = pending[: end - start], pending[end - start :]  # (n, h, w)
        owner = torch.arange(start, end, device=images.device) // samples  # variant -> image
        pixel_mask = upsample_mask(variants, patch_size)
        target = images.index_select(0, owner)
        yield fill(target, pixel_mask), target, pixel_mask


def _filled_image_by_image(
    images: Tensor,
    generators: list[torch.Generator],
    fill: Fill,
    drawn: list[Tensor],
    draw: dict[str, Any],
    chunk_size: int,
) -> Iterator[Chunk]:
    """For fills that draw noise (or may: a fill without `draws = False`): image b's masks, then
    its fill noise, come from its generator in that order, so each image's K variants are
    filled as soon as its masks are drawn. Only whole chunks are yielded, but the last: the rest
    waits for the next image (at most chunk_size + K - 1 variants in memory)."""
    patch_size = images.shape[-1] // draw["grid"][1]
    pending = _Pending()
    for index, (image, image_generator) in enumerate(zip(images, generators, strict=True)):
        grid = to_device(sample_masks(generator=image_generator, **draw), images.device)
        drawn.append(grid)  # moved once: the scores' masks are these
        pixel_mask = upsample_mask(grid, patch_size)  # (K, 1, H, W)
        target = image.unsqueeze(0).expand(len(grid), -1, -1, -1)  # (K, C, H, W)
        pending.add(fill(target, pixel_mask, image_generator), target, pixel_mask)
        last = index == images.shape[0] - 1
        if pending.rows >= chunk_size or last:
            yield from pending.take(chunk_size, everything=last)


def _patch_losses(
    reconstructions: Tensor,
    targets: Tensor,
    patch_size: int,
    weights: tuple[float, float],
    compiled: bool,
) -> list[Tensor]:
    """Per-patch mean loss, (n, h, w) per group of variants. Compiled, a chunk is one call. In
    eager mode on the CPU the loss map's intermediates (~15x the images) would not stay in the
    caches for a whole chunk, so it runs on groups of about LOSS_GROUP_ELEMENTS input values (all
    64 variants of a chunk at once took twice as long on 2 cores); on a GPU a chunk is one group
    (fewer launches)."""
    reconstructions = reconstructions.float()  # a bf16 model's output: SSIM needs float32
    if compiled:
        return [
            compiled_patch_mean_losses()(reconstructions, targets, *weights, patch_size=patch_size)
        ]
    group = len(reconstructions)
    if reconstructions.device.type == "cpu":
        group = max(1, LOSS_GROUP_ELEMENTS // reconstructions[0].numel())
    losses = []
    for x, y in zip(reconstructions.split(group), targets.split(group), strict=True):
        loss = pixel_loss_map(x, y, *weights, patch_size=patch_size)  # (n, H, W)
        losses.append(F.avg_pool2d(loss.unsqueeze(1), patch_size).squeeze(1))
    return losses


class _Pending:
    """Masked variants waiting for a forward: (inputs, targets, pixel masks), K rows per image."""

    def __init__(self) -> None:
        self.parts: list[tuple[Tensor, Tensor, Tensor]] = []
        self.rows = 0

    def add(self, inputs: Tensor, targets: Tensor, masks: Tensor) -> None:
        self.parts.append((inputs, targets, masks))
        self.rows += inputs.shape[0]

    def take(self, chunk_size: int, *, everything: bool) -> list[tuple[Tensor, Tensor, Tensor]]:
        """Chunks of exactly chunk_size rows (and, with `everything`, the smaller rest); what is
        not taken stays pending."""
        inputs, targets, masks = (torch.cat(part) for part in zip(*self.parts, strict=True))
        taken = self.rows if everything else self.rows - self.rows % chunk_size
        rest = (inputs[taken:].clone(), targets[taken:].clone(), masks[taken:].clone())
        self.parts = [rest] if taken < self.rows else []
        self.rows -= taken
        return list(
            zip(
                inputs[:taken].split(chunk_size),
                targets[:taken].split(chunk_size),
                masks[:taken].split(chunk_size),
                strict=True,
            )
        )


def per_image_generators(
    num_images: int, generator: torch.Generator | None, seeds: Sequence[int] | None
) -> list[torch.Generator]:
    """One generator per image: a fresh one from each seed, or the shared one repeated."""
    if seeds is not None:
        return [torch.Generator().manual_seed(int(seed)) for seed in seeds]
    if generator is None:
        raise ValueError("pass a seeded torch.Generator, or one seed per image (seeds=...)")
    return [generator] * num_images


def sample_masks(
    grid: tuple[int, int], *, ratio: float, samples: int, sampling: str, generator: torch.Generator
) -> Tensor:
    """K masks of one image's patch grid, each with exactly round(ratio * N) patches: (K, h, w).

    "random": K independent uniform subsets.
    "complementary": one random permutation of the N patches; sample k masks the cyclic window
    [k*m, (k+1)*m) (mod N) of it, m = round(ratio * N). Guarantee: every patch is masked either
    floor(K*m/N) or ceil(K*m/N) times (exactly K*m/N when N divides K*m, e.g. ratio 0.5 with an
    even K), hence at least once whenever K*m >= N (e.g. K >= 2 at ratio 0.5).
    """
    return sample_mask_batch(
        grid, ratio=ratio, samples=samples, sampling=sampling, generators=[generator]
    )[0]


def sample_mask_batch(
    grid: tuple[int, int],
    *,
    ratio: float,
    samples: int,
    sampling: str,
    generators: Sequence[torch.Generator],
) -> Tensor:
    """`sample_masks` for several images, image b's K masks from `generators[b]`, drawn in the
    order of the images (one generator repeated draws what a loop over the images would):
    (B, K, h, w). Only the draws are per image; sorting and scattering run once."""
    height, width = grid
    num_patches = height * width
    count = mask_count(num_patches, ratio)
    if sampling == "random":
        noise = torch.stack([torch.rand(samples, num_patches, generator=g) for g in generators])
        # the m smallest draws of each sample (a uniform subset); a partial selection, several
        # times faster than a full argsort at 1024 patches
        chosen = noise.topk(count, dim=2, largest=False, sorted=False).indices  # (B, K, m)
    elif sampling == "complementary":
        permutations = torch.stack([torch.randperm(num_patches, generator=g) for g in generators])
        slots = torch.arange(samples)[:, None] * count + torch.arange(count)[None, :]  # (K, m)
        chosen = permutations[:, slots % num_patches]  # (B, K, m)
    else:
        raise SpecError(f"unknown sampling {sampling!r}; valid: {sorted(SAMPLINGS)}")
    masks = torch.zeros(len(generators), samples, num_patches, dtype=torch.bool)
    masks.scatter_(2, chosen, True)
    return masks.view(len(generators), samples, height, width)


def reconstruct(model: nn.Module, inputs: Tensor, pixel_mask: Tensor) -> Tensor:
    """model(inputs), passing the (n, 1, H, W) mask to models that declare `takes_pixel_mask`."""
    if getattr(model, "takes_pixel_mask", False):
        return model(inputs, pixel_mask)
    return model(inputs)


def masked_patch_mean(patch_losses: Tensor, masks: Tensor) -> Tensor:
    """Mean loss of each patch over the samples that masked it, with the never-masked rule.

    patch_losses: (B, K, h, w) float; masks: (B, K, h, w) bool -> (B, h, w).
    """
    counts = masks.sum(dim=1)  # (B, h, w)
    means = (patch_losses * masks).sum(dim=1) / counts.clamp(min=1)
    seen = counts > 0
    seen_mean = (means * seen).sum(dim=(1, 2)) / seen.sum(dim=(1, 2)).clamp(min=1)  # (B,)
    return torch.where(seen, means, seen_mean[:, None, None])


def check_scorer_settings(
    samples: int, sampling: str, ssim_weight: float, l1_weight: float, chunk_size: int
) -> None:
    """Validate the scorer's settings (shared with `SelectiveMasking.__init__`)."""
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise SpecError(f"samples must be an integer >= 1 (paper: 5), got {samples!r}")
    if sampling not in SAMPLINGS:
        raise SpecError(f"unknown sampling {sampling!r}; valid: {sorted(SAMPLINGS)}")
    if ssim_weight < 0 or l1_weight < 0 or ssim_weight + l1_weight == 0:
        raise SpecError(
            f"ssim_weight and l1_weight must be >= 0 and not both 0, "
            f"got {ssim_weight!r} and {l1_weight!r}"
        )
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise SpecError(
            f"chunk_size must be an integer >= 1 (variants per forward), got {chunk_size!r}"
        )
