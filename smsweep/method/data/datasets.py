"""torch Datasets over a source, a tuple of source indices and an albumentations pipeline.

Images come out float32 (3, S, S) in [0, 1], not normalised: they are also the reconstruction
targets. Masks come out int64 (S, S) with 255 = ignore.

Determinism: with `seed` set, the pipeline is reseeded for every item from (seed, epoch, source
index), so an item's augmentation does not depend on DataLoader workers, batch order or which
subset holds the image; call `set_epoch(e)` before each epoch to draw new augmentations (with
persistent DataLoader workers, which keep their own copy of the dataset, it has no effect: recreate
the loader instead). With `seed=None` augmentation is random. Synthetic images are deterministic
from the source's own seed; on-disk images are read as stored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from smsweep.method.data.base import Source
from smsweep.method.data.transforms import item_seed

Transform = Callable[..., dict[str, Any]]  # an A.Compose: transform(image=..., mask=...) -> dict


class _SourceDataset(Dataset):
    def __init__(
        self,
        source: Source,
        indices: Sequence[int],
        transform: Transform | None,
        *,
        seed: int | None = None,
    ) -> None:
        self.source = source
        self.indices = tuple(int(i) for i in indices)
        out_of_range = [i for i in self.indices if not 0 <= i < len(source)]
        if out_of_range:
            raise IndexError(
                f"indices {out_of_range[:10]} are outside the source's {len(source)} images"
            )
        self.transform = transform
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.indices)

    def _transformed(self, index: int, **arrays: np.ndarray) -> dict[str, np.ndarray]:
        if self.transform is None:
            return arrays
        if self.seed is not None:
            self.transform.set_random_seed(item_seed(self.seed, self.epoch, index))
        return self.transform(**arrays)


class PretrainDataset(_SourceDataset):
    """(image float32 (3, S, S) in [0, 1], source index) for every index; masks are not read."""

    def __getitem__(self, k: int) -> tuple[torch.Tensor, int]:
        index = self.indices[k]
        image, _ = self.source.load(index)
        return image_tensor(self._transformed(index, image=image)["image"]), index


class SegmentationDataset(_SourceDataset):
    """(image float32 (3, S, S) in [0, 1], mask int64 (S, S), 255 = ignore); all labeled."""

    def __init__(
        self,
        source: Source,
        indices: Sequence[int],
        transform: Transform | None,
        *,
        seed: int | None = None,
    ) -> None:
        super().__init__(source, indices, transform, seed=seed)
        unlabeled = [i for i in self.indices if not source.has_mask(i)]
        if unlabeled:
            names = ", ".join(source.name(i) for i in unlabeled[:10])
            raise ValueError(
                f"{len(unlabeled)} image(s) have no mask ({names}); a "
                "SegmentationDataset takes labeled indices (Splits.train / .val)"
            )

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = self.indices[k]
        image, mask = self.source.load(index)
        out = self._transformed(index, image=image, mask=mask)
        return image_tensor(out["image"]), torch.from_numpy(out["mask"].astype(np.int64))


def image_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float32 (3, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255)
