"""Data sources, splits, pipelines and Datasets.

    source = open_source(cfg.data, seed=spec.seed)            # opens and scans; writes nothing
    splits = make_splits(source, seed=..., partitions=..., val_fraction=..., label_fraction=...)
    PretrainDataset(source, splits.pretrain_partitions[0], pretrain_transform(64, augment=True))

A new source is one module with an `open_<name>(cfg, *, seed) -> Source` function and one entry
in `SOURCES`. `SOURCES` is used only at the YAML boundary (`open_source`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from smsweep.errors import SpecError
from smsweep.method.data._cityscapes import CITYSCAPES_CLASSES, open_cityscapes
from smsweep.method.data._folder import open_folder
from smsweep.method.data._synthetic import SyntheticSource, open_synthetic
from smsweep.method.data._textures import TexturesSource, open_textures
from smsweep.method.data._voc import VOC_CLASSES, open_voc
from smsweep.method.data.base import IGNORE_INDEX, FileSource, Source
from smsweep.method.data.splits import Splits, make_splits

if TYPE_CHECKING:
    from smsweep.spec.config import DataConfig

SOURCES: dict[str, Callable[..., Source]] = {
    "synthetic": open_synthetic,
    "textures": open_textures,
    "folder": open_folder,
    "voc": open_voc,
    "cityscapes": open_cityscapes,
}


def open_source(cfg: DataConfig, *, seed: int) -> Source:
    """Open and validate the source `cfg.source` names; raises SpecError on any data problem."""
    try:
        opener = SOURCES[cfg.source]
    except KeyError:
        raise SpecError(
            f"data.source {cfg.source!r} is unknown; use one of {', '.join(sorted(SOURCES))}"
        ) from None
    return opener(cfg, seed=seed)


__all__ = [
    "CITYSCAPES_CLASSES",
    "IGNORE_INDEX",
    "SOURCES",
    "VOC_CLASSES",
    "FileSource",
    "Source",
    "Splits",
    "SyntheticSource",
    "TexturesSource",
    "make_splits",
    "open_source",
]
