"""smsweep.method.gallery: the image | loss map | mask | reconstruction rows and their PNG file.

A real tiny MaskedUnet on 32x32 CPU images; the tiles are cut out of the array by position.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from smsweep.method.gallery import GAP, gallery_rows, save_gallery
from smsweep.method.masking import PatchMask
from smsweep.method.masking.fills import MeanFill
from smsweep.method.models import MaskedUnet, tiny_unet

SIZE = 32


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def gallery() -> tuple[np.ndarray, torch.Tensor, torch.Tensor, MaskedUnet]:
    torch.manual_seed(0)
    model = MaskedUnet(tiny_unet(), mask_stage=0, patch_sizes=[8]).train()
    generator = torch.Generator().manual_seed(0)
    images = 0.2 + 0.8 * torch.rand(3, 3, SIZE, SIZE, generator=generator)  # no black pixels
    grid = torch.rand(3, SIZE // 8, SIZE // 8, generator=generator) > 0.5
    grid[:, 0, 0], grid[:, 0, 1] = True, False  # at least one masked and one visible patch
    rows = gallery_rows(model, images, PatchMask(grid, 8), MeanFill(), generator)
    return rows, images, grid, model


def tile(rows: np.ndarray, row: int, column: int) -> np.ndarray:
    """The (H, W, 3) tile of image `row`, column 0 image, 1 loss, 2 mask, 3 reconstruction."""
    top, left = row * (SIZE + GAP), column * (SIZE + GAP)
    return rows[top : top + SIZE, left : left + SIZE]


def test_rows_shape_dtype_and_white_gaps(gallery):
    rows, *_ = gallery
    assert rows.dtype == np.uint8
    assert rows.shape == (3 * (SIZE + GAP), 4 * (SIZE + GAP), 3)
    assert (rows[SIZE : SIZE + GAP] == 255).all()  # gap under the first row
    assert (rows[:, SIZE : SIZE + GAP] == 255).all()  # gap right of the first column


def test_image_column_is_the_image(gallery):
    rows, images, _, _ = gallery
    for n in range(3):
        expected = (images[n].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        assert np.array_equal(tile(rows, n, 0), expected)


def test_masked_column_is_darker_exactly_where_masked(gallery):
    rows, _, grid, _ = gallery
    for n in range(3):
        pixels = grid[n].repeat_interleave(8, 0).repeat_interleave(8, 1).numpy()  # (H, W)
        image = tile(rows, n, 0).astype(int)
        masked = tile(rows, n, 2).astype(int)
        assert (masked[pixels] < image[pixels]).all()
        assert (masked[pixels] <= np.ceil(0.15 * image[pixels]) + 1).all()
        assert np.array_equal(masked[~pixels], image[~pixels])


def test_loss_map_is_scaled_to_its_maximum(gallery):
    rows, *_ = gallery
    for n in range(3):
        red = tile(rows, n, 1)[..., 0]  # red channel = loss / max(loss)
        assert red.max() == 255 and red.min() < 255


def test_model_mode_is_restored(gallery):
    *_, model = gallery
    assert model.training


def test_save_gallery_enlarges_small_tiles(gallery, tmp_path):
    rows, *_ = gallery
    path = save_gallery(rows, tmp_path / "galleries" / "p0.png")
    assert path == tmp_path / "galleries" / "p0.png" and path.is_file()
    with Image.open(path) as image:
        assert image.format == "PNG" and image.mode == "RGB"
        width, height = image.size
        assert width >= 4 * 128
        scale = width // rows.shape[1]
        assert (width, height) == (rows.shape[1] * scale, rows.shape[0] * scale)
        assert np.array_equal(np.asarray(image)[::scale, ::scale], rows)  # nearest neighbour


def test_save_gallery_keeps_large_tiles(tmp_path):
    rows = np.zeros((130, 4 * 130, 3), dtype=np.uint8)  # 128 px tiles + gaps: already big enough
    with Image.open(save_gallery(rows, tmp_path / "big.png")) as image:
        assert image.size == (4 * 130, 130)
