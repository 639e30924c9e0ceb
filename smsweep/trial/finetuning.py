"""The fine-tuning phase: the pretrained weights (or none) in a segmentation U-Net, trained on
the labelled split and validated `budget.finetune_evaluations` times, each validation a report
with a checkpoint. The head's initialisation and every batch order are seeded from the repeat
seed, so arms of one repeat are paired and a resumed trial trains as an uninterrupted one.

With `finetune.repeats` the one pretrained model is fine-tuned F times, side by side, and each
report holds their mean (`repeats.py`); with `finetune.freeze_encoder` only the decoder and
the head train (a probe of what pretraining put in the encoder); with `finetune.probe` such a
probe trains beside the fine-tune and reports as `probe/<metric>` (`probe.py`).
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
    freeze_encoder,
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
from smsweep.trial.probe import Probe
from smsweep.trial.repeats import Parked, Repeats, aggregate, finetune_seed, on_cpu
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
        restored = torch.get_rng_state()  # on a resume, the checkpoint's (`Checkpoints.restore`)
        model, transfer = self._model(pretrained, finetune=0)
        segmentation = mrm.segmentation_part(model)  # what is validated and exported
        frozen = self._freeze(segmentation)
        model.to(trial.device)
        optimizer, learning_rate = optimization(model, spec.finetune, budget.finetune_steps)
        first = 0
        if state.resumed and state.phase == "finetune":
            model.load_state_dict(state.model)
            optimizer.load_state_dict(state.optimizer)
            parked = state.finetunes or []
            first = state.epoch + 1
            torch.set_rng_state(restored)  # building the model reseeded it (MRM masks draw from it)
        else:
            parked = self._fresh_repeats(pretrained, optimizer)
        repeats = Repeats(model, optimizer, parked)
        trained = self.session.prepare(model)
        trains = [self.train_split(finetune) for finetune in range(repeats.count)]
        probe = Probe(self, pretrained, state.probe) if spec.finetune.probe else None
        floor: dict[str, float] = {}
        loss = segmentation_loss(spec.finetune.loss, self._class_weights())
        self.sampling = rare_class_sampling(trial)  # once: every pass draws from it
        search = spec.search
        ranked = ["miou", search.metric, *(objective.metric for objective in search.objectives)]
        best = state.best_score if state.phase == "finetune" else None
        for evaluation in range(first, budget.finetune_evaluations):
            faults.pause_for_a_kill(f"finetune:{evaluation}")
            done = budget.evaluation_step(evaluation - 1) if evaluation else 0
            steps = budget.evaluation_step(evaluation) - done
            last = evaluation == budget.finetune_evaluations - 1
            robust = spec.robustness.enabled and (last or search.metric.startswith("robust/"))
            measured: list[dict[str, Any]] = [{} for _ in range(repeats.count)]
            for finetune in repeats.order():  # each fine-tune's steps up to this validation
                repeats.activate(finetune)
                auxiliary: list[float] = []
                one = measured[finetune]
                one["finetune_loss"] = self.steps(
                    trained,
                    trains[finetune],
                    optimizer,
                    learning_rate,
                    done,
                    steps,
                    auxiliary=auxiliary,
                    criterion=loss,
                    frozen=frozen,
                    finetune=finetune,
                )
                if auxiliary:  # MRM: the weighted feature-reconstruction part of finetune_loss
                    one["mrm_loss"] = sum(auxiliary) / max(1, len(auxiliary))
                validation, val_counts = self.validate(segmentation, frozen)
                one |= validation
                if robust:
                    one |= robustness_metrics(trial, segmentation)
            floor = floor or self._floor(val_counts)
            metrics: dict[str, Any] = {"phase": "finetune", "epoch": evaluation}
            metrics |= aggregate(measured, ranked)
            if probe is not None:
                metrics |= probe.advance(done, steps, loss)
            metrics["finetune_steps"] = done + steps
            metrics |= floor
            if transfer is not None:
                metrics["transfer"] = transfer
            metrics["done"] = last
            metrics |= {
                "plan/finetune_steps": budget.finetune_steps,
                "plan/finetune_evaluations": budget.finetune_evaluations,
                "precision": str(trial.precision),
            }
            if repeats.count > 1:
                metrics["plan/finetune_repeats"] = repeats.count
            value = metrics.get(search.metric)
            if isinstance(value, float) and math.isfinite(value):
                keep = max if search.mode == "max" else min
                best = value if best is None else keep(best, value)
            if best is not None:
                metrics[f"best/{search.metric}"] = best  # search.score: best
            if search.score == "tail":
                metrics |= tail_score(state, search.metric, value, search.tail)
            state.at_finetuning(evaluation, best)
            state.finetunes = repeats.checkpointed()
            state.probe = probe.checkpointed() if probe is not None else None
            self.checkpoints.report(state, metrics, model, optimizer)

    def _model(
        self, pretrained: dict[str, torch.Tensor] | None, finetune: int
    ) -> tuple[nn.Module, str | None]:
        """Fine-tune `finetune`'s model (its head initialised from its seed, the pretrained
        weights in the rest) and what it took from pretraining (None: nothing to say)."""
        spec = self.trial.spec
        torch.manual_seed(finetune_seed(self.trial, HEAD, finetune=finetune))
        model = build.segmentation_model(spec)
        transfer = "no pretraining" if spec.masking.strategy == "none" else None
        if pretrained is not None:
            transfer = transfer_weights(pretrained, model).summary()
        return mrm.with_rebuilder(model, spec.mrm), transfer  # a Rebuilder when mrm.enabled

    def _fresh_repeats(
        self, pretrained: dict[str, torch.Tensor] | None, optimizer: torch.optim.Optimizer
    ) -> list[Parked]:
        """Fine-tunes 1..F-1 as they start: their own models, a fresh optimizer, their RNG.
        Fine-tune 0 (built already) keeps the RNG state it was built with."""
        rng, parked = torch.get_rng_state(), []
        fresh = on_cpu(optimizer.state_dict())  # before any step: no moments yet
        for finetune in range(1, self.trial.spec.finetune.repeats):
            model, _ = self._model(pretrained, finetune)
            weights, rng_after = model.state_dict(), torch.get_rng_state()
            parked.append({"model": weights, "optimizer": fresh, "torch_rng": rng_after})
        torch.set_rng_state(rng)
        return parked

    def _freeze(self, segmentation: nn.Module) -> nn.Module | None:
        """`finetune.freeze_encoder`: the encoder, its parameters frozen (the optimizer then
        leaves them out); None when the whole model trains."""
        if not self.trial.spec.finetune.freeze_encoder:
            return None
        return freeze_encoder(segmentation)

    def train_split(self, finetune: int) -> SegmentationDataset:
        """This rank's labelled train images, augmented from fine-tune `finetune`'s seed."""
        trial, spec = self.trial, self.trial.spec
        return SegmentationDataset(
            trial.source,
            trial.shard(trial.splits.train),
            finetune_transform(spec.data.image_size, train=True, augment=spec.data.augment),
            seed=finetune_seed(trial, FINETUNE, finetune=finetune),
        )

    def validate(
        self, segmentation: nn.Module, frozen: nn.Module | None
    ) -> tuple[dict[str, Any], torch.Tensor]:
        """Validation metrics (BatchNorm statistics recalibrated first with precise_bn, but for
        a `frozen` encoder's) and the validation split's pixel count per class (for the
        floor)."""
        trial = self.trial
        if trial.spec.finetune.precise_bn:
            train_view = trial.on_device(trial.labelled(trial.splits.train))
            recalibrate_batchnorm(segmentation, train_view, trial.precision, frozen)
        confusion = confusion_matrix(
            segmentation,
            trial.on_device(trial.labelled(trial.splits.val)),
            trial.spec.data.num_classes,
            trial.precision,
        )
        metrics = segmentation_metrics(confusion, trial.source.class_names)
        return metrics, confusion.sum(dim=1)

    def steps(
        self,
        model: nn.Module,
        train: SegmentationDataset,
        optimizer: torch.optim.Optimizer,
        learning_rate: LearningRate,
        first_step: int,
        steps: int,
        auxiliary: list[float] | None = None,
        criterion: SegmentationLoss | None = None,
        frozen: nn.Module | None = None,
        finetune: int = 0,
    ) -> float:
        """`steps` fine-tuning steps from `first_step` on, pass after pass over `train` (each
        pass its own seeded order and augmentation); returns the mean loss per image.
        `auxiliary` collects each step's auxiliary loss (MRM's), when the model has one;
        `criterion` is the segmentation loss (`finetune.loss`); `frozen` the part that does
        not train; `finetune` which of the repeats trains (it seeds the orders)."""
        trial = self.trial

        sampling = self.sampling

        def order(pass_index: int) -> torch.Tensor:
            seed = finetune_seed(trial, FINETUNE_SHUFFLE, pass_index, finetune=finetune)
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
                frozen=frozen,
            )
            total, images = total + loss * count, images + count
            first_step += len(batches)
        return total / max(1, images)

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

    def _class_weights(self) -> torch.Tensor | None:
        """`finetune.class_weights`: None, or the inverse frequency of the train split's
        classes."""
        if self.trial.spec.finetune.class_weights == "none":
            return None
        return inverse_frequency(self._train_counts())


def robustness_metrics(trial: TrialContext, model: nn.Module) -> dict[str, float]:
    """`robust/` metrics of the model on the validation split under each factor's shift,
    seeded from spec.seed (every trial of a sweep sees the same shifted images)."""
    started = time.perf_counter()
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


def rare_class_sampling(trial: TrialContext) -> tuple[torch.Tensor, torch.Tensor, float] | None:
    """(presence (N, C), pixel shares (C,), T) of this rank's train images, for
    `finetune.rare_class_sampling`; None when it is off."""
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


def tail_score(state: TrialState, metric: str, value: Any, tail: int) -> dict[str, float]:
    """search.score: tail: `tail/<metric>`, the mean of the metric over the last `tail`
    validations (this one included; a non-finite one left out), kept in `state` for a resume."""
    score = float(value) if isinstance(value, float | int) else math.nan
    state.recent = [*state.recent, score][-tail:]
    finite = [v for v in state.recent if math.isfinite(v)]
    return {f"tail/{metric}": sum(finite) / len(finite)} if finite else {}
