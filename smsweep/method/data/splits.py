"""Which images validate, which fine-tune, which pretrain in which partition.

Rules (all deterministic from the seed, and independent of file-system order: images are sorted by
name before any shuffling):
- val: `val_fraction` of the labeled images (at least 1), or the dataset's own val set when the
  source has one (VOC ImageSets, Cityscapes val/); val images, and any other image of the official
  val set, are used for nothing else;
- train: the first `label_fraction` (at least 1) of a seeded permutation of the other labeled
  images. The permutation does not depend on `label_fraction`, so smaller label sets are subsets
  of larger ones for the same seed (clean low-label curves). With an official split, only images
  of the official train set are candidates;
- pretrain_partitions: every non-val image, labeled or not (labels are ignored), shuffled and cut
  into `partitions` parts whose sizes differ by at most one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from smsweep.errors import SpecError
from smsweep.method.data.base import Source

# One stream per decision, so that changing one fraction never reshuffles the others.
_VAL_STREAM, _TRAIN_STREAM, _PRETRAIN_STREAM = 0, 1, 2


@dataclass(frozen=True)
class Splits:
    """Source indices, each tuple sorted ascending."""

    val: tuple[int, ...]
    train: tuple[int, ...]
    pretrain_partitions: tuple[tuple[int, ...], ...]

    @property
    def pretrain(self) -> tuple[int, ...]:
        """Every pretraining image, all partitions together."""
        return tuple(sorted(i for part in self.pretrain_partitions for i in part))

    def summary(self) -> dict[str, int]:
        sizes = [len(part) for part in self.pretrain_partitions]
        return {
            "val": len(self.val),
            "train": len(self.train),
            "pretrain": sum(sizes),
            "partitions": len(sizes),
            "partition_min": min(sizes),
            "partition_max": max(sizes),
        }


def make_splits(
    source: Source,
    *,
    seed: int,
    partitions: int,
    val_fraction: float,
    label_fraction: float,
) -> Splits:
    if seed < 0:
        raise SpecError(f"seed is {seed}; use a non-negative integer")
    if partitions < 1:
        raise SpecError(f"pretrain.partitions is {partitions}; use at least 1")
    if not 0 < val_fraction < 1 or not 0 < label_fraction <= 1:
        raise SpecError(
            f"data.val_fraction {val_fraction} must be in (0, 1) and "
            f"data.label_fraction {label_fraction} in (0, 1]"
        )
    by_name = sorted(range(len(source)), key=source.name)
    labeled = [i for i in by_name if source.has_mask(i)]
    if not labeled:
        raise SpecError(
            f"none of the {len(source)} images has a mask; fine-tuning and "
            "validation need labeled images: add masks"
        )
    official = [source.official_split(i) for i in by_name]
    if "val" in official:
        held_out = {i for i, split in zip(by_name, official, strict=True) if split == "val"}
        val = [i for i in labeled if i in held_out]
        candidates = [i for i in labeled if source.official_split(i) == "train"]
        where = "the dataset's own val split"
    else:
        n_val = max(1, round(len(labeled) * val_fraction))
        val = _shuffled(labeled, seed, _VAL_STREAM)[:n_val]
        held_out = set(val)
        candidates = [i for i in labeled if i not in held_out]
        where = f"data.val_fraction {val_fraction} of {len(labeled)} labeled images"
    shuffled = _shuffled(candidates, seed, _TRAIN_STREAM)
    train = shuffled[: max(1, round(len(candidates) * label_fraction))] if candidates else []
    pretrain = _shuffled([i for i in by_name if i not in held_out], seed, _PRETRAIN_STREAM)

    if not val:
        raise SpecError(
            f"{where} has {len(held_out)} images but none with a mask; add masks "
            "for them (VOC: SegmentationClass/, Cityscapes: gtFine/val/)"
        )
    if not train:
        raise SpecError(
            f"no labeled images left for fine-tuning: {len(labeled)} labeled, "
            f"{len(val)} held out for validation ({where}); add masks or lower "
            "data.val_fraction"
        )
    if len(pretrain) < partitions:
        raise SpecError(
            f"pretrain.partitions {partitions} exceeds the {len(pretrain)} "
            f"pretraining images ({len(source)} images, {len(held_out)} held out for "
            "validation); lower pretrain.partitions or add images"
        )
    parts = np.array_split(np.asarray(pretrain, dtype=np.int64), partitions)
    return Splits(
        val=tuple(sorted(val)),
        train=tuple(sorted(train)),
        pretrain_partitions=tuple(tuple(sorted(int(i) for i in part)) for part in parts),
    )


def partitioned(source: Source, *, seed: int, partitions: int) -> tuple[tuple[int, ...], ...]:
    """Every image of `source` (labels ignored), shuffled and cut into `partitions` parts whose
    sizes differ by at most one: the partitions of a separate pretraining source."""
    if len(source) < partitions:
        raise SpecError(
            f"pretrain.partitions {partitions} exceeds the {len(source)} images of "
            "pretrain.data; lower pretrain.partitions or add images"
        )
    by_name = sorted(range(len(source)), key=source.name)
    parts = np.array_split(np.asarray(_shuffled(by_name, seed, _PRETRAIN_STREAM)), partitions)
    return tuple(tuple(sorted(int(i) for i in part)) for part in parts)


def _shuffled(indices: Sequence[int], seed: int, stream: int) -> list[int]:
    rng = np.random.default_rng((seed, stream))
    return [indices[k] for k in rng.permutation(len(indices))]
