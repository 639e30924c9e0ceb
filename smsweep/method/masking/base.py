"""The masking protocol: a strategy scores every patch, the mask is the top-scoring patches.

This is MAE's `random_masking` ("score every patch, sort, keep the top k") generalised: random
masking scores with noise, selective masking with reconstruction loss, saliency masking with
foreground membership. A strategy only has to produce scores; `top_k_mask` turns them into a mask
with an exact count, so every strategy masks exactly `mask_count(N, ratio)` patches per image.
Equal scores are ranked by random tie keys (`random_tie_keys`) where they can occur: a stable
sort alone would break them in row-major order, masking the top of the image first.

Randomness: every strategy takes a `torch.Generator` and draws on the CPU with it, then moves the
result to the images' device, so a seed gives the same mask on a laptop and on a GPU node.
"""

from __future__ import annotations

import contextlib
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from smsweep.errors import SpecError
from smsweep.spec import registry


@dataclass(frozen=True)
class PatchMask:
    """A mask on the patch grid that knows its patch size.

    grid: (B, H/p, W/p) bool, True = masked. patch_size: p, in pixels.
    """

    grid: Tensor
    patch_size: int

    def pixels(self) -> Tensor:
        """The mask at pixel resolution: (B, 1, H, W) bool."""
        return upsample_mask(self.grid, self.patch_size)

    @property
    def num_masked(self) -> Tensor:
        """Masked patches per image: (B,) long."""
        return self.grid.flatten(1).sum(1)


def mask_count(num_patches: int, ratio: float) -> int:
    """round(ratio * num_patches), halves rounded up (4.5 -> 5), the same rule everywhere."""
    return math.floor(ratio * num_patches + 0.5)


def patch_grid(images: Tensor, patch_size: int) -> tuple[int, int]:
    """(H/p, W/p) for images (B, C, H, W); both sides must be multiples of the patch size."""
    height, width = images.shape[-2:]
    if height % patch_size or width % patch_size:
        raise SpecError(
            f"image size {height}x{width} is not a multiple of patch_size={patch_size}: "
            f"resize or crop the images to a multiple of {patch_size}, or pick a patch size "
            f"that divides both sides"
        )
    return height // patch_size, width // patch_size


def top_k_mask(scores: Tensor, ratio: float, tie_keys: Tensor | None = None) -> Tensor:
    """The round(ratio * N) highest-scoring patches of each image.

    scores: (B, h, w) float -> (B, h, w) bool with exactly mask_count(h*w, ratio) True per image.
    Patches are ranked by (score, descending; tie key, ascending). `tie_keys` (B, h, w), e.g.
    `random_tie_keys`, breaks ties at random; without keys, ties go to the lower flat index
    (row-major), which puts every tie at the top of the image: pass None only for scores that
    cannot tie (continuous noise).
    """
    batch, height, width = scores.shape
    count = mask_count(height * width, ratio)
    flat = scores.reshape(batch, height * width)
    if tie_keys is None:
        order = torch.sort(flat, dim=1, descending=True, stable=True).indices  # (B, N)
    else:
        if tie_keys.shape != scores.shape:
            raise ValueError(
                f"tie_keys must have the scores' shape {tuple(scores.shape)}, "
                f"got {tuple(tie_keys.shape)}: one key per patch"
            )
        # sort by key first, then stably by score: equal scores keep the key order
        by_key = torch.sort(tie_keys.reshape(batch, -1).to(flat.device), dim=1, stable=True)
        by_score = torch.sort(flat.gather(1, by_key.indices), dim=1, descending=True, stable=True)
        order = by_key.indices.gather(1, by_score.indices)  # (B, N)
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask.scatter_(1, order[:, :count], True)
    return mask.reshape(batch, height, width)


def random_tie_keys(
    grid: tuple[int, int], generators: Sequence[torch.Generator], device: torch.device
) -> Tensor:
    """Tie-break keys for `top_k_mask`: a random permutation of the patches per image, image b's
    drawn from `generators[b]` (one generator repeated draws image after image): (B, h, w) long.
    A permutation, unlike uniform noise, never ties itself."""
    height, width = grid
    keys = torch.stack([torch.randperm(height * width, generator=g) for g in generators])
    return to_device(keys, device).view(len(generators), height, width)


def upsample_mask(grid: Tensor, patch_size: int) -> Tensor:
    """(B, h, w) bool patch grid -> (B, 1, h*p, w*p) bool pixel mask (one copy)."""
    batch, height, width = grid.shape
    pixels = grid[:, None, :, None, :, None].expand(-1, -1, -1, patch_size, -1, patch_size)
    return pixels.reshape(batch, 1, height * patch_size, width * patch_size)


def check_ratio(ratio: float, *, name: str = "ratio") -> float:
    """Validate a masking ratio: 0 < ratio < 1."""
    if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or not 0.0 < ratio < 1.0:
        raise SpecError(f"{name} must be a number with 0 < {name} < 1, got {ratio!r}")
    return float(ratio)


def check_patch_size(patch_size: int) -> int:
    """Validate a patch size: a positive int."""
    if not isinstance(patch_size, int) or isinstance(patch_size, bool) or patch_size < 1:
        raise SpecError(f"patch_size must be a positive integer (pixels), got {patch_size!r}")
    return patch_size


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Run `model` in eval mode without grad, then restore its train/eval mode (even on error)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


