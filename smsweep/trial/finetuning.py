"""The fine-tuning phase: the pretrained weights (or none) in a segmentation U-Net, trained on
the labelled split and validated `budget.finetune_evaluations` times, each validation a report
with a checkpoint. The head's initialisation and every batch order are seeded from the repeat
seed, so arms of one repeat are paired and a resumed trial trains as an uninterrupted one.
"""

from __future__ import annotations

import math
import time
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader

from smsweep import faults
from smsweep.method import build, mrm, robustness
from smsweep.method.data import IGNORE_INDEX
from smsweep.method.data.datasets import SegmentationDataset
from smsweep.method.data.transforms import finetune_transform
from smsweep.method.finetune import (
    confusion_matrix,
    finetune_epoch,
    label_counts,
    recalibrate_batchnorm,
    segmentation_metrics,
    step_batches,
    transfer_weights,
    trivial_metrics,
)
from smsweep.method.schedule import LearningRate, optimization
from smsweep.method.segloss import (
    SegmentationLoss,
    inverse_frequency,
    rare_class_order,
    segmentation_loss,
)
from smsweep.trial.context import FINETUNE, FINETUNE_SHUFFLE, HEAD, TrialContext
from smsweep.trial.state import Checkpoints, TrialState


class Session(Protocol):
    def prepare(self, model: nn.Module) -> nn.Module: ...


