"""What a trial trains for, counted in optimizer steps, and warnings when that is too little.

A budget in epochs means different amounts of training for different data sizes; what a model
learns depends on the optimizer steps it takes. `trial_budget` turns a spec and its splits into
steps (per Train worker: each takes a shard of every partition and of the labeled train split),
so `validate`, the start of `run` and the trial itself agree on them. No torch, no Ray.

The warning thresholds, and where they come from (synthetic shapes at 64 px, the depth-3
U-Net, 48 labeled images, fine-tuning batch 8, one seed each):
- MIN_FINETUNE_STEPS, measured: after 8 steps mIoU is the trivial predictor's (0.17), after 100
  steps 0.33, after 300 steps 0.48 (pretrained with random masks; scratch 0.30-0.50 by seed).
- MIN_PRETRAIN_STEPS, measured: 30 steps of random-mask pretraining (10 per partition) already
  lifted a seed's mIoU from 0.30 (scratch) to 0.45; with fewer, we have no evidence that
  pretraining changes the result.
- MIN_FIRST_PARTITION_STEPS and MIN_VAL_IMAGES are rules of thumb, not measurements: masks
  scored by a model that has barely trained rank patches by how far they are from the image's
  mean; mIoU over a few dozen images moves by points with a single image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from smsweep.method.data.splits import Splits
from smsweep.spec import registry
from smsweep.spec.config import SweepSpec

DEFAULT_PRETRAIN_EPOCHS = 1  # per partition, when neither epochs nor steps is given
DEFAULT_FINETUNE_EPOCHS = 5
DEFAULT_MAX_EVALUATIONS = 10
MIN_FINETUNE_STEPS = 100
MIN_PRETRAIN_STEPS = 30
MIN_FIRST_PARTITION_STEPS = 25  # the model that scores the first model-based masks
MIN_VAL_IMAGES = 32


@dataclass(frozen=True)
class Budget:
    """One trial's training, in images and optimizer steps (per Train worker)."""

    pretrains: bool  # False for the scratch baseline (`masking.strategy: none`)
    partition_images: tuple[int, ...]
    partition_passes: tuple[int, ...]  # steps in one pass over each partition
    partition_steps: tuple[int, ...]  # optimizer steps on each partition
    train_images: int
    val_images: int
    finetune_steps_per_epoch: int
    finetune_steps: int
    finetune_evaluations: int
    finetune_repeats: int = 1  # fine-tunes of the one pretrained model, each finetune_steps
    probe: bool = False  # finetune.probe: a frozen-encoder probe beside them, finetune_steps too

    @property
    def pretrain_steps(self) -> int:
        return sum(self.partition_steps) if self.pretrains else 0

    def evaluation_step(self, evaluation: int) -> int:
        """Fine-tuning steps taken when validation `evaluation` (0-based) runs."""
        return round((evaluation + 1) * self.finetune_steps / self.finetune_evaluations)

    def pretrain_step_offset(self, partition: int) -> int:
        """Pretraining steps taken before `partition` starts (the schedule's position)."""
        return sum(self.partition_steps[:partition])

    def lines(self) -> list[str]:
        """A few lines for the console: images per split and partition, steps per phase."""
        sizes = _span(self.partition_images)
        lines = [
            f"images: {sum(self.partition_images)} pretraining in {len(self.partition_images)} "
            f"partitions of {sizes}, {self.train_images} labeled to fine-tune, "
            f"{self.val_images} to validate"
        ]
        if self.pretrains:
            lines.append(
                f"pretraining: {_span(self.partition_steps)} optimizer steps per partition, "
                f"{self.pretrain_steps} in all"
            )
        else:
            lines.append("pretraining: none (the scratch baseline)")
        passes = self.finetune_steps / self.finetune_steps_per_epoch
        lines.append(
            f"fine-tuning: {self.finetune_steps} optimizer steps ({passes:.3g} passes of "
            f"{self.finetune_steps_per_epoch} batches), validated {self.finetune_evaluations} times"
        )
        if self.finetune_repeats > 1:
            lines.append(
                f"fine-tune repeats: {self.finetune_repeats} fine-tunes of the one pretrained "
                f"model, {self.finetune_repeats * self.finetune_steps} fine-tuning steps in all"
            )
        if self.probe:
            lines.append(
                f"probe: a frozen-encoder probe beside the fine-tune, {self.finetune_steps} "
                "steps of the decoder and head, validated with it (probe/ metrics)"
            )
        return lines


