"""Splits: deterministic from the seed, independent of listing order, disjoint, near-equal."""

from __future__ import annotations

import pytest

from smsweep.errors import SpecError
from smsweep.method.data import make_splits

DEFAULTS = {"seed": 0, "partitions": 4, "val_fraction": 0.2, "label_fraction": 1.0}


@pytest.fixture
def source(fake_source):
    """50 images, every third unlabeled."""
    names = tuple(f"img_{k:03d}" for k in range(50))
    return fake_source(names=names, labeled=tuple(k % 3 != 2 for k in range(50)))


def _split(source, **overrides):
    return make_splits(source, **{**DEFAULTS, **overrides})


def _named(source, splits):
    """The splits by image name: comparable across sources listed in different orders."""
    names = lambda indices: tuple(sorted(source.name(i) for i in indices))  # noqa: E731
    return (
        names(splits.val),
        names(splits.train),
        tuple(names(part) for part in splits.pretrain_partitions),
    )


def test_same_seed_same_splits_different_seed_different(source):
    assert _split(source) == _split(source)
    assert _split(source, seed=1) != _split(source)
    assert _split(source, seed=1).val != _split(source).val


def test_independent_of_listing_order(source, fake_source):
    order = list(range(len(source)))[::-1]
    reordered = fake_source(
        names=tuple(source.names[k] for k in order), labeled=tuple(source.labeled[k] for k in order)
    )
    assert _named(reordered, _split(reordered)) == _named(source, _split(source))


def test_sizes_and_disjointness(source):
    splits = _split(source, partitions=3, label_fraction=0.5)
    labeled = {i for i in range(len(source)) if source.has_mask(i)}
    assert len(labeled) == 34
    assert len(splits.val) == round(34 * 0.2) == 7
    assert len(splits.train) == round(27 * 0.5) == 14
    assert set(splits.val) <= labeled and set(splits.train) <= labeled
    assert not set(splits.val) & set(splits.train)
    assert not set(splits.val) & set(splits.pretrain)
    assert set(splits.pretrain) == set(range(len(source))) - set(splits.val)  # unlabeled included
    sizes = [len(part) for part in splits.pretrain_partitions]
    assert sum(sizes) == 43 and max(sizes) - min(sizes) <= 1 and len(sizes) == 3
    parts = [set(part) for part in splits.pretrain_partitions]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert splits.summary() == {
        "val": 7,
        "train": 14,
        "pretrain": 43,
        "partitions": 3,
        "partition_min": 14,
        "partition_max": 15,
    }


def test_low_label_sets_are_nested_and_val_is_fixed(source):
    small, large = _split(source, label_fraction=0.25), _split(source, label_fraction=0.75)
    assert set(small.train) < set(large.train)
    assert small.val == large.val and small.pretrain_partitions == large.pretrain_partitions


def test_official_split_is_used_and_val_never_pretrains(fake_source):
    names = tuple(f"img_{k}" for k in range(8))
    labeled = (True, True, True, True, True, False, True, False)
    splits = ("train", "train", "train", "train", "val", "val", None, None)
    source = fake_source(names=names, labeled=labeled, splits=splits)
    result = make_splits(source, seed=0, partitions=2, val_fraction=0.5, label_fraction=1.0)
    assert result.val == (4,)  # the official val set, not val_fraction
    assert result.train == (0, 1, 2, 3)  # img_6 is labeled but in neither list: pretraining only
    assert result.pretrain == (0, 1, 2, 3, 6, 7)  # img_5 (unlabeled val) is held out too


def test_too_many_partitions(source):
    with pytest.raises(
        SpecError, match=r"pretrain\.partitions 44 exceeds the 43 pretraining images"
    ):
        _split(source, partitions=44)


def test_no_train_image_left(fake_source):
    source = fake_source(names=("a", "b", "c"), labeled=(True, False, False))
    with pytest.raises(
        SpecError, match="no labeled images left for fine-tuning: 1 labeled, 1 held"
    ):
        make_splits(source, seed=0, partitions=1, val_fraction=0.2, label_fraction=1.0)


def test_no_labeled_image(fake_source):
    source = fake_source(names=("a", "b"), labeled=(False, False))
    with pytest.raises(SpecError, match="none of the 2 images has a mask"):
        make_splits(source, seed=0, partitions=1, val_fraction=0.2, label_fraction=1.0)


def test_official_val_without_masks(fake_source):
    source = fake_source(
        names=("a", "b", "c"), labeled=(True, True, False), splits=("train", "train", "val")
    )
    with pytest.raises(SpecError, match="own val split has 1 images but none with a mask"):
        make_splits(source, seed=0, partitions=1, val_fraction=0.2, label_fraction=1.0)
