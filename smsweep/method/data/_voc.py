"""`voc`: the PASCAL VOC 2012 segmentation layout (data.path = .../VOCdevkit/VOC2012).

    ROOT/JPEGImages/<stem>.jpg                    every image; those without a mask are unlabeled
    ROOT/SegmentationClass/<stem>.png             palette PNG: values are class ids, 255 = border
    ROOT/ImageSets/Segmentation/{train,val}.txt   optional; when present they define train/val

Masks are read in their palette ("P") mode, never converted to RGB: the palette indices are the ids.
With the ImageSets lists, labeled images in neither list are used for pretraining only.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from smsweep.errors import SpecError
from smsweep.method.data.base import FileSource, Split
from smsweep.method.data.scan import (
    Candidate,
    list_images,
    other_files_hint,
    require_dir,
    require_root,
    scan_files,
)

if TYPE_CHECKING:
    from smsweep.spec.config import DataConfig

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip

LAYOUT = """\
  ROOT/JPEGImages/<stem>.jpg
  ROOT/SegmentationClass/<stem>.png             (palette PNG, class ids, 255 = ignore)
  ROOT/ImageSets/Segmentation/{train,val}.txt   (optional)"""


def open_voc(cfg: DataConfig, *, seed: int = 0) -> FileSource:
    """Find, validate and return the VOC images under `cfg.path` (`seed` is unused)."""
    if cfg.num_classes != len(VOC_CLASSES):
        raise SpecError(
            f"data.num_classes is {cfg.num_classes} but source 'voc' has "
            f"{len(VOC_CLASSES)} classes; set data.num_classes: {len(VOC_CLASSES)}"
        )
    root = require_root(cfg.path, "voc")
    _hint_nested(root)
    images_dir = require_dir(root, "JPEGImages", "voc", LAYOUT)
    masks_dir = require_dir(root, "SegmentationClass", "voc", LAYOUT)
    images = list_images(images_dir)
    if not images:
        raise SpecError(f"no images in {images_dir}: {other_files_hint(images_dir)}")
    masks = {p.stem: p for p in list_images(masks_dir, (".png",))}
    stems = {p.stem for p in images}
    orphans = sorted(set(masks) - stems)
    if orphans:
        raise SpecError(
            f"{len(orphans)} mask(s) in {masks_dir} have no JPEGImages/<stem>.jpg "
            f"({', '.join(orphans[:10])}); add the images or remove the masks"
        )
    splits = _official_splits(root, set(masks))
    candidates = [
        Candidate(name=p.stem, image=p, mask=masks.get(p.stem), split=splits.get(p.stem))
        for p in images
    ]
    return scan_files(
        root,
        candidates,
        class_names=VOC_CLASSES,
        skip_bad=cfg.skip_bad,
        source="voc",
        no_labels_hint=f"put the palette PNG masks in {masks_dir}",
    )


def _official_splits(root: Path, labeled: set[str]) -> dict[str, Split]:
    """stem -> "train"/"val" from ImageSets/Segmentation, or {} when the lists are absent."""
    lists = root / "ImageSets" / "Segmentation"
    train_txt, val_txt = lists / "train.txt", lists / "val.txt"
    if not train_txt.is_file() and not val_txt.is_file():
        return {}
    if not (train_txt.is_file() and val_txt.is_file()):
        present, absent = (train_txt, val_txt) if train_txt.is_file() else (val_txt, train_txt)
        raise SpecError(
            f"found {present} but not {absent}; add {absent.name} or remove "
            f"{present.name} to split by data.val_fraction"
        )
    splits: dict[str, Split] = {}
    for split, path in (("train", train_txt), ("val", val_txt)):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            stem = line.strip()
            if not stem:
                continue
            if stem not in labeled:
                raise SpecError(
                    f"{path} line {number} lists {stem!r}, which has no mask "
                    f"SegmentationClass/{stem}.png; add the mask or remove the line"
                )
            if splits.get(stem, split) != split:
                raise SpecError(
                    f"{stem!r} is listed in both train.txt and val.txt in {lists}; "
                    "remove it from one of them"
                )
            splits[stem] = split
    return splits


def _hint_nested(root: Path) -> None:
    """Users often point at VOCdevkit/ instead of VOCdevkit/VOC2012/: say so."""
    if (root / "JPEGImages").is_dir():
        return
    nested = sorted(root.glob("*/JPEGImages")) + sorted(root.glob("*/*/JPEGImages"))
    if nested:
        raise SpecError(
            f"data.path {str(root)!r} has no JPEGImages/ folder but "
            f"{nested[0].parent} does; set data.path: {nested[0].parent}"
        )
