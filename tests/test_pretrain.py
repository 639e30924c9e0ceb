"""smsweep.method.pretrain: derived seeds, precomputed mask tables, one pretraining step, and the
bit-exact determinism of `train_partition` that resuming a trial relies on. CPU, no Ray.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from smsweep.method.losses import build_loss
from smsweep.method.masking import MixedMasking, PatchMask, RandomMasking
from smsweep.method.masking.fills import MeanFill, NoiseFill
from smsweep.method.models import MaskedUnet, tiny_unet
from smsweep.method.pretrain import (
    MaskTable,
    NonFiniteLoss,
    derived_seed,
    drawn_once,
    per_batch_masks,
    pretrain_step,
    train_partition,
)
from smsweep.method.schedule import LearningRate, lr_factor


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture
def model() -> MaskedUnet:
    torch.manual_seed(0)
    return MaskedUnet(tiny_unet(), mask_stage=0, patch_sizes=[8])


def images(count: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(count, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.clone() for key, value in module.state_dict().items()}


def test_derived_seed_is_deterministic_distinct_and_31_bit():
    assert derived_seed(0, 1, 2) == derived_seed(0, 1, 2)
    seeds = {
        derived_seed(seed, stream, p) for seed in (0, 7) for stream in (0, 1) for p in range(5)
    }
    assert len(seeds) == 20  # every (seed, stream, partition) gets its own seed
    assert derived_seed(1, 2) != derived_seed(2, 1)  # order matters
    assert all(isinstance(s, int) and 0 <= s < 2**31 for s in seeds)


def test_mask_table_from_scores_takes_the_top_of_each_image():
    scores = torch.tensor(
        [
            [[0.9, 0.1], [0.5, 0.3]],
            [[0.0, 0.2], [0.4, 0.8]],
            [[0.7, 0.6], [0.1, 0.2]],
        ]
    )  # (3, 2, 2): N = 4 patches, ratio 0.5 -> the top 2 of each image
    table = MaskTable.from_scores([10, 20, 30], scores, ratio=0.5, patch_size=8)
    expected = {
        10: [[True, False], [True, False]],
        20: [[False, False], [True, True]],
        30: [[True, True], [False, False]],
    }
    assert set(table.grids) == {10, 20, 30} and table.patch_size == 8
    for index, grid in expected.items():
        assert torch.equal(table.grids[index], torch.tensor(grid)), index
    single = MaskTable.from_scores([10, 20, 30], scores, ratio=0.3, patch_size=8)  # round(1.2)
    assert [int(g.sum()) for g in single.grids.values()] == [1, 1, 1]
    assert bool(single.grids[10][0, 0]) and bool(single.grids[20][1, 1])


def test_mask_table_returns_the_requested_indices_in_order():
    scores = torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(1))
    table = MaskTable.from_scores([5, 6, 7], scores, ratio=0.25, patch_size=8)
    mask = table(images(2), torch.tensor([7, 5]), torch.Generator())
    assert isinstance(mask, PatchMask) and mask.patch_size == 8
    assert torch.equal(mask.grid, torch.stack([table.grids[7], table.grids[5]]))
    assert mask.pixels().shape == (2, 1, 32, 32)
    assert mask.num_masked.tolist() == [4, 4]


def test_mask_table_same_as():
    scores = torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(2))
    table = MaskTable.from_scores([0, 1], scores, 0.5, 8)
    assert table.same_as(MaskTable.from_scores([0, 1], scores.clone(), 0.5, 8))
    assert not table.same_as(MaskTable.from_scores([0, 1], scores, 0.5, 16))
    assert not table.same_as(MaskTable.from_scores([0, 2], scores, 0.5, 8))
    assert not table.same_as(MaskTable.from_scores([0, 1], scores.flip(0), 0.5, 8))


def test_mask_table_breaks_ties_at_random_from_each_images_seed():
    scores = torch.zeros(3, 4, 4)  # (n, h, w): every patch ties
    scores[:, 3, 3] = 1.0  # but one, which must always be masked
    table = MaskTable.from_scores([5, 6, 7], scores, 0.5, 8, tie_seeds=[50, 60, 70])
    grids = list(table.grids.values())
    assert all(bool(grid[3, 3]) and int(grid.sum()) == 8 for grid in grids)
    row_major = MaskTable.from_scores([5, 6, 7], scores, 0.5, 8)  # None: no ties expected
    assert not any(torch.equal(grid, row_major.grids[5]) for grid in grids)
    assert not torch.equal(grids[0], grids[1])  # each image its own draw
    again = MaskTable.from_scores([5, 6, 7], scores, 0.5, 8, tie_seeds=[50, 60, 70])
    assert again.same_as(table)
    shard = MaskTable.from_scores([6, 7], scores[1:], 0.5, 8, tie_seeds=[60, 70])
    assert all(torch.equal(shard.grids[i], table.grids[i]) for i in (6, 7))
    with pytest.raises(ValueError, match="scoring seed"):
        MaskTable.from_scores([5, 6, 7], scores, 0.5, 8, tie_seeds=[50, 60])


def test_mask_table_tie_breaks_do_not_reuse_the_scorers_draws():
    # the scorer draws from torch.Generator().manual_seed(seed); the tie breaks must not
    seed, scores = 50, torch.zeros(1, 4, 4)
    table = MaskTable.from_scores([0], scores, 0.5, 8, tie_seeds=[seed])
    scorer_first = torch.randperm(16, generator=torch.Generator().manual_seed(seed))
    as_if_reused = torch.zeros(16, dtype=torch.bool)
    as_if_reused[scorer_first.argsort()[:8]] = True
    assert not torch.equal(table.grids[0].flatten(), as_if_reused)


def step(model, batch, generator=None):
    generator = generator or torch.Generator().manual_seed(0)
    mask = RandomMasking(8, 0.5)(batch, generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss = build_loss({"msssim_l1": 1.0})
    return pretrain_step(
        model, batch, mask, fill=MeanFill(), loss=loss, optimizer=optimizer, generator=generator
    )


def test_pretrain_step_returns_a_finite_loss_and_updates_weights(model):
    before = snapshot(model)
    value = step(model, images())
    assert isinstance(value, float) and math.isfinite(value) and value > 0
    after = model.state_dict()
    assert not torch.equal(after["token"], before["token"])  # the token learns
    assert not torch.equal(after["unet.encoder.conv1.weight"], before["unet.encoder.conv1.weight"])


def test_nan_images_raise_non_finite_loss_before_stepping(model):
    before = snapshot(model)
    batch = images()
    batch[1, 0, 3, 3] = math.nan
    with pytest.raises(NonFiniteLoss, match="pretraining loss is nan"):
        step(model, batch)
    assert torch.equal(model.state_dict()["token"], before["token"])
    assert torch.equal(model.unet.encoder.conv1.weight, before["unet.encoder.conv1.weight"])


def run_partition(model, seed_offset: int = 0) -> float:
    fixed = [(images(2, seed=s), torch.tensor([2 * s, 2 * s + 1])) for s in range(2)]
    return train_partition(
        model,
        lambda epoch: fixed if epoch % 2 == 0 else fixed[::-1],
        per_batch_masks(RandomMasking(8, 0.5)),
        steps=4,  # two passes of two batches
        fill=NoiseFill(),  # draws from the generator too
        loss=build_loss({"msssim_l1": 1.0, "focal_frequency": 0.1}),
        optimizer=torch.optim.AdamW(model.parameters(), lr=1e-3),
        mask_seed=lambda epoch: derived_seed(3, 1, 0, epoch + seed_offset),
    )


def test_train_partition_is_bit_identical_for_the_same_seeds(model):
    first, second, other = copy.deepcopy(model), copy.deepcopy(model), copy.deepcopy(model)
    loss_first, loss_second = run_partition(first), run_partition(second)
    assert math.isfinite(loss_first) and loss_first == loss_second
    one, two = first.state_dict(), second.state_dict()
    assert one.keys() == two.keys()
    for key in one:
        assert torch.equal(one[key], two[key]), key
    assert not torch.equal(one["token"], model.state_dict()["token"])  # it did train
    run_partition(other, seed_offset=5)  # other masks and noise -> other weights
    assert not torch.equal(other.state_dict()["token"], one["token"])


def test_train_partition_counts_steps_across_passes_and_follows_the_schedule(model):
    batches = [(images(2, seed=s), torch.tensor([2 * s, 2 * s + 1])) for s in range(2)]
    passes, rates = [], []

    def batches_of(epoch):
        passes.append(epoch)
        return batches

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    schedule = LearningRate(optimizer, 1e-3, 10, warmup=0.0, schedule="cosine")
    loss = train_partition(
        model,
        batches_of,
        per_batch_masks(RandomMasking(8, 0.5)),
        steps=5,  # two full passes and one step of a third
        fill=MeanFill(),
        loss=build_loss({"masked_l1": 1.0}),
        optimizer=optimizer,
        mask_seed=lambda epoch: derived_seed(3, 1, 0, epoch),
        learning_rate=lambda step: rates.append(step) or schedule(step),
        first_step=4,
    )
    assert math.isfinite(loss)
    assert passes == [0, 1, 2]
    assert rates == [4, 5, 6, 7, 8]  # the schedule's position continues from the offset
    assert optimizer.param_groups[0]["lr"] == pytest.approx(
        1e-3 * lr_factor(8, 10, warmup=0.0, schedule="cosine")
    )


def test_drawn_once_gives_each_image_its_own_fixed_mask():
    indices, seeds = [5, 9, 11], [101, 202, 303]
    table = drawn_once(RandomMasking(8, 0.5), indices, seeds, 64)
    again = drawn_once(RandomMasking(8, 0.5), list(reversed(indices)), list(reversed(seeds)), 64)
    assert table.same_as(again)  # an image's mask depends on its own seed only
    batch = images(3)
    first = table(batch, torch.tensor(indices), torch.Generator().manual_seed(0))
    second = table(batch, torch.tensor(indices), torch.Generator().manual_seed(1))
    assert torch.equal(first.grid, second.grid)  # fixed for the partition: no per-batch draws
    assert first.num_masked.tolist() == [32, 32, 32]
    assert not torch.equal(first.grid[0], first.grid[1])
    other = drawn_once(RandomMasking(8, 0.5), indices, [7, 8, 9], 64)
    assert not table.same_as(other)


def test_drawn_once_keeps_mixed_patch_sizes_on_the_finest_grid():
    strategy = MixedMasking(first=(8, 0.5), second=(16, 0.25), second_probability=0.5)
    table = drawn_once(strategy, list(range(16)), list(range(100, 116)), 64)
    assert table.patch_size == 8
    counts = {int(grid.sum()) for grid in table.grids.values()}
    assert counts == {32, 16}  # 32 of 64 8-px patches, or 4 of 16 16-px patches (x4 cells)
    coarse = next(grid for grid in table.grids.values() if int(grid.sum()) == 16)
    blocks = coarse.view(4, 2, 4, 2).permute(0, 2, 1, 3).reshape(16, 4)
    assert all(block.all() or not block.any() for block in blocks)  # whole 16-px patches
