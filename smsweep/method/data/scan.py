"""The open-time scan shared by the on-disk sources: find every problem once, before any training.

The layout helpers (`require_root`, `require_dir`, `list_images`) give the user the expected layout
when a folder is missing. `scan_files` then reads every file once:
- images: JPEG decoded at 1/8 scale (reads the whole stream, so truncation is caught, 64x less
  work), PNG checked with `verify()` (every chunk's CRC, without decompressing), others decoded;
- masks: decoded fully (their ids and size are checked), 8 threads (PIL releases the GIL).
Per-file problems (unreadable, size mismatch, ids out of range) are collected and reported together;
with `data.skip_bad: true` those pairs are dropped with one warning instead. Nothing is written.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from smsweep.errors import SpecError
from smsweep.method.data.base import IGNORE_INDEX, FileSource, Split, mask_array

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
_SHOWN = 10  # problems listed in one message; the rest are counted


@dataclass(frozen=True)
class Candidate:
    """An image found on disk, with its mask if it has one. Paths are absolute."""

    name: str
    image: Path
    mask: Path | None = None
    split: Split | None = None


def require_root(path: str | None, source: str) -> Path:
    if not path:
        raise SpecError(
            f"data.path is not set; source {source!r} reads images from disk: "
            "set data.path to the dataset root"
        )
    root = Path(path).expanduser().absolute()  # workers may run in another directory
    if not root.exists():
        raise SpecError(
            f"data.path {str(root)!r} does not exist; set data.path to the {source} dataset root"
        )
    if not root.is_dir():
        raise SpecError(
            f"data.path {str(root)!r} is a file; set data.path to the {source} "
            "dataset root directory"
        )
    return root


def require_dir(root: Path, sub: str, source: str, layout: str) -> Path:
    """`root/sub`, or a SpecError that shows the expected layout and what was found instead."""
    folder = root / sub
    if folder.is_dir():
        return folder
    found = sorted(p.name + "/" for p in root.iterdir() if p.is_dir())[:_SHOWN]
    raise SpecError(
        f"data.path {str(root)!r} has no {sub}/ folder; source {source!r} expects:\n{layout}\n"
        f"found subfolders: {', '.join(found) or 'none'}. Point data.path at the folder that "
        f"holds {sub}/ or pick the data.source that matches this layout"
    )


def list_images(folder: Path, suffixes: Sequence[str] = IMAGE_SUFFIXES) -> list[Path]:
    """Image files directly in `folder` (case-insensitive suffix), sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes)


def other_files_hint(folder: Path, suffixes: Sequence[str] = IMAGE_SUFFIXES) -> str:
    others = Counter(
        p.suffix.lower() or p.name
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() not in suffixes and not p.name.startswith(".")
    )
    if not others:
        return f"{folder} is empty"
    listed = ", ".join(f"{count} {kind}" for kind, count in others.most_common(5))
    return f"{folder} holds only other files ({listed}); convert them to {'/'.join(suffixes)}"


def scan_files(
    root: Path,
    candidates: Sequence[Candidate],
    *,
    class_names: tuple[str, ...],
    skip_bad: bool,
    source: str,
    no_labels_hint: str,
) -> FileSource:
    """Validate every candidate and return the source (sorted by name)."""
    _reject_duplicates(candidates, source)
    if not any(c.mask is not None for c in candidates):  # before the (slow) read of every file
        raise SpecError(
            f"no labeled images in {root}: fine-tuning and evaluation need masks; {no_labels_hint}"
        )
    num_classes = len(class_names)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        problems = list(pool.map(lambda c: _check(c, num_classes), candidates))
    bad = [(c, p) for c, p in zip(candidates, problems, strict=True) if p]
    if bad and not skip_bad:
        raise SpecError(_bad_files_message(root, [p for _, p in bad]))
    if bad:
        warnings.warn(
            f"data.skip_bad: skipped {len(bad)} bad file(s) in {root}:\n"
            + "\n".join(f"  - {p}" for _, p in bad),
            UserWarning,
            stacklevel=4,  # the caller of open_source
        )
    good = sorted(
        (c for c, p in zip(candidates, problems, strict=True) if not p), key=lambda c: c.name
    )
    if not good:
        raise SpecError(
            f"no usable images left in {root} after skipping bad files; "
            "fix the files listed in the warning"
        )
    if not any(c.mask is not None for c in good):
        raise SpecError(
            f"no labeled images left in {root} after skipping bad files; "
            "fix the masks listed in the warning"
        )
    return FileSource(
        root=str(root),
        class_names=class_names,
        names=tuple(c.name for c in good),
        images=tuple(str(c.image.relative_to(root)) for c in good),
        masks=tuple(None if c.mask is None else str(c.mask.relative_to(root)) for c in good),
        splits=tuple(c.split for c in good),
    )


