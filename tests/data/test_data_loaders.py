"""The on-disk loaders: modes converted, sizes kept, palette ids read as ids, splits found."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from smsweep.errors import SpecError
from smsweep.method.data import CITYSCAPES_CLASSES, VOC_CLASSES, make_splits, open_source


def _open(config, source, root, **fields):
    return open_source(config(source=source, path=str(root), **fields), seed=0)


def _index(source, name):
    return [source.name(i) for i in range(len(source))].index(name)


# --- folder ---------------------------------------------------------------------------------------


def test_folder_converts_modes_and_keeps_sizes(config, folder_root):
    source = _open(config, "folder", folder_root, num_classes=4)
    assert len(source) == 6
    sizes = {source.name(i): source.load(i)[0].shape for i in range(len(source))}
    assert sizes == {
        "a_rgb": (40, 48, 3),
        "b_gray": (36, 36, 3),
        "c_rgba": (50, 30, 3),
        "d_tiff": (32, 32, 3),
        "e_unlabeled": (32, 40, 3),
        "f_gray16": (33, 35, 3),
    }
    gray, _ = source.load(_index(source, "b_gray"))
    assert np.array_equal(gray[:, :, 0], gray[:, :, 1]) and np.array_equal(
        gray[:, :, 1], gray[:, :, 2]
    )
    rgba, _ = source.load(_index(source, "c_rgba"))
    original = np.asarray(Image.open(folder_root / "images" / "c_rgba.png"))[:, :, :3]
    assert np.array_equal(rgba, original)  # alpha dropped, not blended
    deep, _ = source.load(_index(source, "f_gray16"))
    red = np.random.default_rng(5).integers(0, 256, (33, 35, 3), dtype=np.uint8)[:, :, 0]
    assert np.array_equal(deep[:, :, 0], red)  # 16-bit scaled back to 8 bits, not clipped


def test_folder_unlabeled_image_has_no_mask(config, folder_root):
    source = _open(config, "folder", folder_root, num_classes=4)
    unlabeled = _index(source, "e_unlabeled")
    assert not source.has_mask(unlabeled) and source.load(unlabeled)[1] is None
    assert sum(source.has_mask(i) for i in range(len(source))) == 5


def test_folder_class_names(config, folder_root):
    default = _open(config, "folder", folder_root, num_classes=4)
    assert default.class_names == ("class_0", "class_1", "class_2", "class_3")
    (folder_root / "classes.txt").write_text("sky\nroad\n\ncar\nperson\n")
    named = _open(config, "folder", folder_root, num_classes=4)
    assert named.class_names == ("sky", "road", "car", "person")


def test_folder_classes_txt_must_match_num_classes(config, folder_root):
    (folder_root / "classes.txt").write_text("sky\nroad\n")
    with pytest.raises(SpecError, match=r"classes\.txt lists 2 class names.*num_classes is 4"):
        _open(config, "folder", folder_root, num_classes=4)


# --- voc ------------------------------------------------------------------------------------------


def test_voc_reads_palette_indices_as_class_ids(config, voc_root, files):
    source = _open(config, "voc", voc_root, num_classes=21)
    assert source.class_names == VOC_CLASSES
    for k in range(6):
        _, mask = source.load(_index(source, f"2007_{k:06d}"))
        assert np.array_equal(mask, files.ids(32 + k, 40, 21, seed=k))  # incl. 255 borders
    assert not source.has_mask(_index(source, "2007_000007"))


def test_voc_image_sets_define_the_split(config, voc_root):
    source = _open(config, "voc", voc_root, num_classes=21)
    splits = make_splits(source, seed=0, partitions=2, val_fraction=0.5, label_fraction=1.0)
    names = lambda indices: sorted(source.name(i) for i in indices)  # noqa: E731
    assert names(splits.val) == ["2007_000004", "2007_000005"]
    assert names(splits.train) == [f"2007_{k:06d}" for k in range(4)]
    assert names(splits.pretrain) == [f"2007_{k:06d}" for k in (0, 1, 2, 3, 6, 7)]


def test_voc_without_image_sets_uses_val_fraction(config, voc_root_without_lists):
    source = _open(config, "voc", voc_root_without_lists, num_classes=21)
    assert all(source.official_split(i) is None for i in range(len(source)))
    splits = make_splits(source, seed=0, partitions=2, val_fraction=0.5, label_fraction=1.0)
    assert len(splits.val) == 3 and len(splits.train) == 3


def test_voc_needs_both_lists(config, voc_root):
    (voc_root / "ImageSets" / "Segmentation" / "val.txt").unlink()
    with pytest.raises(SpecError, match=r"train\.txt but not .*val\.txt"):
        _open(config, "voc", voc_root, num_classes=21)


def test_voc_list_entry_without_mask(config, voc_root):
    (voc_root / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000004\n2007_000007\n")
    with pytest.raises(SpecError, match=r"val\.txt line 2 lists '2007_000007'.*no mask"):
        _open(config, "voc", voc_root, num_classes=21)


def test_voc_path_one_level_too_high_names_the_right_one(config, voc_root):
    with pytest.raises(SpecError, match=f"set data.path: {voc_root}"):
        _open(config, "voc", voc_root.parent, num_classes=21)


def test_voc_needs_21_classes(config, voc_root):
    with pytest.raises(SpecError, match=r"set data\.num_classes: 21"):
        _open(config, "voc", voc_root, num_classes=20)


# --- cityscapes -----------------------------------------------------------------------------------


def test_cityscapes_folders_define_the_split(config, cityscapes_root):
    source = _open(config, "cityscapes", cityscapes_root, num_classes=19)
    assert source.class_names == CITYSCAPES_CLASSES
    assert len(source) == 7
    labeled = {source.name(i) for i in range(len(source)) if source.has_mask(i)}
    assert "bonn_000000_000019" not in labeled and "frankfurt_000001_000000" not in labeled
    assert len(labeled) == 5
    splits = make_splits(source, seed=0, partitions=2, val_fraction=0.5, label_fraction=1.0)
    names = lambda indices: sorted(source.name(i) for i in indices)  # noqa: E731
    assert names(splits.val) == ["frankfurt_000000_000294", "frankfurt_000000_000576"]
    assert names(splits.train) == [
        "aachen_000000_000019",
        "aachen_000001_000019",
        "bochum_000000_000313",
    ]
    # train_extra is pretraining-only; the unlabeled val image is held out of everything
    assert names(splits.pretrain) == [*names(splits.train), "bonn_000000_000019"]


def test_cityscapes_masks_are_train_ids(config, cityscapes_root, files):
    source = _open(config, "cityscapes", cityscapes_root, num_classes=19)
    image, mask = source.load(_index(source, "aachen_000000_000019"))
    assert image.shape == (32, 64, 3)
    assert np.array_equal(mask, files.ids(32, 64, 19, seed=0))


def test_cityscapes_without_train_ids_says_how_to_make_them(config, cityscapes_root):
    for path in cityscapes_root.rglob("*_labelTrainIds.png"):
        path.unlink()
    with pytest.raises(SpecError, match="csCreateTrainIdLabelImgs"):
        _open(config, "cityscapes", cityscapes_root, num_classes=19)


def test_cityscapes_needs_19_classes(config, cityscapes_root):
    with pytest.raises(SpecError, match=r"set data\.num_classes: 19"):
        _open(config, "cityscapes", cityscapes_root, num_classes=34)
