"""The textures source: deterministic from (seed, i), classes told apart by texture, not colour."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from smsweep.errors import SpecError
from smsweep.method.data import TexturesSource, open_source

SENSOR_NOISE = 4.0  # grey levels, as drawn by the source


@pytest.fixture(scope="module")
def many():
    """300 images of 32 px with all 8 classes: (images, masks)."""
    source = TexturesSource(300, 32, 8, seed=0)
    loaded = [source.load(i) for i in range(len(source))]
    return [image for image, _ in loaded], [mask for _, mask in loaded]


def test_same_seed_same_image_different_seed_different():
    a, b = TexturesSource(8, 64, 5, seed=1), TexturesSource(100, 64, 5, seed=1)
    for i in (0, 7):
        for x, y in zip(a.load(i), b.load(i), strict=True):
            assert np.array_equal(x, y)  # image i does not depend on num_images
    other = TexturesSource(8, 64, 5, seed=2)
    assert not np.array_equal(a.load(0)[0], other.load(0)[0])
    assert not np.array_equal(a.load(0)[1], other.load(0)[1])
    assert not np.array_equal(a.load(0)[0], a.load(1)[0])


def test_pickles_small_and_equal():
    source = TexturesSource(1000, 64, 8, seed=4)
    blob = pickle.dumps(source)
    assert len(blob) < 300
    clone = pickle.loads(blob)
    assert clone == source
    assert np.array_equal(clone.load(999)[0], source.load(999)[0])


@pytest.mark.parametrize("size", [32, 48, 64])
def test_shapes_and_dtypes(size):
    image, mask = TexturesSource(2, size, 4).load(1)
    assert image.shape == (size, size, 3) and mask.shape == (size, size)
    assert image.dtype == np.uint8 and mask.dtype == np.uint8
    assert set(np.unique(mask).tolist()) <= {0, 1, 2, 3}


def test_background_share_and_the_rare_class(many):
    _, masks = many
    background = np.array([(m == 0).mean() for m in masks])
    assert 0.40 <= background.mean() <= 0.55, background.mean()
    assert background.min() > 0.25 and background.max() < 0.65
    seen = set().union(*(np.unique(m).tolist() for m in masks[:64]))
    assert seen == set(range(8))
    rare = 7
    share = np.mean([(m == rare).any() for m in masks])
    assert 0.08 <= share <= 0.22, share
    common_share = np.mean([[(m == c).any() for c in range(1, 7)] for m in masks])
    assert common_share > 1.5 * share, (common_share, share)
    rare_area = np.mean([(m == rare).sum() for m in masks if (m == rare).any()])
    common_area = np.mean([(m == 1).sum() for m in masks if (m == 1).any()])
    assert rare_area < common_area


def test_mean_colour_does_not_predict_the_class(many):
    images, masks = many
    grey_sum, grey_count = np.zeros(8), np.zeros(8)
    offsets = [[] for _ in range(8)]  # per image: region mean colour minus image mean colour
    for image, mask in zip(images, masks, strict=True):
        pixels = image.astype(np.float64)  # (S, S, 3)
        for class_id in np.unique(mask).tolist():
            region = pixels[mask == class_id]  # (n, 3)
            grey_sum[class_id] += region.sum() / 3
            grey_count[class_id] += len(region)
            offsets[class_id].append(region.mean(axis=0) - pixels.mean(axis=(0, 1)))
    grey_means = grey_sum / grey_count
    assert (grey_means.max() - grey_means.min()) / grey_means.mean() < 0.04, grey_means
    # Within an image, every class has the image's colour: offsets average out to ~0 levels.
    class_offsets = np.array([np.mean(o, axis=0) for o in offsets])  # (8, 3)
    assert np.abs(class_offsets).max() < 1.5, class_offsets


def test_textures_show_above_the_sensor_noise_at_32_px(many):
    images, masks = many
    for class_id in range(8):
        stds = [
            image.astype(np.float64)[mask == class_id].std(axis=0).max()
            for image, mask in zip(images, masks, strict=True)
            if (mask == class_id).sum() >= 40
        ]
        assert np.median(stds) > 3 * SENSOR_NOISE, (class_id, np.median(stds))


@pytest.mark.parametrize("num_classes", [3, 5, 8])
def test_class_names(num_classes):
    names = TexturesSource(4, 32, num_classes).class_names
    assert len(names) == num_classes and len(set(names)) == num_classes
    assert names[0] == "background_blotches" and names[-1] == "rare_zigzag"


def test_two_classes_have_no_rare_class():
    source = TexturesSource(60, 32, 2, seed=0)
    assert source.class_names == ("background_blotches", "horizontal_stripes")
    assert set().union(*(np.unique(source.load(i)[1]).tolist() for i in range(60))) == {0, 1}


@pytest.mark.parametrize("num_classes", [1, 9])
def test_num_classes_out_of_range(num_classes):
    with pytest.raises(SpecError, match=r"data.num_classes .* textures source; use 2\.\.8"):
        TexturesSource(4, 32, num_classes)


def test_open_from_config_uses_the_seed(config):
    cfg = config(source="textures", num_images=6, num_classes=4, image_size=32)
    a, b = open_source(cfg, seed=5), open_source(cfg, seed=6)
    assert isinstance(a, TexturesSource) and len(a) == 6 and a.seed == 5 and b.seed == 6
    assert a.class_names == TexturesSource(6, 32, 4).class_names


def test_index_out_of_range():
    with pytest.raises(IndexError):
        TexturesSource(3, 32, 3).load(3)
