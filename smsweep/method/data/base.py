"""The source protocol and the file-backed source shared by `folder`, `voc` and `cityscapes`.

A source is an indexable set of images, some of them labeled. It holds paths (or, for `synthetic`,
a seed), never pixels: Ray pickles it into every worker, so pickling must stay cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np
from PIL import Image

IGNORE_INDEX = 255  # mask value that losses and metrics skip (VOC boundaries, padding, void)

Split = Literal["train", "val"]


@runtime_checkable
class Source(Protocol):
    """What every data source provides. Indices run over `range(len(source))`."""

    class_names: tuple[str, ...]

    def __len__(self) -> int: ...

    def has_mask(self, i: int) -> bool:
        """Whether image `i` is labeled (cheap: no decoding)."""
        ...

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        """RGB image uint8 (H, W, 3) and class-id mask uint8 (H, W) with 255 = ignore, or None."""
        ...

    def name(self, i: int) -> str:
        """A stem unique within the source; splits sort by it, exports write it."""
        ...

    def official_split(self, i: int) -> Split | None:
        """The dataset's own train/val assignment (VOC ImageSets, Cityscapes folders), if any.

        When any image says "val", `make_splits` uses these instead of `data.val_fraction`.
        """
        ...


@dataclass(frozen=True)
class FileSource:
    """Images (and optional masks) on disk, as found and validated by `scan.scan_files`.

    Columns are tuples of strings relative to `root`, so a pickle costs ~100 bytes per image.
    """

    root: str
    class_names: tuple[str, ...]
    names: tuple[str, ...]
    images: tuple[str, ...]
    masks: tuple[str | None, ...]  # None = unlabeled
    splits: tuple[Split | None, ...]

    def __len__(self) -> int:
        return len(self.names)

    def has_mask(self, i: int) -> bool:
        return self.masks[i] is not None

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        root = Path(self.root)
        image = read_rgb(root / self.images[i])
        mask_path = self.masks[i]
        mask = None if mask_path is None else read_mask(root / mask_path)
        return image, mask

    def name(self, i: int) -> str:
        return self.names[i]

    def official_split(self, i: int) -> Split | None:
        return self.splits[i]


def to_rgb(image: Image.Image) -> np.ndarray:
    """Any PIL image as RGB uint8 (H, W, 3): grayscale is repeated, alpha dropped, 16 bits scaled.

    PIL's own `convert("RGB")` clips 16-bit grayscale at 255 (a white image), hence the scaling.
    """
    if image.mode.startswith("I;16") or image.mode == "I":
        gray = np.asarray(image, dtype=np.float32) / 257.0  # 0..65535 -> 0..255
        gray = np.clip(np.rint(gray), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8).copy()


def read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return to_rgb(image)


MASK_MODES = ("1", "L", "P", "I", "I;16", "I;16B", "I;16L")


def mask_array(image: Image.Image) -> np.ndarray:
    """The class ids of a one-channel mask (H, W) in its stored dtype; palette masks give indices.

    Never converts a palette ("P") image to RGB: its pixel values *are* the class ids (VOC).
    Raises ValueError for masks with several channels (the scan turns it into a SpecError).
    """
    if image.mode not in MASK_MODES:
        raise ValueError(
            f"mask mode {image.mode} has {len(image.getbands())} channels; a mask must be one "
            "channel (8-bit grayscale or palette PNG) whose pixel values are the class ids"
        )
    return np.asarray(image)


def read_mask(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        ids = mask_array(image)
    return ids.astype(np.uint8)  # the scan has checked that every id is < 256
