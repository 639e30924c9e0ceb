"""Cross-pretraining: pretrain on one source (`pretrain.data`), fine-tune on another (`data`).

Self-pretraining (the default) pretrains on the non-validation images of `data` (`make_splits`).
With `pretrain.data`, every image of that source pretrains, cut into `pretrain.partitions`, and
`data` keeps its validation and fine-tuning split as before. A generated pretraining source is
drawn from its own seed stream, so a synthetic source for both phases gives new images, never
the fine-tuning (or validation) images again.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np

from smsweep.method.data.base import Source
from smsweep.method.data.splits import Splits, make_splits, partitioned

if TYPE_CHECKING:
    from smsweep.spec.config import DataConfig, SweepSpec

_PRETRAIN_SOURCE_STREAM = 3  # beside the splits' streams


def pretrain_source_seed(seed: int) -> int:
    """The seed a generated pretraining source is drawn from (not `seed`: other images)."""
    return int(np.random.SeedSequence((seed, _PRETRAIN_SOURCE_STREAM)).generate_state(1)[0])


def open_pretrain_source(spec: SweepSpec) -> Source | None:
    """The source of `pretrain.data`, or None for self-pretraining."""
    if spec.pretrain.data is None:
        return None
    return _opened(spec.pretrain.data, pretrain_source_seed(spec.seed))


@functools.lru_cache(maxsize=4)  # a sweep's checks split the same source for every budget
def _opened(data: DataConfig, seed: int) -> Source:
    from smsweep.method.data import open_source

    return open_source(data, seed=seed)


def trial_splits(spec: SweepSpec, source: Source, pretrain_source: Source | None = None) -> Splits:
    """A trial's splits: validation and fine-tuning from `source`; pretraining partitions from
    `source` (self-pretraining) or from every image of `pretrain_source` (opened from
    `pretrain.data` when not given)."""
    data, partitions = spec.data, spec.pretrain.partitions
    cross = spec.pretrain.data is not None
    splits = make_splits(
        source,
        seed=spec.seed,
        partitions=1 if cross else partitions,
        val_fraction=data.val_fraction,
        label_fraction=data.label_fraction,
    )
    if not cross:
        return splits
    pretrain_source = pretrain_source or open_pretrain_source(spec)
    parts = partitioned(pretrain_source, seed=spec.seed, partitions=partitions)
    return Splits(val=splits.val, train=splits.train, pretrain_partitions=parts)
