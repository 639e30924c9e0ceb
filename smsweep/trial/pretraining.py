"""The pretraining phase: every partition of the pretraining split, one after the other.

Each partition: its masks (the objective's) and fill (partition 0, the warm-up every strategy
shares: `pretrain.warmup_masks.fill`; later ones: `masking.fill`), the mechanism diagnostics
and the gallery, then `budget.partition_steps[p]` optimizer steps (or partition 0 from the
cache), then a report with a checkpoint. Every random draw is seeded from (repeat seed,
purpose, partition, pass), so a resumed trial draws exactly what an uninterrupted one would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader

from smsweep import faults
from smsweep.method import build, looks
from smsweep.method.data.datasets import PretrainDataset
from smsweep.method.data.transforms import pretrain_transform
from smsweep.method.pretrain import MaskSource
from smsweep.method.schedule import optimization
from smsweep.trial.context import INIT, MASKS, SHUFFLE, TrialContext
from smsweep.trial.objectives import Objective
from smsweep.trial.state import Checkpoints, TrialState


class Session(Protocol):
    def prepare(self, model: nn.Module) -> nn.Module: ...


class Partition0Cache(Protocol):
    def restore(self, model, optimizer) -> dict[str, Any] | None: ...

    def save(self, model, optimizer, losses: dict[str, float], seconds: float) -> bool: ...


class Pretraining:
    """Pretrains from `state` on; returns the weights fine-tuning starts from."""

    def __init__(
        self,
        trial: TrialContext,
        objective: Objective,
        checkpoints: Checkpoints,
        session: Session,
        partition0: Partition0Cache | None = None,
    ) -> None:
        self.trial, self.objective, self.checkpoints = trial, objective, checkpoints
        self.session, self.partition0 = session, partition0

    def run(self, state: TrialState) -> dict[str, torch.Tensor]:
        spec, trial = self.trial.spec, self.trial
        torch.manual_seed(trial.seeded(INIT))
        model = self.objective.model(build.reconstruction_model(spec)).to(trial.device)
        transferred = self.objective.transferred(model)  # what fine-tuning gets
        optimizer, learning_rate = optimization(model, spec.pretrain, trial.budget.pretrain_steps)
        first = 0
        if state.resumed:
            model.load_state_dict(state.model)
            optimizer.load_state_dict(state.optimizer)
            first = state.partition + 1
        trained = self.session.prepare(model)  # DDP when world > 1; `model` stays bare
        fills = build.warmup_fill(spec), build.input_fill(spec)  # partition 0, the others
        for partition in range(first, spec.pretrain.partitions):
            common = {
                "fill": fills[min(partition, 1)],
                "optimizer": optimizer,
                "learning_rate": learning_rate,
                "precision": trial.precision,
            }
            self._partition(state, partition, model, trained, transferred, common)
        return {key: value.detach().cpu() for key, value in transferred.state_dict().items()}

    def _partition(self, state, partition, model, trained, transferred, common) -> None:
        trial, budget = self.trial, self.trial.budget
        indices = trial.splits.pretrain_partitions[partition]
        metrics: dict[str, Any] = {"phase": "pretrain", "partition": partition}
        metrics |= {
            "plan/partitions": trial.spec.pretrain.partitions,
            "plan/pretrain_steps": budget.pretrain_steps,
            "precision": str(trial.precision),
        }
        masks, scoring = self.objective.masks(partition, model, indices)
        metrics |= scoring
        gallery = self._look(transferred, common["fill"], indices, masks, partition, metrics)
        faults.pause_for_a_kill(f"pretrain:{partition}")
        cached = None
        if partition == 0 and self.partition0 is not None:
            cached = self.partition0.restore(model, common["optimizer"])
            if cached is not None:
                state.saved_seconds += cached["partition0_saved_seconds"]
        offset = budget.pretrain_step_offset(partition)
        loss = self.objective.loss_key
        if cached is not None:
            metrics |= cached
        else:
            batches = faults.poisoned(self._batches(indices, partition), partition)
            metrics[loss] = self.objective.train(
                trained,
                batches,
                masks,
                steps=budget.partition_steps[partition],
                mask_seed=lambda e, p=partition: trial.seeded(MASKS, p, e),
                first_step=offset,
                **common,
            )
        metrics["pretrain_steps"] = offset + budget.partition_steps[partition]
        state.at_pretraining(partition)
        seconds = self.checkpoints.report(state, metrics, model, common["optimizer"], gallery)
        if partition == 0 and cached is None and self.partition0 and trial.rank == 0:
            losses = {loss: float(metrics[loss])}
            self.partition0.save(model, common["optimizer"], losses, seconds)
        faults.raise_after_partition(partition, not state.resumed)  # first attempt only

    def _look(self, model, fill, indices, masks: MaskSource, partition, metrics) -> Path | None:
        """Rank 0: mechanism diagnostics (into `metrics`) and the gallery, for the model and
        masks of this partition as training on it begins."""
        trial = self.trial
        if trial.rank != 0:
            return None
        generator = torch.Generator().manual_seed(trial.seeded(MASKS, partition))
        where = (generator, trial.spec.data.image_size, trial.device)
        metrics |= looks.diagnostics(trial.pretrain_source, indices, masks, *where)
        return looks.gallery(
            model, fill, trial.pretrain_source, indices, masks, *where, partition, trial.precision
        )

    def _batches(self, indices, partition):
        trial = self.trial
        dataset = PretrainDataset(
            trial.pretrain_source,
            trial.shard(indices),
            pretrain_transform(trial.spec.data.image_size, augment=False),
        )

        def batches(epoch: int):
            loader = DataLoader(
                dataset,
                batch_size=trial.spec.pretrain.batch_size,
                shuffle=True,
                generator=torch.Generator().manual_seed(trial.seeded(SHUFFLE, partition, epoch)),
                **trial.loading,
            )
            return trial.on_device(loader)

        return batches
