"""`cityscapes`: the official layout, with the 19 training classes (trainIds).

    ROOT/leftImg8bit/{train,val,train_extra}/<city>/<stem>_leftImg8bit.png
    ROOT/gtFine/{train,val}/<city>/<stem>_gtFine_labelTrainIds.png   (trainIds, 255 = ignore)

The train/val folders define the split; images without a labelTrainIds file (train_extra, or a
missing file) are unlabeled: those of train/ and train_extra/ are used for pretraining only, those
of val/ for nothing (val images never reach pretraining). The test folder is not read (its public
labels are placeholders).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from smsweep.errors import SpecError
from smsweep.method.data.base import FileSource, Split
from smsweep.method.data.scan import Candidate, require_dir, require_root, scan_files

if TYPE_CHECKING:
    from smsweep.spec.config import DataConfig

CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)  # fmt: skip

IMAGE_SUFFIX = "_leftImg8bit.png"
MASK_SUFFIX = "_gtFine_labelTrainIds.png"
FOLDERS: dict[str, Split | None] = {"train": "train", "val": "val", "train_extra": None}

LAYOUT = """\
  ROOT/leftImg8bit/{train,val,train_extra}/<city>/<stem>_leftImg8bit.png
  ROOT/gtFine/{train,val}/<city>/<stem>_gtFine_labelTrainIds.png"""


def open_cityscapes(cfg: DataConfig, *, seed: int = 0) -> FileSource:
    """Find, validate and return the Cityscapes images under `cfg.path` (`seed` is unused)."""
    if cfg.num_classes != len(CITYSCAPES_CLASSES):
        raise SpecError(
            f"data.num_classes is {cfg.num_classes} but source 'cityscapes' has "
            f"{len(CITYSCAPES_CLASSES)} classes; set data.num_classes: {len(CITYSCAPES_CLASSES)}"
        )
    root = require_root(cfg.path, "cityscapes")
    images_dir = require_dir(root, "leftImg8bit", "cityscapes", LAYOUT)
    labels_dir = require_dir(root, "gtFine", "cityscapes", LAYOUT)
    if not any((images_dir / folder).is_dir() for folder in ("train", "val")):
        raise SpecError(
            f"{images_dir} has neither train/ nor val/; source 'cityscapes' expects:\n{LAYOUT}"
        )
    candidates: list[Candidate] = []
    for folder, split in FOLDERS.items():
        for image in sorted((images_dir / folder).glob(f"*/*{IMAGE_SUFFIX}")):
            stem = image.name[: -len(IMAGE_SUFFIX)]
            mask = labels_dir / folder / image.parent.name / f"{stem}{MASK_SUFFIX}"
            # unlabeled images keep their split: an unlabeled val image is still held out
            candidates.append(
                Candidate(
                    name=stem, image=image, mask=mask if mask.is_file() else None, split=split
                )
            )
    if not candidates:
        raise SpecError(
            f"no *{IMAGE_SUFFIX} images under {images_dir}/{{train,val}}/<city>/; "
            f"source 'cityscapes' expects:\n{LAYOUT}"
        )
    _reject_orphans(labels_dir, {c.name for c in candidates})
    return scan_files(
        root,
        candidates,
        class_names=CITYSCAPES_CLASSES,
        skip_bad=cfg.skip_bad,
        source="cityscapes",
        no_labels_hint=_no_labels_hint(labels_dir),
    )


def _reject_orphans(labels_dir: Path, stems: set[str]) -> None:
    masks = sorted(labels_dir.glob(f"*/*/*{MASK_SUFFIX}"))
    orphans = [m for m in masks if m.name[: -len(MASK_SUFFIX)] not in stems]
    if orphans:
        raise SpecError(
            f"{len(orphans)} label file(s) have no leftImg8bit image, e.g. "
            f"{orphans[0]}; add the images or remove the labels"
        )


def _no_labels_hint(labels_dir: Path) -> str:
    if next(labels_dir.glob("*/*/*_gtFine_labelIds.png"), None) is not None:
        return (
            f"{labels_dir} has *_gtFine_labelIds.png but no *{MASK_SUFFIX}: create them with "
            "cityscapesscripts (`csCreateTrainIdLabelImgs`, CITYSCAPES_DATASET=ROOT)"
        )
    return f"put the *{MASK_SUFFIX} files in {labels_dir}/{{train,val}}/<city>/"
