"""Tiny on-disk trees (folder, VOC, Cityscapes) built in tmp_path, and a config factory.

Helpers reach the tests through fixtures (`files`, `fake_source`), never `from conftest import`:
several test folders have a conftest.py, so that import would be ambiguous.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from smsweep.spec.config import DataConfig

VOC_PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0] + [64, 64, 64] * 253  # 256 RGB entries


def rgb(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def ids(height: int, width: int, num_classes: int, seed: int) -> np.ndarray:
    """Class ids 0..num_classes-1 in blocks, with a 255 (ignore) border row."""
    rng = np.random.default_rng(seed)
    mask = rng.integers(0, num_classes, (height, width), dtype=np.uint8)
    mask[0, :] = 255
    return mask


def save(array: np.ndarray, path: Path, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    if mode is not None:
        image = image.convert(mode)
    image.save(path)
    return path


def save_palette_mask(mask: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(mask, mode="L").convert("P")  # L -> P keeps values as indices
    image.putpalette(VOC_PALETTE)
    image.save(path)
    return path


FOLDER_CLASSES = 4


def make_folder_tree(root: Path) -> Path:
    """6 images of varied size and mode (RGB, grayscale JPEG, RGBA, TIFF, 16-bit), 1 unlabeled."""
    images, masks = root / "images", root / "masks"
    shapes = {
        "a_rgb.png": (40, 48),
        "b_gray.jpg": (36, 36),
        "c_rgba.png": (50, 30),
        "d_tiff.tif": (32, 32),
        "e_unlabeled.png": (32, 40),
        "f_gray16.png": (33, 35),
    }
    for k, (file, (height, width)) in enumerate(shapes.items()):
        image = rgb(height, width, seed=k)
        if file.startswith("b_"):
            save(image, images / file, mode="L")
        elif file.startswith("c_"):
            alpha = np.full((height, width, 1), 100, np.uint8)
            save(np.concatenate([image, alpha], axis=2), images / file)
        elif file.startswith("f_"):
            save((image[:, :, 0].astype(np.uint16) * 257), images / file)  # 16-bit grayscale
        else:
            save(image, images / file)
        if "unlabeled" not in file:
            save(ids(height, width, FOLDER_CLASSES, seed=k), masks / f"{Path(file).stem}.png")
    return root


def make_voc_tree(root: Path, lists: bool = True) -> Path:
    """8 JPEGs, 6 with palette masks (ids 0..20 and 255), optional ImageSets lists."""
    for k in range(8):
        stem = f"2007_{k:06d}"
        save(rgb(32 + k, 40, seed=k), root / "JPEGImages" / f"{stem}.jpg")
        if k < 6:
            mask = ids(32 + k, 40, 21, seed=k)
            save_palette_mask(mask, root / "SegmentationClass" / f"{stem}.png")
    if lists:
        sets = root / "ImageSets" / "Segmentation"
        sets.mkdir(parents=True)
        (sets / "train.txt").write_text("2007_000000\n2007_000001\n2007_000002\n2007_000003\n")
        (sets / "val.txt").write_text("2007_000004\n2007_000005\n")
    return root


def make_cityscapes_tree(root: Path) -> Path:
    """train: 3 labeled (2 cities); val: 2 labeled + 1 unlabeled; train_extra: 1 unlabeled."""
    layout = {
        ("train", "aachen"): ["aachen_000000_000019", "aachen_000001_000019"],
        ("train", "bochum"): ["bochum_000000_000313"],
        ("val", "frankfurt"): [
            "frankfurt_000000_000294",
            "frankfurt_000000_000576",
            "frankfurt_000001_000000",
        ],
        ("train_extra", "bonn"): ["bonn_000000_000019"],
    }
    for k, ((split, city), stems) in enumerate(sorted(layout.items())):
        for j, stem in enumerate(stems):
            seed = 10 * k + j
            save(rgb(32, 64, seed), root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
            if split == "train_extra" or stem == "frankfurt_000001_000000":
                continue
            labels = root / "gtFine" / split / city
            save(ids(32, 64, 19, seed), labels / f"{stem}_gtFine_labelTrainIds.png")
            save(ids(32, 64, 34, seed), labels / f"{stem}_gtFine_labelIds.png")  # ignored
    return root


@pytest.fixture
def config() -> Callable[..., DataConfig]:
    def build(**fields: object) -> DataConfig:
        return DataConfig(**fields)

    return build


@pytest.fixture
def folder_root(tmp_path: Path) -> Path:
    return make_folder_tree(tmp_path / "folder")


@pytest.fixture
def voc_root(tmp_path: Path) -> Path:
    return make_voc_tree(tmp_path / "VOC2012")


@pytest.fixture
def voc_root_without_lists(tmp_path: Path) -> Path:
    return make_voc_tree(tmp_path / "VOC2012", lists=False)


@pytest.fixture
def cityscapes_root(tmp_path: Path) -> Path:
    return make_cityscapes_tree(tmp_path / "cityscapes")


@dataclass(frozen=True)
class FakeSource:
    """A source of names only, for split tests (load is never called)."""

    names: tuple[str, ...]
    labeled: tuple[bool, ...]
    splits: tuple[str | None, ...] | None = None
    class_names: tuple[str, ...] = ("a", "b")

    def __len__(self) -> int:
        return len(self.names)

    def has_mask(self, i: int) -> bool:
        return self.labeled[i]

    def name(self, i: int) -> str:
        return self.names[i]

    def official_split(self, i: int) -> str | None:
        return None if self.splits is None else self.splits[i]

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        raise NotImplementedError


@pytest.fixture
def files() -> SimpleNamespace:
    """Array makers and writers for tests that add their own (often broken) files."""
    return SimpleNamespace(rgb=rgb, ids=ids, save=save, save_palette_mask=save_palette_mask)


@pytest.fixture
def fake_source() -> type[FakeSource]:
    return FakeSource