class MaskingStrategy(ABC):
    """A masking strategy: images (and, for some, the model) -> per-patch scores -> a mask.

    When things are called:
    - `__init__` once, at setup; it validates every argument (SpecError names the legal range).
    - `__call__(images, generator, model)` once per training batch (or once per partition for
      strategies whose masks are precomputed, e.g. selective); returns a `PatchMask`.
    - `scores(images, generator, model)` by `__call__`; public so scores can be logged, shown
      as galleries, or computed in another process and turned into masks with `top_k_mask`.
    - `seeded_scores(images, seeds, model)` once per partition by the pipeline, for strategies
      whose masks are computed from the previous partition's model (in-process or by actors).

    A subclass sets `name` (its entry in `smsweep.spec.registry` says what it can do, e.g.
    `needs_model`), implements `scores`, and builds itself from the spec in `from_spec`.
    Strategies hold only plain values (and fills), so they pickle: Ray ships them to workers
    and actors. `patch_size` and `ratio` exist on single-config strategies; `configs` on all
    (mixed has two). `generator` is a CPU torch.Generator; draws are moved to the images'
    device.

    Ties: a subclass whose scores can tie sets `scores_can_tie = True` (selective: its
    never-masked rule gives several patches one score); `__call__` then breaks ties at random
    with a permutation per image drawn from `generator` after the scores. Strategies that add
    continuous noise to their scores (random, block, saliency) leave it False and draw nothing
    extra; their masks stay what they were. Masks made from `seeded_scores` get their tie
    breaks from the same seeds (`smsweep.method.pretrain.MaskTable.from_scores`, `tie_seeds`).
    """

    name: ClassVar[str]
    scores_can_tie: ClassVar[bool] = False

    def __init__(self, patch_size: int = 16, ratio: float = 0.5) -> None:
        self.patch_size = check_patch_size(patch_size)
        self.ratio = check_ratio(ratio)

    @classmethod
    def from_spec(cls, masking: Any, fill: Any) -> MaskingStrategy:
        """The strategy with every setting it reads from the spec's `masking` section; `fill`
        is the input fill (for strategies that reconstruct masked images themselves)."""
        return cls(masking.patch_size, masking.ratio)

    @property
    def needs_model(self) -> bool:
        """Masks scored from the model after the previous partition (the registry says)."""
        return registry.strategy(self.name).needs_model

    @property
    def configs(self) -> tuple[tuple[int, float], ...]:
        """Every (patch size, ratio) this strategy can produce, e.g. to validate image sizes."""
        return ((self.patch_size, self.ratio),)

    @abstractmethod
    def scores(
        self, images: Tensor, generator: torch.Generator, model: nn.Module | None = None
    ) -> Tensor:
        """Per-patch scores, higher = masked first: images (B, C, H, W) -> (B, H/p, W/p) float."""

    def seeded_scores(
        self, images: Tensor, seeds: Sequence[int], model: nn.Module | None = None
    ) -> Tensor:
        """Scores where image b draws only from its own `seeds[b]`: (B, H/p, W/p).

        An image then scores the same whichever batch, shard or process it is scored in, which
        is what lets Ray actors score a partition and still give the in-process masks.
        Subclasses override this to batch the model forward; the draws must stay per image.
        """
        if len(seeds) != images.shape[0]:
            raise ValueError(f"got {len(seeds)} seeds for {images.shape[0]} images")
        return torch.cat(
            [
                self.scores(image[None], torch.Generator().manual_seed(int(seed)), model)
                for image, seed in zip(images, seeds, strict=True)
            ]
        )

    def __call__(
        self, images: Tensor, generator: torch.Generator, model: nn.Module | None = None
    ) -> PatchMask:
        """The mask for a batch of images (B, C, H, W); ties broken with `generator` when
        `scores_can_tie`."""
        scores = self.scores(images, generator, model)  # (B, h, w)
        tie_keys = None
        if self.scores_can_tie:
            generators = [generator] * scores.shape[0]
            tie_keys = random_tie_keys(tuple(scores.shape[1:]), generators, scores.device)
        return PatchMask(top_k_mask(scores, self.ratio, tie_keys), self.patch_size)

    def _require_model(self, model: nn.Module | None) -> nn.Module:
        if model is None:
            raise ValueError(
                f"the {self.name!r} masking strategy needs the model: "
                f"call strategy(images, generator, model=model)"
            )
        return model

    def __repr__(self) -> str:
        fields = ", ".join(f"{key}={value!r}" for key, value in vars(self).items())
        return f"{type(self).__name__}({fields})"


def uniform_noise(shape: tuple[int, ...], generator: torch.Generator, like: Tensor) -> Tensor:
    """U[0, 1) noise drawn on the CPU with `generator`, moved to `like`'s device (float32)."""
    return to_device(torch.rand(shape, generator=generator), like.device)


def to_device(tensor: Tensor, device: torch.device) -> Tensor:
    """A CPU draw moved to `device`. To a GPU it goes through pinned memory without blocking: a
    copy from pageable memory makes the host wait until the GPU has run all the work queued
    before it, so the host could not prepare the next step while the GPU runs this one."""
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
