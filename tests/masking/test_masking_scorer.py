"""The vectorized selective scorer against the literal reference, its draws, and its mechanism."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from smsweep.method.masking import RandomMasking, SelectiveMasking, patch_loss_scores, sample_masks
from smsweep.method.masking.base import upsample_mask
from smsweep.method.masking.fills import MeanFill, NoiseFill
from smsweep.method.masking.reference import reference_patch_loss_scores
from smsweep.method.masking.scorer import masked_patch_mean, sample_mask_batch
from smsweep.method.models import MaskedUnet


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class Blur(nn.Module):
    """A "model" that reconstructs by blurring its input: it cannot restore texture."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), 5, stride=1)


def _score_both(model, images, **kwargs):
    fast = patch_loss_scores(model, images, generator=seeded(5), **kwargs)
    slow = reference_patch_loss_scores(model, images, generator=seeded(5), **kwargs)
    return fast, slow


@pytest.mark.parametrize("sampling", ["random", "complementary"])
@pytest.mark.parametrize("fill", [MeanFill(), NoiseFill()], ids=["mean", "noise"])
def test_vectorized_equals_reference_float64(tiny_model, sampling, fill):
    model = copy.deepcopy(tiny_model).double()
    images = torch.rand(2, 3, 32, 32, generator=seeded(1), dtype=torch.float64)
    common = dict(patch_size=8, ratio=0.5, samples=3, fill=fill, sampling=sampling)
    fast = patch_loss_scores(model, images, generator=seeded(5), chunk_size=4, **common)
    slow = reference_patch_loss_scores(model, images, generator=seeded(5), **common)
    assert fast.shape == slow.shape == (2, 4, 4) and fast.dtype == torch.float32
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=0)


def test_vectorized_equals_reference_float32_weights_and_token_model(tiny_model):
    model = MaskedUnet(copy.deepcopy(tiny_model), mask_stage=2, patch_sizes=[8])
    nn.init.normal_(model.token)  # a visible token: the pixel mask must reach the model
    images = torch.rand(2, 3, 32, 32, generator=seeded(2))
    common = dict(
        patch_size=8, ratio=0.3, samples=2, fill=MeanFill(), ssim_weight=0.5, l1_weight=2.0
    )
    fast = patch_loss_scores(model, images, generator=seeded(5), chunk_size=3, **common)
    slow = reference_patch_loss_scores(model, images, generator=seeded(5), **common)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=0)


