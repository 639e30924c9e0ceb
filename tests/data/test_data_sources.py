"""Conformance: every registered source obeys the Source protocol (shapes, dtypes, pickling)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from smsweep.errors import SpecError
from smsweep.method.data import SOURCES, Source, open_source

SETTINGS = {
    "synthetic": {"num_classes": 5, "num_images": 12},
    "textures": {"num_classes": 5, "num_images": 12},
    "folder": {"num_classes": 4},
    "voc": {"num_classes": 21},
    "cityscapes": {"num_classes": 19},
}


def _tree_state(root: Path | None) -> list[tuple[str, int, float]]:
    if root is None:
        return []
    return sorted((str(p), p.stat().st_size, p.stat().st_mtime) for p in root.rglob("*"))


@pytest.fixture(params=sorted(SOURCES))
def opened(request, config, tmp_path, folder_root, voc_root, cityscapes_root):
    name = request.param
    root = {"folder": folder_root, "voc": voc_root, "cityscapes": cityscapes_root}.get(name)
    before = _tree_state(tmp_path)
    cfg = config(source=name, path=None if root is None else str(root), **SETTINGS[name])
    source = open_source(cfg, seed=3)
    assert _tree_state(tmp_path) == before, "opening a source must not write anything"
    return name, cfg, source


def test_every_registered_source_is_tested():
    assert sorted(SOURCES) == sorted(SETTINGS)


def test_unknown_source_names_the_valid_ones(config):
    cfg = config().model_copy(update={"source": "imagenet"})  # bypass validation on purpose
    with pytest.raises(SpecError, match="cityscapes, folder, synthetic, textures, voc"):
        open_source(cfg, seed=0)


def test_protocol_shapes_and_dtypes(opened):
    _, cfg, source = opened
    assert isinstance(source, Source)
    assert len(source) > 0
    assert len(source.class_names) == cfg.num_classes
    assert all(isinstance(n, str) and n for n in source.class_names)
    for i in range(len(source)):
        image, mask = source.load(i)
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert (mask is not None) == source.has_mask(i)
        if mask is not None:
            assert mask.dtype == np.uint8 and mask.shape == image.shape[:2]
            ids = set(np.unique(mask).tolist())
            assert ids <= set(range(cfg.num_classes)) | {255}
        assert source.official_split(i) in (None, "train", "val")
    names = [source.name(i) for i in range(len(source))]
    assert len(set(names)) == len(names)
    assert any(source.has_mask(i) for i in range(len(source)))


def test_pickles_cheaply_and_loads_the_same(opened):
    _, _, source = opened
    blob = pickle.dumps(source)
    assert len(blob) < 1000 + 300 * len(source), "a source must pickle paths, not pixels"
    clone = pickle.loads(blob)
    for i in (0, len(source) - 1):
        for a, b in zip(clone.load(i), source.load(i), strict=True):
            assert (a is None and b is None) or np.array_equal(a, b)


def test_relative_path_is_resolved_from_cwd(config, folder_root, monkeypatch):
    monkeypatch.chdir(folder_root.parent)
    source = open_source(config(source="folder", path=folder_root.name, num_classes=4), seed=0)
    monkeypatch.chdir(os.sep)
    assert source.load(0)[0].size > 0
