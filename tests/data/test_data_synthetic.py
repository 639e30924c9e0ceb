"""The synthetic source: deterministic from (seed, i), every class present, one class rare."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from smsweep.errors import SpecError
from smsweep.method.data import SyntheticSource, open_source


def test_same_seed_same_image_different_seed_different():
    a, b = SyntheticSource(8, 64, 5, seed=1), SyntheticSource(100, 64, 5, seed=1)
    for i in (0, 7):
        for x, y in zip(a.load(i), b.load(i), strict=True):
            assert np.array_equal(x, y)  # image i does not depend on num_images
    other = SyntheticSource(8, 64, 5, seed=2)
    assert not np.array_equal(a.load(0)[0], other.load(0)[0])
    assert not np.array_equal(a.load(0)[0], a.load(1)[0])
    assert pickle.loads(pickle.dumps(a)) == a


def test_every_class_appears_in_64_images_and_the_last_is_rare():
    source = SyntheticSource(200, 64, 8, seed=0)
    masks = [source.load(i)[1] for i in range(len(source))]
    seen = set().union(*(np.unique(m).tolist() for m in masks[:64]))
    assert seen == set(range(8))
    rare = source.num_classes - 1
    share = np.mean([(m == rare).any() for m in masks])
    assert 0.05 <= share <= 0.2, share
    common_share = np.mean([(m == 1).any() for m in masks])
    assert common_share > 2 * share
    rare_area = np.mean([(m == rare).sum() for m in masks if (m == rare).any()])
    disk_area = np.mean([(m == 1).sum() for m in masks if (m == 1).any()])
    assert rare_area < disk_area


@pytest.mark.parametrize("num_classes", [3, 5, 8])
def test_class_names(num_classes):
    names = SyntheticSource(4, 32, num_classes).class_names
    assert len(names) == num_classes
    assert names[0] == "background" and names[-1] == "rare_star" and len(set(names)) == num_classes


@pytest.mark.parametrize("num_classes", [2, 9])
def test_num_classes_out_of_range(num_classes):
    with pytest.raises(SpecError, match=r"data.num_classes .* use 3\.\.8"):
        SyntheticSource(4, 32, num_classes)


def test_sizes_follow_image_size():
    image, mask = SyntheticSource(2, 48, 4).load(1)
    assert image.shape == (48, 48, 3) and mask.shape == (48, 48)
    assert image.dtype == np.uint8 and mask.dtype == np.uint8


def test_open_from_config_uses_the_seed(config):
    cfg = config(source="synthetic", num_images=6, num_classes=4, image_size=32)
    a, b = open_source(cfg, seed=5), open_source(cfg, seed=6)
    assert len(a) == 6 and a.seed == 5 and b.seed == 6


def test_index_out_of_range():
    with pytest.raises(IndexError):
        SyntheticSource(3, 32, 3).load(3)


@pytest.mark.parametrize("source", ["synthetic", "textures"])
def test_rare_share_sets_how_often_the_rare_class_is_drawn(config, source):
    """data.rare_share: the rare class in about that share of the images, and still small."""
    shares = {}
    for share in (None, 0.5):
        cfg = config(source=source, num_images=300, num_classes=5, image_size=32, rare_share=share)
        masks = [mask for _, mask in (open_source(cfg, seed=0).load(i) for i in range(300))]
        shares[share] = np.mean([(mask == 4).any() for mask in masks])
        assert np.mean([(mask == 4).mean() for mask in masks]) < 0.05  # rare by pixels
    assert shares[None] < 0.2 and 0.4 < shares[0.5] < 0.6, shares