def trial_budget(spec: SweepSpec, splits: Splits, workers: int | None = None) -> Budget:
    """The budget of `spec` (a resolved trial spec) on `splits`, with `workers` Train workers
    (default `resources.train_workers`) each taking an equal shard."""
    workers = max(1, workers or spec.resources.train_workers)  # 0: the trial trains itself
    pretrain, finetune = spec.pretrain, spec.finetune
    images = tuple(len(part) for part in splits.pretrain_partitions)
    passes = tuple(_steps_per_pass(n, workers, pretrain.batch_size) for n in images)
    if pretrain.steps_per_partition is not None:
        steps = tuple(pretrain.steps_per_partition for _ in images)
    else:
        epochs = pretrain.epochs_per_partition or DEFAULT_PRETRAIN_EPOCHS
        steps = tuple(epochs * per_pass for per_pass in passes)
    per_epoch = _steps_per_pass(len(splits.train), workers, finetune.batch_size)
    if finetune.steps is not None:
        finetune_steps = finetune.steps
    else:
        finetune_steps = (finetune.epochs or DEFAULT_FINETUNE_EPOCHS) * per_epoch
    evaluations = finetune.evaluations or min(
        DEFAULT_MAX_EVALUATIONS, math.ceil(finetune_steps / per_epoch)
    )
    return Budget(
        pretrains=spec.masking.strategy != "none",
        partition_images=images,
        partition_passes=passes,
        partition_steps=steps,
        train_images=len(splits.train),
        val_images=len(splits.val),
        finetune_steps_per_epoch=per_epoch,
        finetune_steps=finetune_steps,
        finetune_evaluations=min(evaluations, finetune_steps),
        finetune_repeats=finetune.repeats,
        probe=finetune.probe,
    )


def budget_warnings(spec: SweepSpec, budget: Budget) -> list[str]:
    """Phases too short to learn, each with the key to raise (thresholds: module docstring)."""
    warnings = []
    if budget.finetune_steps < MIN_FINETUNE_STEPS:
        warnings.append(
            f"fine-tuning takes {budget.finetune_steps} optimizer steps; below "
            f"{MIN_FINETUNE_STEPS} a U-Net barely leaves the trivial predictor (the majority "
            "class everywhere): raise finetune.steps (or finetune.epochs)"
        )
    if budget.pretrains:
        raise_key = "pretrain.steps_per_partition (or pretrain.epochs_per_partition)"
        if budget.pretrain_steps < MIN_PRETRAIN_STEPS:
            warnings.append(
                f"pretraining takes {budget.pretrain_steps} optimizer steps in all; below "
                f"{MIN_PRETRAIN_STEPS} it may not change what fine-tuning reaches: raise "
                f"{raise_key}"
            )
        scored = registry.strategy(spec.masking.strategy).needs_model
        first = budget.partition_steps[0]
        if scored and len(budget.partition_steps) > 1 and first < MIN_FIRST_PARTITION_STEPS:
            warnings.append(
                f"the first masks scored from the model (selective, saliency) come from a model "
                f"trained for {first} steps (partition 0); below {MIN_FIRST_PARTITION_STEPS} "
                f"they are close to random: raise {raise_key}"
            )
    if budget.val_images < MIN_VAL_IMAGES:
        warnings.append(
            f"mIoU is measured on {budget.val_images} validation images; below "
            f"{MIN_VAL_IMAGES} seed-to-seed noise hides differences of a few points: raise "
            "data.val_fraction (or data.num_images)"
        )
    return warnings


def _steps_per_pass(images: int, workers: int, batch_size: int) -> int:
    shard = math.ceil(images / workers)  # every worker gets an equal (wrapped) shard
    return max(1, math.ceil(shard / batch_size))


def _span(values: tuple[int, ...]) -> str:
    low, high = min(values), max(values)
    return str(low) if low == high else f"{low}-{high}"
