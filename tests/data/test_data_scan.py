"""Every problem the open-time scan catches is a SpecError naming the file and the fix."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from smsweep.errors import SpecError
from smsweep.method.data import open_source


def _open(config, root, source="folder", **fields):
    fields.setdefault("num_classes", 4)
    return open_source(
        config(source=source, path=None if root is None else str(root), **fields), seed=0
    )


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# --- paths and layout -----------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["folder", "voc", "cityscapes"])
def test_path_not_set(config, source):
    num_classes = {"folder": 4, "voc": 21, "cityscapes": 19}[source]
    with pytest.raises(SpecError, match=r"data\.path is not set.*set data\.path"):
        _open(config, None, source, num_classes=num_classes)


def test_path_missing(config, tmp_path):
    with pytest.raises(SpecError, match=f"{tmp_path / 'nowhere'}' does not exist"):
        _open(config, tmp_path / "nowhere")


def test_path_is_a_file(config, tmp_path):
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(SpecError, match="is a file"):
        _open(config, tmp_path / "file.txt")


@pytest.mark.parametrize(
    ("source", "num_classes", "expected"),
    [("folder", 4, "images/"), ("voc", 21, "JPEGImages/"), ("cityscapes", 19, "leftImg8bit/")],
)
def test_wrong_layout_names_the_expected_folder(config, tmp_path, source, num_classes, expected):
    (tmp_path / "pictures").mkdir()
    with pytest.raises(SpecError, match=f"(?s)no {expected} folder.*found subfolders: pictures/"):
        _open(config, tmp_path, source, num_classes=num_classes)


def test_voc_without_masks_folder(config, voc_root):
    for path in (voc_root / "SegmentationClass").iterdir():
        path.unlink()
    (voc_root / "SegmentationClass").rmdir()
    with pytest.raises(SpecError, match="no SegmentationClass/ folder"):
        _open(config, voc_root, "voc", num_classes=21)


def test_no_images(config, tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "photo.bmp").write_bytes(b"BM")
    with pytest.raises(SpecError, match=r"no images in .*images: .*1 \.bmp.*convert them"):
        _open(config, tmp_path)


def test_no_masks_at_all(config, folder_root):
    for path in (folder_root / "masks").iterdir():
        path.unlink()
    with pytest.raises(SpecError, match=r"no labeled images.*masks/<stem>\.png"):
        _open(config, folder_root)


def test_duplicate_stems(config, folder_root, files):
    files.save(files.rgb(8, 8, 0), folder_root / "images" / "a_rgb.jpg")
    with pytest.raises(SpecError, match=r"a_rgb.*a_rgb\.jpg.*a_rgb\.png.*delete or rename"):
        _open(config, folder_root)


def test_mask_without_image(config, folder_root, files):
    files.save(files.ids(8, 8, 4, 0), folder_root / "masks" / "ghost.png")
    with pytest.raises(SpecError, match=r"ghost\.png.*name each mask like its image"):
        _open(config, folder_root)


def test_jpeg_mask(config, folder_root, files):
    files.save(files.ids(8, 8, 4, 0), folder_root / "masks" / "a_rgb.jpg")
    with pytest.raises(SpecError, match=r"non-PNG masks \(a_rgb\.jpg\).*must be PNG"):
        _open(config, folder_root)


# --- bad files ------------------------------------------------------------------------------------


def test_corrupt_image(config, folder_root):
    _truncate(folder_root / "images" / "a_rgb.png")
    with pytest.raises(
        SpecError, match=r"(?s)a_rgb\.png: unreadable or corrupt image.*skip_bad: true"
    ):
        _open(config, folder_root)


def test_corrupt_jpeg(config, folder_root):
    _truncate(folder_root / "images" / "b_gray.jpg")
    with pytest.raises(SpecError, match=r"b_gray\.jpg: unreadable or corrupt image"):
        _open(config, folder_root)


def test_not_an_image(config, folder_root):
    (folder_root / "images" / "a_rgb.png").write_text("not a picture")
    with pytest.raises(SpecError, match=r"a_rgb\.png: not an image file PIL can read"):
        _open(config, folder_root)


def test_corrupt_mask(config, folder_root):
    _truncate(folder_root / "masks" / "d_tiff.png")
    with pytest.raises(SpecError, match=r"masks/d_tiff\.png: unreadable or corrupt mask"):
        _open(config, folder_root)


def test_color_mask(config, folder_root, files):
    files.save(files.rgb(40, 48, 0), folder_root / "masks" / "a_rgb.png")
    with pytest.raises(SpecError, match=r"masks/a_rgb\.png: mask mode RGB has 3 channels"):
        _open(config, folder_root)


def test_mask_size_differs_from_image(config, folder_root, files):
    files.save(files.ids(20, 48, 4, 0), folder_root / "masks" / "a_rgb.png")
    with pytest.raises(
        SpecError,
        match=r"a_rgb\.png: mask is 48x20 but its image a_rgb\.png is "
        r"48x40",
    ):
        _open(config, folder_root)


def test_mask_ids_out_of_range(config, folder_root):
    with pytest.raises(SpecError) as raised:
        _open(config, folder_root, num_classes=3)  # the fixture's masks use ids 0..3
    message = str(raised.value)
    assert "a_rgb.png: class ids 3 are >= data.num_classes 3" in message
    assert "set data.num_classes to at least 4" in message
    assert "skip_bad: true" in message


def test_many_problems_are_listed_together(config, folder_root):
    for stem in ("a_rgb", "c_rgba", "d_tiff"):
        _truncate(folder_root / "masks" / f"{stem}.png")
    with pytest.raises(SpecError, match=r"^3 bad file\(s\)") as raised:
        _open(config, folder_root)
    assert all(f"{stem}.png" in str(raised.value) for stem in ("a_rgb", "c_rgba", "d_tiff"))


def test_skip_bad_skips_with_one_warning(config, folder_root, files):
    _truncate(folder_root / "images" / "a_rgb.png")
    files.save(files.ids(5, 5, 4, 0), folder_root / "masks" / "c_rgba.png")  # wrong size
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        source = _open(config, folder_root, skip_bad=True)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "skipped 2 bad file(s)" in message and "a_rgb.png" in message and "c_rgba.png" in message
    names = {source.name(i) for i in range(len(source))}
    assert names == {"b_gray", "d_tiff", "e_unlabeled", "f_gray16"}


def test_skip_bad_with_nothing_labeled_left(config, folder_root, files):
    for path in (folder_root / "masks").iterdir():
        files.save(np.full((3, 3), 9, np.uint8), path)
    with (
        pytest.warns(UserWarning, match="skipped 5"),
        pytest.raises(SpecError, match="no labeled images left"),
    ):
        _open(config, folder_root, skip_bad=True)
