"""What every phase of one trial reads: the resolved spec, the seed of its repeat, its data, its
budget, and where it computes (rank, device, precision, data loading)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from smsweep.method.data import Source, Splits
from smsweep.method.data.datasets import SegmentationDataset
from smsweep.method.data.transforms import eval_transform
from smsweep.method.precision import Precision
from smsweep.method.pretrain import derived_seed
from smsweep.spec.config import ResourcesConfig, SweepSpec
from smsweep.trial.budget import Budget

# Streams of derived_seed: one per purpose, so changing one never shifts another.
# FINETUNE_REPEAT prefixes the fine-tuning streams of fine-tunes 1.. (`repeats.finetune_seed`),
# PROBE those of the frozen-encoder probe (`finetune.probe`).
(
    INIT,
    MASKS,
    SHUFFLE,
    SCORING,
    HEAD,
    FINETUNE,
    FINETUNE_SHUFFLE,
    FIXED_MASKS,
    REPEAT,
    FINETUNE_REPEAT,
    PROBE,
) = range(11)


def repeat_seed(spec: SweepSpec) -> int:
    """The seed of the trial's weights, masks and fine-tuning: spec.seed for repeat 0 (a sweep
    without repeats trains as before), a seed derived from (spec.seed, repeat) otherwise."""
    return spec.seed if spec.repeat == 0 else derived_seed(spec.seed, REPEAT, spec.repeat)


def loader_settings(resources: ResourcesConfig, device: torch.device) -> dict[str, Any]:
    """DataLoader settings of every loader of the trial: `resources.data_workers` processes
    (not persistent: the loaders are made anew for every pass, and a persistent worker's copy of
    the dataset would not see `set_epoch`), memory pinned when the batches go to a CUDA device.
    Batches do not depend on the workers: each item's augmentation is seeded from its own index
    (`smsweep.method.data.datasets`), and the order is drawn in this process."""
    pin = resources.pin_memory is not False and device.type == "cuda"
    return {"num_workers": resources.data_workers, "pin_memory": pin}


@dataclass(frozen=True)
class TrialContext:
    """The trial's fixed facts. `source` is the labelled data; `pretrain_source` what pretrains
    (the same source, or pretrain.data for cross-pretraining)."""

    spec: SweepSpec
    seed: int  # the repeat's seed (`repeat_seed`)
    source: Source
    pretrain_source: Source
    splits: Splits
    budget: Budget
    device: torch.device
    precision: Precision
    rank: int
    world: int

    @property
    def loading(self) -> dict[str, Any]:
        return loader_settings(self.spec.resources, self.device)

    def seeded(self, *parts: int) -> int:
        """A seed of this repeat for one purpose (a stream above) and its indices."""
        return derived_seed(self.seed, *parts)

    def on_device(self, loader: DataLoader) -> Iterator[tuple[Tensor, Tensor]]:
        pinned = self.loading["pin_memory"]  # a pinned batch can be copied without blocking
        for first, second in loader:
            yield (
                first.to(self.device, non_blocking=pinned),
                second.to(self.device, non_blocking=pinned),
            )

    def labelled(self, indices: tuple[int, ...]) -> DataLoader:
        """Labelled images as they are validated (no augmentation), in batches."""
        view = SegmentationDataset(self.source, indices, eval_transform(self.spec.data.image_size))
        return DataLoader(view, batch_size=self.spec.finetune.batch_size, **self.loading)

    def shard(self, indices) -> tuple[int, ...]:
        """This rank's equal share (wrapping around when needed: DDP needs equal step counts)."""
        indices = tuple(indices)
        if self.world == 1:
            return indices
        per_rank = -(-len(indices) // self.world)
        padded = (indices * self.world)[: per_rank * self.world]
        return padded[self.rank :: self.world]