@pytest.mark.parametrize("patch_size", [1, 4, 16])
def test_vectorized_equals_reference_for_every_patch_size(patch_size):
    images = torch.rand(2, 3, 16, 16, generator=seeded(6))
    common = dict(patch_size=patch_size, ratio=0.5, samples=3, fill=NoiseFill())
    fast = patch_loss_scores(Blur(), images, generator=seeded(5), chunk_size=4, **common)
    slow = reference_patch_loss_scores(Blur(), images, generator=seeded(5), **common)
    assert fast.shape == slow.shape == (2, 16 // patch_size, 16 // patch_size)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=0)


def test_scores_do_not_depend_on_chunk_size(tiny_model, images):
    kwargs = dict(patch_size=16, ratio=0.5, samples=3, fill=MeanFill())
    one = patch_loss_scores(tiny_model, images, generator=seeded(0), chunk_size=1, **kwargs)
    all_at_once = patch_loss_scores(
        tiny_model, images, generator=seeded(0), chunk_size=64, **kwargs
    )
    torch.testing.assert_close(one, all_at_once, atol=1e-6, rtol=0)


@pytest.mark.parametrize("fill", [MeanFill(), NoiseFill()], ids=["chunk-by-chunk", "per-image"])
def test_only_whole_chunks_are_forwarded_except_the_last(tiny_model, fill):
    sizes = []

    class Counting(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = tiny_model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            sizes.append(x.shape[0])
            return self.inner(x)

    images = torch.rand(5, 3, 32, 32, generator=seeded(3))  # 5 x K=3 = 15 variants
    kwargs = dict(patch_size=8, ratio=0.5, samples=3, fill=fill)
    scores = patch_loss_scores(Counting(), images, generator=seeded(0), chunk_size=4, **kwargs)
    assert sizes == [4, 4, 4, 3]  # not 4, 2 (image 2's rest), ...: the rest waits for the next
    reference = patch_loss_scores(tiny_model, images, generator=seeded(0), chunk_size=64, **kwargs)
    torch.testing.assert_close(scores, reference, atol=1e-6, rtol=0)


@pytest.mark.parametrize("seeds", [None, [7, 8, 9, 10, 11]], ids=["generator", "seeds"])
def test_masks_drawn_chunk_by_chunk_are_those_drawn_all_at_once(seeds):
    """Chunks of 4 variants of K=3: each chunk draws the masks of the images it reaches into,
    and they are the masks (and leave the generator where) one draw for all images would."""
    seen = []

    class Recording(nn.Module):
        takes_pixel_mask = True

        def forward(self, x: torch.Tensor, pixel_mask: torch.Tensor) -> torch.Tensor:
            seen.append(pixel_mask)
            return x

    images = torch.rand(5, 3, 16, 16, generator=seeded(3))
    draw = dict(ratio=0.5, samples=3, sampling="random")
    generator = seeded(0)
    common = dict(patch_size=4, fill=MeanFill(), chunk_size=4, seeds=seeds, **draw)
    patch_loss_scores(Recording(), images, generator=generator, **common)
    reference = seeded(0)
    generators = [seeded(seed) for seed in seeds] if seeds else [reference] * 5
    grids = sample_mask_batch((4, 4), generators=generators, **draw)  # (5, 3, 4, 4)
    assert torch.equal(torch.cat(seen), upsample_mask(grids.flatten(0, 1), 4))
    assert torch.equal(torch.rand(3, generator=generator), torch.rand(3, generator=reference))


def test_a_fill_that_does_not_say_it_draws_nothing_is_called_per_image(tiny_model, images):
    calls = []

    def mean_fill(target, pixel_mask, generator=None):  # no `draws` attribute
        calls.append(target.shape[0])
        return MeanFill()(target, pixel_mask)

    kwargs = dict(patch_size=16, ratio=0.5, samples=3, chunk_size=4)
    ours = patch_loss_scores(tiny_model, images, generator=seeded(0), fill=mean_fill, **kwargs)
    assert calls == [3] * len(images)  # each image's K variants, right after its masks
    batched = patch_loss_scores(tiny_model, images, generator=seeded(0), fill=MeanFill(), **kwargs)
    torch.testing.assert_close(ours, batched, atol=1e-6, rtol=0)


@pytest.mark.parametrize("fill", [MeanFill(), NoiseFill()], ids=["chunk-by-chunk", "per-image"])
def test_per_image_seeds_make_scores_independent_of_the_batch(tiny_model, fill):
    images = torch.rand(3, 3, 32, 32, generator=seeded(4))
    kwargs = dict(patch_size=8, ratio=0.5, samples=3, fill=fill)
    batch = patch_loss_scores(tiny_model, images, seeds=[10, 11, 12], **kwargs)
    for index, seed in enumerate([10, 11, 12]):
        alone = patch_loss_scores(tiny_model, images[index : index + 1], seeds=[seed], **kwargs)
        torch.testing.assert_close(alone[0], batch[index], atol=1e-6, rtol=0)
    shard = patch_loss_scores(tiny_model, images[1:], seeds=[11, 12], **kwargs)
    torch.testing.assert_close(shard, batch[1:], atol=1e-6, rtol=0)


def test_scorer_restores_train_mode(tiny_model, images):
    tiny_model.train()
    patch_loss_scores(
        tiny_model,
        images,
        patch_size=16,
        ratio=0.5,
        samples=1,
        fill=MeanFill(),
        generator=seeded(0),
    )
    assert tiny_model.training


@pytest.mark.parametrize(
    ("grid", "ratio", "samples"),
    [((4, 4), 0.5, 4), ((4, 4), 0.5, 5), ((3, 5), 0.3, 3), ((8, 8), 0.25, 7)],
)
def test_complementary_sampling_masks_every_patch_equally_often(grid, ratio, samples):
    masks = sample_masks(
        grid, ratio=ratio, samples=samples, sampling="complementary", generator=seeded(0)
    )  # (K, h, w)
    num_patches = grid[0] * grid[1]
    per_sample = masks.flatten(1).sum(1)
    assert (per_sample == per_sample[0]).all()  # each sample masks exactly m patches
    times = masks.sum(0)  # how often each patch was masked
    total = int(per_sample[0]) * samples
    assert set(times.flatten().tolist()) <= {total // num_patches, -(-total // num_patches)}
    assert int(times.max() - times.min()) <= 1


def test_complementary_is_exact_when_n_divides_k_times_m():
    masks = sample_masks(
        (4, 4), ratio=0.5, samples=4, sampling="complementary", generator=seeded(3)
    )
    assert (masks.sum(0) == 2).all()
    random = sample_masks((4, 4), ratio=0.5, samples=4, sampling="random", generator=seeded(3))
    assert (random.flatten(1).sum(1) == 8).all() and not (random.sum(0) == 2).all()


def test_never_masked_patches_get_the_mean_of_the_masked_ones():
    losses = torch.tensor([[[[1.0, 2.0, 9.0]], [[3.0, 4.0, 9.0]]]])  # (B=1, K=2, h=1, w=3)
    masks = torch.tensor([[[[True, True, False]], [[True, False, False]]]])
    scores = masked_patch_mean(losses, masks)
    # patch 0: (1 + 3) / 2 = 2, patch 1: 2 (masked once), patch 2: never -> mean(2, 2) = 2
    assert scores.tolist() == [[[2.0, 2.0, 2.0]]]
    masks[0, 1, 0, 0] = False  # patch 0 now only sample 0: 1; fallback mean(1, 2) = 1.5
    assert masked_patch_mean(losses, masks).tolist() == [[[1.0, 2.0, 1.5]]]


def _half_textured(count: int) -> torch.Tensor:
    """Left half flat at 0.5 (the image mean, so the mean fill restores it), right half noise."""
    images = torch.full((count, 3, 64, 64), 0.5)
    images[..., 32:] = torch.rand(count, 3, 64, 32, generator=seeded(9))
    return images


def test_selective_masks_concentrate_on_texture_random_does_not():
    images = _half_textured(4)
    selective = SelectiveMasking(patch_size=8, ratio=0.5, samples=5)(images, seeded(0), Blur())
    random = RandomMasking(patch_size=8, ratio=0.5)(images, seeded(0))

    def textured_share(grid: torch.Tensor) -> float:  # grid (B, 8, 8); columns 4.. are textured
        return float(grid[..., 4:].sum() / grid.sum())

    assert textured_share(selective.grid) > 0.9
    assert 0.35 < textured_share(random.grid) < 0.65