def _reject_duplicates(candidates: Sequence[Candidate], source: str) -> None:
    counts = Counter(c.name for c in candidates)
    duplicates = sorted(name for name, count in counts.items() if count > 1)
    if duplicates:
        files = sorted(str(c.image) for c in candidates if c.name in set(duplicates[:_SHOWN]))
        raise SpecError(
            f"{len(duplicates)} image name(s) occur more than once in the {source} source "
            f"({', '.join(duplicates[:_SHOWN])}): {', '.join(files)}; keep one file per name "
            "(e.g. a.png and a.jpg: delete or rename one)"
        )


def _check(candidate: Candidate, num_classes: int) -> str:
    """The problem with this image/mask pair (with its fix), or "" when it is fine."""
    try:
        width, height, mode = _verify_image(candidate.image)
    except UnidentifiedImageError:
        return f"{candidate.image}: not an image file PIL can read; replace or delete it"
    except Exception as error:  # any decoder error means the file cannot be used
        return f"{candidate.image}: unreadable or corrupt image ({error}); replace or delete it"
    if mode == "F":
        return (
            f"{candidate.image}: 32-bit float images are not supported; convert it to 8- or 16-bit"
        )
    if candidate.mask is None:
        return ""
    try:
        with Image.open(candidate.mask) as image:
            ids = mask_array(image)
    except ValueError as error:  # several channels: mask_array says why
        return f"{candidate.mask}: {error}"
    except UnidentifiedImageError:
        return f"{candidate.mask}: not an image file PIL can read; replace or delete it"
    except Exception as error:
        return f"{candidate.mask}: unreadable or corrupt mask ({error}); replace or delete it"
    if ids.shape != (height, width):
        return (
            f"{candidate.mask}: mask is {ids.shape[1]}x{ids.shape[0]} but its image "
            f"{candidate.image.name} is {width}x{height}; a mask must have its image's size"
        )
    present = _present_ids(ids)
    bad_ids = [int(i) for i in present if i != IGNORE_INDEX and (i >= num_classes or i > 255)]
    if bad_ids:
        shown = ", ".join(map(str, bad_ids[:_SHOWN]))
        return (
            f"{candidate.mask}: class ids {shown} are >= data.num_classes {num_classes} "
            f"(255 = ignore is allowed); set data.num_classes to at least {max(bad_ids) + 1} "
            "or fix the mask"
        )
    return ""


def _verify_image(path: Path) -> tuple[int, int, str]:
    with Image.open(path) as image:
        width, height = image.size
        mode = image.mode
        if image.format == "JPEG":
            image.draft("RGB", (max(1, width // 8), max(1, height // 8)))
            image.load()
        elif image.format == "PNG":
            image.verify()
        else:
            image.load()
    return width, height, mode


def _present_ids(ids: np.ndarray) -> np.ndarray:
    if ids.dtype in (np.uint8, np.bool_):
        return np.flatnonzero(np.bincount(ids.ravel(), minlength=2))  # ~30x faster than unique
    return np.unique(ids)


def _bad_files_message(root: Path, problems: list[str]) -> str:
    shown = "\n".join(f"  - {p}" for p in problems[:_SHOWN])
    more = f"\n  ... and {len(problems) - _SHOWN} more" if len(problems) > _SHOWN else ""
    return (
        f"{len(problems)} bad file(s) in {root}:\n{shown}{more}\n"
        "Fix or remove them, or set data.skip_bad: true to skip them with one warning"
    )