class Finetuning:
    """Fine-tunes from `state` on, starting from `pretrained` weights (None: from scratch)."""

    def __init__(self, trial: TrialContext, checkpoints: Checkpoints, session: Session) -> None:
        self.trial, self.checkpoints, self.session = trial, checkpoints, session
        self.sampling: tuple[torch.Tensor, torch.Tensor, float] | None = None
        self.train_counts: torch.Tensor | None = None

    def run(self, state: TrialState, pretrained: dict[str, torch.Tensor] | None) -> None:
        trial, spec, budget = self.trial, self.trial.spec, self.trial.budget
        torch.manual_seed(trial.seeded(HEAD))
        model = build.segmentation_model(spec)
        transfer = "no pretraining" if spec.masking.strategy == "none" else None
        if pretrained is not None:
            transfer = transfer_weights(pretrained, model).summary()
        model = mrm.with_rebuilder(model, spec.mrm)  # trains with a Rebuilder when mrm.enabled
        segmentation = mrm.segmentation_part(model)  # what is validated and exported
        model.to(trial.device)
        optimizer, learning_rate = optimization(model, spec.finetune, budget.finetune_steps)
        first = 0
        if state.resumed and state.phase == "finetune":
            model.load_state_dict(state.model)
            optimizer.load_state_dict(state.optimizer)
            first = state.epoch + 1
        trained = self.session.prepare(model)
        train = SegmentationDataset(
            trial.source,
            trial.shard(trial.splits.train),
            finetune_transform(spec.data.image_size, train=True, augment=spec.data.augment),
            seed=trial.seeded(FINETUNE),
        )
        floor: dict[str, float] = {}
        loss = segmentation_loss(spec.finetune.loss, self._class_weights())
        self.sampling = self._rare_class_sampling()  # once: every pass draws from it
        search = spec.search
        best = state.best_score if state.phase == "finetune" else None
        for evaluation in range(first, budget.finetune_evaluations):
            faults.pause_for_a_kill(f"finetune:{evaluation}")
            done = budget.evaluation_step(evaluation - 1) if evaluation else 0
            steps = budget.evaluation_step(evaluation) - done
            metrics: dict[str, Any] = {"phase": "finetune", "epoch": evaluation}
            auxiliary: list[float] = []
            metrics["finetune_loss"] = self._steps(
                trained, train, optimizer, learning_rate, done, steps, auxiliary, loss
            )
            if auxiliary:  # MRM: the weighted feature-reconstruction part of finetune_loss
                metrics["mrm_loss"] = sum(auxiliary) / max(1, len(auxiliary))
            metrics["finetune_steps"] = done + steps
            validation, val_counts = self._validate(segmentation)
            metrics |= validation
            floor = floor or self._floor(val_counts)
            metrics |= floor
            if transfer is not None:
                metrics["transfer"] = transfer
            metrics["done"] = evaluation == budget.finetune_evaluations - 1
            if spec.robustness.enabled and (metrics["done"] or search.metric.startswith("robust/")):
                metrics |= self._robustness(segmentation)
            metrics |= {
                "plan/finetune_steps": budget.finetune_steps,
                "plan/finetune_evaluations": budget.finetune_evaluations,
                "precision": str(trial.precision),
            }
            value = metrics.get(search.metric)
            if isinstance(value, float) and math.isfinite(value):
                keep = max if search.mode == "max" else min
                best = value if best is None else keep(best, value)
            if best is not None:
                metrics[f"best/{search.metric}"] = best  # search.score: best
            state.at_finetuning(evaluation, best)
            self.checkpoints.report(state, metrics, model, optimizer)

    def _validate(self, segmentation: nn.Module) -> tuple[dict[str, Any], torch.Tensor]:
        """Validation metrics (BatchNorm statistics recalibrated first with precise_bn) and the
        validation split's pixel count per class (for the floor)."""
        trial = self.trial
        if trial.spec.finetune.precise_bn:
            train_view = trial.on_device(trial.labelled(trial.splits.train))
            recalibrate_batchnorm(segmentation, train_view, trial.precision)
        confusion = confusion_matrix(
            segmentation,
            trial.on_device(trial.labelled(trial.splits.val)),
            trial.spec.data.num_classes,
            trial.precision,
        )
        metrics = segmentation_metrics(confusion, trial.source.class_names)
        return metrics, confusion.sum(dim=1)

    def _steps(
        self,
        model: nn.Module,
        train: SegmentationDataset,
        optimizer: torch.optim.Optimizer,
        learning_rate: LearningRate,
        first_step: int,
        steps: int,
        auxiliary: list[float] | None = None,
        criterion: SegmentationLoss | None = None,
    ) -> float:
        """`steps` fine-tuning steps from `first_step` on, pass after pass over `train` (each
        pass its own seeded order and augmentation); returns the mean loss per image.
        `auxiliary` collects each step's auxiliary loss (MRM's), when the model has one;
        `criterion` is the segmentation loss (`finetune.loss`)."""
        trial = self.trial

        sampling = self.sampling

        def order(pass_index: int) -> torch.Tensor:
            seed = trial.seeded(FINETUNE_SHUFFLE, pass_index)
            generator = torch.Generator().manual_seed(seed)
            if sampling is not None:
                return rare_class_order(*sampling, generator)
            return torch.randperm(len(train), generator=generator)

        total, images = 0.0, 0
        size = trial.spec.finetune.batch_size
        for pass_index, batches in step_batches(len(train), size, first_step, steps, order):
            train.set_epoch(pass_index)
            loader = DataLoader(train, batch_sampler=batches, **trial.loading)
            count = sum(len(batch) for batch in batches)
            loss = finetune_epoch(
                model,
                trial.on_device(loader),
                optimizer,
                learning_rate=learning_rate,
                first_step=first_step,
                precision=trial.precision,
                auxiliary=auxiliary,
                loss_fn=criterion,
            )
            total, images = total + loss * count, images + count
            first_step += len(batches)
        return total / max(1, images)

    def _robustness(self, model: nn.Module) -> dict[str, float]:
        """`robust/` metrics of the model on the validation split under each factor's shift,
        seeded from spec.seed (every trial of a sweep sees the same shifted images)."""
        trial, started = self.trial, time.perf_counter()
        settings = trial.spec.robustness
        metrics = robustness.robust_metrics(
            model,
            lambda: trial.on_device(trial.labelled(trial.splits.val)),
            trial.source.class_names,
            factors=settings.factors,
            severity=settings.severity,
            seed=trial.spec.seed,
            precision=trial.precision,
        )
        return metrics | {"robust_seconds": time.perf_counter() - started}

    def _floor(self, val_counts: torch.Tensor) -> dict[str, float]:
        """`floor/miou` and `floor/pixel_accuracy`: what a model that learned nothing scores."""
        return trivial_metrics(val_counts, self._train_counts(), self.trial.source.class_names)

    def _train_counts(self) -> torch.Tensor:
        """Pixels of each class in the labelled train split (as validated: no augmentation),
        read once: the floor and the class weights both need them."""
        if self.train_counts is None:
            trial = self.trial
            labels = (mask for _, mask in trial.labelled(trial.splits.train))
            self.train_counts = label_counts(labels, trial.spec.data.num_classes)
        return self.train_counts

    def _rare_class_sampling(self) -> tuple[torch.Tensor, torch.Tensor, float] | None:
        """(presence (N, C), pixel shares (C,), T) of this rank's train images, for
        `finetune.rare_class_sampling`; None when it is off."""
        trial = self.trial
        temperature = trial.spec.finetune.rare_class_sampling
        if temperature is None:
            return None
        classes = trial.spec.data.num_classes
        presence, counts = [], torch.zeros(classes, dtype=torch.int64)
        for _, masks in trial.labelled(trial.shard(trial.splits.train)):  # (B, H, W)
            for mask in masks:
                held = torch.bincount(mask[mask != IGNORE_INDEX].flatten(), minlength=classes)
                presence.append(held[:classes] > 0)
                counts += held[:classes]
        shares = counts.double() / max(1, int(counts.sum()))
        return torch.stack(presence), shares, temperature

    def _class_weights(self) -> torch.Tensor | None:
        """`finetune.class_weights`: None, or the inverse frequency of the train split's
        classes."""
        if self.trial.spec.finetune.class_weights == "none":
            return None
        return inverse_frequency(self._train_counts())
