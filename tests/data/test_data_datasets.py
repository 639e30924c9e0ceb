"""Transforms + Datasets: the dtypes, shapes and ranges the models expect; seeded determinism."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from smsweep.method.data import SyntheticSource, open_source
from smsweep.method.data.datasets import PretrainDataset, SegmentationDataset
from smsweep.method.data.transforms import eval_transform, finetune_transform, pretrain_transform

SIZE = 32


@pytest.fixture
def folder(config, folder_root):
    return open_source(config(source="folder", path=str(folder_root), num_classes=4), seed=0)


def _labeled(source):
    return [i for i in range(len(source)) if source.has_mask(i)]


@pytest.mark.parametrize("augment", [True, False])
def test_pretrain_items(folder, augment):
    dataset = PretrainDataset(folder, range(len(folder)), pretrain_transform(SIZE, augment), seed=0)
    for k in range(len(dataset)):
        image, index = dataset[k]
        assert image.dtype == torch.float32 and image.shape == (3, SIZE, SIZE)
        assert image.min() >= 0 and image.max() <= 1 and image.max() > 0.5
        assert index == k


@pytest.mark.parametrize(("train", "augment"), [(True, True), (True, False), (False, True)])
def test_segmentation_items(folder, train, augment):
    transform = finetune_transform(SIZE, train=train, augment=augment)
    dataset = SegmentationDataset(folder, _labeled(folder), transform, seed=0)
    for k in range(len(dataset)):
        image, mask = dataset[k]
        assert image.dtype == torch.float32 and image.shape == (3, SIZE, SIZE)
        assert image.min() >= 0 and image.max() <= 1
        assert mask.dtype == torch.int64 and mask.shape == (SIZE, SIZE)
        assert set(mask.unique().tolist()) <= {0, 1, 2, 3, 255}  # nearest: no blended ids


def test_eval_pads_with_ignore(folder):
    tall = [i for i in _labeled(folder) if folder.name(i) == "c_rgba"]  # 50 x 30: padded sides
    image, mask = SegmentationDataset(folder, tall, eval_transform(SIZE))[0]
    assert (mask[:, 0] == 255).all() and (mask[:, -1] == 255).all()
    assert (image[:, :, 0] == 0).all()
    assert (mask[SIZE // 2, SIZE // 4 : 3 * SIZE // 4] != 255).any()


def test_seeded_augmentation_is_reproducible_per_item_and_epoch():
    source = SyntheticSource(4, 48, 4, seed=0)
    make = lambda seed: PretrainDataset(source, range(4), pretrain_transform(SIZE, True), seed=seed)  # noqa: E731
    a, b = make(7), make(7)
    assert torch.equal(a[2][0], b[2][0])
    a[0], a[1]  # other items drawn first: item 2 is unchanged
    assert torch.equal(a[2][0], b[2][0])
    subset = PretrainDataset(source, [2], pretrain_transform(SIZE, True), seed=7)
    assert torch.equal(subset[0][0], b[2][0])  # keyed by source index, not position
    b.set_epoch(1)
    assert not torch.equal(a[2][0], b[2][0])
    assert not torch.equal(make(8)[2][0], a[2][0])


def test_segmentation_needs_labeled_indices(folder):
    unlabeled = [i for i in range(len(folder)) if not folder.has_mask(i)]
    with pytest.raises(ValueError, match="e_unlabeled"):
        SegmentationDataset(folder, unlabeled, eval_transform(SIZE))


def test_batches_and_pickles(folder):
    dataset = SegmentationDataset(
        folder, _labeled(folder), finetune_transform(SIZE, True, True), seed=0
    )
    clone = pickle.loads(pickle.dumps(dataset))
    assert torch.equal(clone[1][1], dataset[1][1])
    images, masks = next(iter(DataLoader(dataset, batch_size=3)))
    assert images.shape == (3, 3, SIZE, SIZE) and masks.shape == (3, SIZE, SIZE)


def test_without_transform_synthetic_images_pass_through():
    source = SyntheticSource(2, SIZE, 3, seed=0)
    image, mask = SegmentationDataset(source, [1], None)[0]
    expected_image, expected_mask = source.load(1)
    assert torch.equal(mask, torch.from_numpy(expected_mask.astype(np.int64)))
    assert torch.allclose(image * 255, torch.from_numpy(expected_image).permute(2, 0, 1).float())
