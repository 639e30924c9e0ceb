"""`folder`: the simplest on-disk layout, for your own data.

    ROOT/images/<stem>.png|jpg|jpeg|tif|tiff   every image; any size, grayscale/RGBA converted
    ROOT/masks/<stem>.png                      one channel, class ids, 255 = ignore
    ROOT/classes.txt                           optional, one class name per line

An image without a mask is unlabeled: it is used for pretraining only.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from smsweep.errors import SpecError
from smsweep.method.data.base import FileSource
from smsweep.method.data.scan import (
    IMAGE_SUFFIXES,
    Candidate,
    list_images,
    other_files_hint,
    require_dir,
    require_root,
    scan_files,
)

if TYPE_CHECKING:
    from smsweep.spec.config import DataConfig

LAYOUT = """\
  ROOT/images/<stem>.png|jpg|jpeg|tif|tiff   every image (labeled or not)
  ROOT/masks/<stem>.png                      one channel, class ids, 255 = ignore
  ROOT/classes.txt                           optional: one class name per line"""


def open_folder(cfg: DataConfig, *, seed: int = 0) -> FileSource:
    """Find, validate and return the images under `cfg.path` (`seed` is unused)."""
    root = require_root(cfg.path, "folder")
    images_dir = require_dir(root, "images", "folder", LAYOUT)
    images = list_images(images_dir)
    if not images:
        raise SpecError(f"no images in {images_dir}: {other_files_hint(images_dir)}")
    masks = _masks(root / "masks", {p.stem for p in images})
    candidates = [Candidate(name=p.stem, image=p, mask=masks.get(p.stem)) for p in images]
    return scan_files(
        root,
        candidates,
        class_names=read_class_names(root, cfg.num_classes),
        skip_bad=cfg.skip_bad,
        source="folder",
        no_labels_hint=f"add one-channel PNG masks as {root / 'masks'}/<stem>.png",
    )


def read_class_names(root: Path, num_classes: int) -> tuple[str, ...]:
    """Names from ROOT/classes.txt (blank lines skipped), else class_0..class_{n-1}."""
    path = root / "classes.txt"
    if not path.is_file():
        return tuple(f"class_{i}" for i in range(num_classes))
    try:
        names = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    except (OSError, UnicodeDecodeError) as error:
        raise SpecError(
            f"{path} cannot be read ({error}); write it as UTF-8 text, one class "
            "name per line, or delete it to use class_0, class_1, ..."
        ) from None
    if len(names) != num_classes:
        raise SpecError(
            f"{path} lists {len(names)} class names but data.num_classes is "
            f"{num_classes}; make them agree (one name per line, in id order)"
        )
    return names


def _masks(masks_dir: Path, image_stems: set[str]) -> dict[str, Path]:
    if not masks_dir.is_dir():
        return {}
    lossy = [p.name for p in list_images(masks_dir) if p.suffix.lower() != ".png"]
    if lossy:
        raise SpecError(
            f"{masks_dir} holds non-PNG masks ({', '.join(lossy[:10])}); masks must "
            "be PNG (JPEG compression changes class ids): save them as <stem>.png"
        )
    masks = {p.stem: p for p in list_images(masks_dir, (".png",))}
    orphans = sorted(set(masks) - image_stems)
    if orphans:
        shown = ", ".join(f"{o}.png" for o in orphans[:10])
        raise SpecError(
            f"{len(orphans)} mask(s) in {masks_dir} have no image in {masks_dir.parent / 'images'}"
            f" ({shown}); name each mask like its image (<stem>.png for images/<stem>."
            f"{'|'.join(s.lstrip('.') for s in IMAGE_SUFFIXES)}) or remove it"
        )
    return masks
