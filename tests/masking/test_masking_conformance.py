"""Every registered strategy, automatically: a new strategy gets these tests by registering.

Strategies are built with their defaults and run on 64x64 images with a tiny real U-Net.
"""

from __future__ import annotations

import pickle

import pytest
import torch

from smsweep.errors import SpecError
from smsweep.method.masking import STRATEGIES, PatchMask, build_strategy, mask_count, top_k_mask
from smsweep.method.masking.base import random_tie_keys
from smsweep.spec import registry


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


NAMES = sorted(STRATEGIES)


def _mask(name, images, model, seed):
    return STRATEGIES[name]()(images, seeded(seed), model)


@pytest.mark.parametrize("name", NAMES)
def test_mask_type_shape_and_exact_count(name, images, tiny_model):
    strategy = STRATEGIES[name]()
    for seed in range(3):
        mask = strategy(images, seeded(seed), tiny_model)
        assert isinstance(mask, PatchMask)
        assert mask.grid.dtype == torch.bool
        size = mask.patch_size
        assert mask.grid.shape == (2, 64 // size, 64 // size)
        ratios = [ratio for patch, ratio in strategy.configs if patch == size]
        expected = {mask_count(mask.grid[0].numel(), ratio) for ratio in ratios}
        assert all(int(n) in expected for n in mask.num_masked), (mask.num_masked, expected)
        pixels = mask.pixels()
        assert pixels.shape == (2, 1, 64, 64) and pixels.dtype == torch.bool
        assert int(pixels.sum()) == int(mask.grid.sum()) * size * size


@pytest.mark.parametrize("name", NAMES)
def test_scores_shape(name, images, tiny_model):
    scores = STRATEGIES[name]().scores(images, seeded(0), tiny_model)
    assert scores.ndim == 3 and scores.shape[0] == 2 and scores.is_floating_point()
    assert 64 % scores.shape[1] == 0 and scores.shape[1] == scores.shape[2]


def test_none_masks_nothing(images):
    assert STRATEGIES["none"]()(images, seeded(0)).grid.sum() == 0


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_mask(name, images, tiny_model):
    first = _mask(name, images, tiny_model, seed=7)
    second = _mask(name, images, tiny_model, seed=7)
    assert first.patch_size == second.patch_size
    assert torch.equal(first.grid, second.grid)


@pytest.mark.parametrize("name", [n for n in NAMES if n != "none"])
def test_different_seeds_different_masks(name, images, tiny_model):
    masks = [_mask(name, images, tiny_model, seed) for seed in range(4)]
    assert any(
        m.patch_size != masks[0].patch_size or not torch.equal(m.grid, masks[0].grid)
        for m in masks[1:]
    )


@pytest.mark.parametrize("name", NAMES)
def test_pickle_round_trip(name, images, tiny_model):
    strategy = STRATEGIES[name]()
    restored = pickle.loads(pickle.dumps(strategy))
    assert type(restored) is type(strategy)
    original, copied = (
        strategy(images, seeded(3), tiny_model),
        restored(images, seeded(3), tiny_model),
    )
    assert original.patch_size == copied.patch_size
    assert torch.equal(original.grid, copied.grid)


@pytest.mark.parametrize("name", NAMES)
def test_model_mode_is_restored(name, images, tiny_model):
    for training in (True, False):
        tiny_model.train(training)
        STRATEGIES[name]()(images, seeded(0), tiny_model)
        assert tiny_model.training is training


@pytest.mark.parametrize("name", registry.model_based())
def test_model_strategies_ask_for_the_model(name, images):
    with pytest.raises(ValueError, match="needs the model"):
        STRATEGIES[name]()(images, seeded(0))


@pytest.mark.parametrize("name", [n for n in NAMES if n not in ("none", "mixed")])
@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.1, 1.5])
def test_ratio_out_of_range_is_a_spec_error(name, ratio):
    with pytest.raises(SpecError, match="0 < ratio < 1"):
        build_strategy(name, ratio=ratio)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(SpecError, match="valid strategies"):
        build_strategy("checkerboard")
    with pytest.raises(SpecError, match=r"valid:.*patch_size"):
        build_strategy("random", patch=8)


def test_image_size_must_be_a_multiple_of_the_patch_size():
    with pytest.raises(SpecError, match="multiple of patch_size=16"):
        build_strategy("random")(torch.rand(1, 3, 40, 40), seeded(0))


# Mixed draws one (patch size, ratio) per batch, so it has no per-image scores by design.
PER_IMAGE = [name for name in NAMES if name != "mixed"]


@pytest.mark.parametrize("name", PER_IMAGE)
def test_seeded_scores_do_not_depend_on_the_batch(name, images, tiny_model):
    """What lets actors score shards and still give the in-process masks."""
    strategy = STRATEGIES[name]()
    together = strategy.seeded_scores(images, [11, 12], tiny_model)
    alone = torch.cat(
        [
            strategy.seeded_scores(images[i : i + 1], [seed], tiny_model)
            for i, seed in enumerate([11, 12])
        ]
    )
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-6)
    assert torch.equal(
        strategy.seeded_scores(images, [11, 12], tiny_model),
        together,
    )
    if name != "none":
        other = strategy.seeded_scores(images, [21, 22], tiny_model)
        assert not torch.equal(other, together)


@pytest.mark.parametrize("name", PER_IMAGE)
def test_the_mask_is_the_top_of_the_scores_with_ties_drawn_only_where_scores_can_tie(
    name, images, tiny_model
):
    """Strategies with continuous scores draw nothing beyond their scores; those whose scores
    can tie draw one tie-break permutation per image from the same generator, after them."""
    strategy = STRATEGIES[name]()
    called_with, scored_with = seeded(5), seeded(5)
    mask = strategy(images, called_with, tiny_model)
    scores = strategy.scores(images, scored_with, tiny_model)  # (B, h, w)
    tie_keys = None
    if strategy.scores_can_tie:
        generators = [scored_with] * len(images)
        tie_keys = random_tie_keys(tuple(scores.shape[1:]), generators, scores.device)
    assert torch.equal(mask.grid, top_k_mask(scores, strategy.ratio, tie_keys))
    assert torch.equal(called_with.get_state(), scored_with.get_state())


def test_mixed_refuses_per_image_scores(images):
    with pytest.raises(TypeError, match="once per batch"):
        STRATEGIES["mixed"]().seeded_scores(images, [1, 2])
