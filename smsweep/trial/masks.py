"""Which masks each reconstruction partition trains with.

Partition 0 is the warm-up every strategy shares (random, new masks every batch). After it, a
model-based strategy (selective, saliency) scores the partition's patches with the model after
the previous partition (the scorer handed in: in-process or actors); a model-free strategy with
`refresh: partition` draws each image's mask once for the whole partition; otherwise masks are
drawn every batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch.distributed as dist
from torch import nn

from smsweep.method.masking import MaskingStrategy
from smsweep.method.pretrain import MaskSource, MaskTable, drawn_once, per_batch_masks
from smsweep.method.scoring import Scored
from smsweep.trial.context import FIXED_MASKS, SCORING, TrialContext


class Scorer(Protocol):
    actors: Sequence[Any]

    def score(self, model: nn.Module, indices: Sequence[int], seeds: Sequence[int]) -> Scored: ...

    def close(self) -> None: ...


class PartitionMasks:
    """A partition's masks and its scoring metrics; `refresh` is the strategy's refresh mode
    (`build.mask_refresh`)."""

    def __init__(
        self,
        trial: TrialContext,
        strategy: MaskingStrategy,
        warmup: MaskingStrategy,
        scorer: Scorer,
        refresh: str,
    ) -> None:
        self.trial, self.strategy, self.warmup = trial, strategy, warmup
        self.scorer, self.refresh = scorer, refresh

    def __call__(
        self, partition: int, model: nn.Module, indices: Sequence[int]
    ) -> tuple[MaskSource, dict[str, Any]]:
        if partition == 0:
            return per_batch_masks(self.warmup), {}
        if self.strategy.needs_model:
            return self._scored(model, indices)
        if self.refresh == "partition":
            seeds = [self.trial.seeded(FIXED_MASKS, partition, i) for i in indices]
            size = self.trial.spec.data.image_size
            return drawn_once(self.strategy, indices, seeds, size), {}
        return per_batch_masks(self.strategy), {}

    def _scored(self, model: nn.Module, indices: Sequence[int]) -> tuple[Any, dict[str, Any]]:
        """Masks from the model after the previous partition; rank 0 scores, all get the table."""
        table, scoring = None, {}
        if self.trial.rank == 0:
            seeds = [self.trial.seeded(SCORING, i) for i in indices]
            scored = self.scorer.score(model, indices, seeds)
            strategy = self.strategy
            table = MaskTable.from_scores(
                indices, scored.scores, strategy.ratio, strategy.patch_size, tie_seeds=seeds
            )
            scoring = {
                "scored_images": len(indices),
                "scoring_actors": len(self.scorer.actors),
                "scoring_seconds": scored.seconds,
                "scored_by_actors": int(scored.by_actors),
                "scoring_actor_restarts": scored.actor_restarts,
                "scored_blocks_in_process": scored.blocks_in_process,
                "scoring_ms_per_image": 1000 * scored.seconds / len(indices),
            }
        if self.trial.world > 1:
            shared = [table]
            dist.broadcast_object_list(shared, src=0)
            table = shared[0]
        return table, scoring
