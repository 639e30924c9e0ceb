"""What pretraining optimises, one class per `pretrain.objective`.

An objective wraps the reconstruction U-Net into the model it trains, says which part of that
model fine-tuning gets, gives each partition its masks, and trains one partition:
- `Reconstruction` (SMIR, SimMIM, A2MIM): masked pixels rebuilt through `pretrain.loss`, with
  the masks of `PartitionMasks` (drawn, or scored by the model after the previous partition).
- `Contrastive` (MoCo-v2 with saliency-guided masks, 2309.12757): masks drawn on each query
  view, saliency from a frozen network, hard negatives from masking the key view's salient part.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor, nn

from smsweep.method import build
from smsweep.method.contrastive import Contrastive as MoCo
from smsweep.method.contrastive import frozen_saliency, train_partition_contrastive
from smsweep.method.masking import MaskingStrategy
from smsweep.method.models import load_encoder_weights
from smsweep.method.pretrain import MaskSource, train_partition
from smsweep.trial.context import TrialContext
from smsweep.trial.masks import PartitionMasks

Batches = Callable[[int], Iterable[tuple[Tensor, Tensor]]]


class Objective(Protocol):
    loss_key: ClassVar[str]  # the loss a partition reports

    def model(self, reconstruction: nn.Module) -> nn.Module:
        """The model to train, around the reconstruction U-Net."""
        ...

    def transferred(self, model: nn.Module) -> nn.Module:
        """The part of the trained model whose weights fine-tuning starts from."""
        ...

    def masks(
        self, partition: int, model: nn.Module, indices: Sequence[int]
    ) -> tuple[MaskSource, dict[str, Any]]:
        """The partition's masks (called as the partition begins) and scoring metrics."""
        ...

    def train(self, trained: nn.Module, batches: Batches, masks: MaskSource, **common) -> float:
        """Train one partition (`common`: steps, fill, optimizer, mask_seed, learning_rate,
        first_step, precision); returns its mean loss."""
        ...


class Reconstruction:
    loss_key: ClassVar[str] = "recon_loss"

    def __init__(self, trial: TrialContext, strategy, warmup, masks: PartitionMasks) -> None:
        self.trial, self.partition_masks = trial, masks

    def model(self, reconstruction: nn.Module) -> nn.Module:
        return reconstruction

    def transferred(self, model: nn.Module) -> nn.Module:
        return model

    def masks(self, partition, model, indices) -> tuple[MaskSource, dict[str, Any]]:
        return self.partition_masks(partition, model, indices)

    def train(self, trained: nn.Module, batches: Batches, masks: MaskSource, **common) -> float:
        loss = build.pretrain_loss(self.trial.spec)
        return train_partition(trained, batches, masks, loss=loss, **common)


class Contrastive:
    loss_key: ClassVar[str] = "contrastive_loss"

    def __init__(
        self,
        trial: TrialContext,
        strategy: MaskingStrategy,
        warmup: MaskingStrategy,
        masks: PartitionMasks,
    ) -> None:
        self.trial, self.strategy, self.warmup = trial, strategy, warmup
        self.saliency: nn.Module | None = None  # the frozen network of the current partition
        self.chosen = warmup  # the strategy of the current partition

    def model(self, reconstruction: nn.Module) -> nn.Module:
        # the reconstruction model's encoder is the query encoder
        return MoCo(reconstruction, self.trial.spec.pretrain.contrastive)

    def transferred(self, model: nn.Module) -> nn.Module:
        return model.reconstruction

    def masks(self, partition, model, indices) -> tuple[MaskSource, dict[str, Any]]:
        """Masks drawn on each query view, saliency strategies reading a frozen network
        (`pretrain.contrastive.saliency_weights`, or a copy of the encoder as the partition
        starts)."""
        weights = self.trial.spec.pretrain.contrastive.saliency_weights
        self.saliency = frozen_saliency(model, weights, self._encoder_from_file)
        self.chosen = self.warmup if partition == 0 else self.strategy
        chosen, saliency = self.chosen, self.saliency

        def masks(images: Tensor, indices: Tensor, generator: torch.Generator):
            return chosen(images, generator, model=saliency if chosen.needs_model else None)

        return masks, {}

    def train(self, trained: nn.Module, batches: Batches, masks: MaskSource, **common) -> float:
        hard = build.hard_negative_masking(self.trial.spec)
        return train_partition_contrastive(
            trained, batches, self.chosen, saliency=self.saliency, hard=hard, **common
        )

    def _encoder_from_file(self, path: str) -> nn.Module:
        unet = build.segmentation_model(self.trial.spec)
        load_encoder_weights(unet, path)
        return unet.encoder.to(self.trial.device)


# pretrain.objective -> its class; every class takes (trial, strategy, warmup, masks).
OBJECTIVES: dict[str, type[Reconstruction] | type[Contrastive]] = {
    "reconstruction": Reconstruction,
    "contrastive": Contrastive,
}


def objective(
    trial: TrialContext, strategy: MaskingStrategy, warmup: MaskingStrategy, masks: PartitionMasks
) -> Objective:
    """The objective `pretrain.objective` names."""
    return OBJECTIVES[trial.spec.pretrain.objective](trial, strategy, warmup, masks)
