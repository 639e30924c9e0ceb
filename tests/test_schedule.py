"""Learning-rate schedules and step budgets: pure functions of the spec, the splits and the step."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from smsweep.errors import SpecError
from smsweep.method.data import SyntheticSource, make_splits
from smsweep.method.finetune import step_batches
from smsweep.method.schedule import LearningRate, lr_factor
from smsweep.spec.load import validate_spec
from smsweep.trial.budget import budget_warnings, trial_budget


def test_warmup_rises_linearly_then_cosine_decays_towards_zero():
    factors = [lr_factor(step, 100, warmup=0.1, schedule="cosine") for step in range(100)]
    assert factors[:10] == pytest.approx([(s + 1) / 11 for s in range(10)])
    assert factors[10] == 1.0
    assert all(a >= b for a, b in itertools.pairwise(factors[10:]))  # decreasing
    assert 0 < factors[-1] < 0.001
    assert factors[55] == pytest.approx(0.5, abs=0.02)  # half-way through the decay


def test_constant_schedule_and_no_warmup():
    assert [lr_factor(s, 10, warmup=0.0, schedule="constant") for s in range(10)] == [1.0] * 10
    assert lr_factor(0, 10, warmup=0.0, schedule="cosine") == 1.0
    with pytest.raises(ValueError, match="unknown schedule 'linear'"):
        lr_factor(0, 10, warmup=0.0, schedule="linear")


def test_learning_rate_sets_every_parameter_group():
    first, second = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(
        [{"params": first.parameters()}, {"params": second.parameters()}], lr=1.0
    )
    rate = LearningRate(optimizer, 0.01, 20, warmup=0.0, schedule="cosine")
    assert rate(10) == pytest.approx(0.01 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert {group["lr"] for group in optimizer.param_groups} == {rate(10)}


def spec_and_splits(**sections):
    raw = {
        "data": {"num_images": 50, "val_fraction": 0.2, "label_fraction": 0.5},
        "pretrain": {"partitions": 3, "batch_size": 4},
        "finetune": {"batch_size": 4},
    }
    for section, values in sections.items():
        raw[section] = {**raw.get(section, {}), **values}
    spec = validate_spec(raw)
    source = SyntheticSource(spec.data.num_images, spec.data.image_size, 5, 0)
    splits = make_splits(
        source,
        seed=spec.seed,
        partitions=spec.pretrain.partitions,
        val_fraction=spec.data.val_fraction,
        label_fraction=spec.data.label_fraction,
    )
    return spec, splits


def test_budget_in_epochs_counts_steps_per_partition_and_fine_tuning():
    spec, splits = spec_and_splits(pretrain={"epochs_per_partition": 2}, finetune={"epochs": 3})
    budget = trial_budget(spec, splits)
    # 40 pretraining images in partitions of 14/13/13 at batch 4; 20 labeled to fine-tune
    assert budget.partition_images == (14, 13, 13)
    assert budget.partition_steps == (8, 8, 8)
    assert budget.pretrain_steps == 24 and budget.pretrain_step_offset(2) == 16
    assert (budget.train_images, budget.val_images) == (20, 10)
    assert budget.finetune_steps_per_epoch == 5 and budget.finetune_steps == 15
    assert budget.finetune_evaluations == 3  # one per pass
    assert [budget.evaluation_step(e) for e in range(3)] == [5, 10, 15]


def test_budget_in_steps_and_the_defaults():
    spec, splits = spec_and_splits(pretrain={"steps_per_partition": 7}, finetune={"steps": 12})
    budget = trial_budget(spec, splits)
    assert budget.partition_steps == (7, 7, 7)
    assert budget.finetune_steps == 12 and budget.finetune_evaluations == 3  # ceil(12 / 5)
    assert [budget.evaluation_step(e) for e in range(3)] == [4, 8, 12]
    long, splits = spec_and_splits(finetune={"steps": 1000})
    assert trial_budget(long, splits).finetune_evaluations == 10  # at most 10 by default
    chosen, splits = spec_and_splits(finetune={"steps": 1000, "evaluations": 4})
    assert trial_budget(chosen, splits).evaluation_step(0) == 250
    defaults = trial_budget(*spec_and_splits())
    assert defaults.partition_steps == (4, 4, 4)  # one pass
    assert defaults.finetune_steps == 25  # five passes
    workers = trial_budget(*spec_and_splits(resources={"train_workers": 2}))
    assert workers.partition_steps == (2, 2, 2)  # each worker takes half of every partition


def test_a_budget_is_given_once():
    with pytest.raises(SpecError, match=r"epochs_per_partition or pretrain\.steps_per_partition"):
        validate_spec({"pretrain": {"epochs_per_partition": 2, "steps_per_partition": 5}})
    with pytest.raises(SpecError, match=r"finetune\.epochs or finetune\.steps, not both"):
        validate_spec({"finetune": {"epochs": 2, "steps": 5}})


def test_warnings_name_the_key_to_raise():
    spec, splits = spec_and_splits(masking={"strategy": "selective"})
    warnings = budget_warnings(spec, trial_budget(spec, splits))
    assert any("raise finetune.steps" in w for w in warnings)
    assert any("pretraining takes 12 optimizer steps" in w for w in warnings)
    assert any("trained for 4 steps (partition 0)" in w for w in warnings)
    assert any("10 validation images" in w and "data.val_fraction" in w for w in warnings)
    spec, splits = spec_and_splits(
        data={"num_images": 400, "val_fraction": 0.25},
        pretrain={"steps_per_partition": 100},
        finetune={"steps": 300},
        masking={"strategy": "selective"},
    )
    assert budget_warnings(spec, trial_budget(spec, splits)) == []
    scratch, splits = spec_and_splits(masking={"strategy": "none"})
    assert not any(
        "pretraining" in w for w in budget_warnings(scratch, trial_budget(scratch, splits))
    )


def test_step_batches_continue_across_passes_from_any_step():
    def order(pass_index):
        return torch.arange(5).roll(pass_index)  # pass p: a rotation, to tell passes apart

    everything = step_batches(5, 2, 0, 7, order)  # 3 steps per pass (2, 2, 1 items)
    assert everything == [
        (0, [[0, 1], [2, 3], [4]]),
        (1, [[4, 0], [1, 2], [3]]),
        (2, [[3, 4]]),
    ]
    resumed = step_batches(5, 2, 4, 3, order)  # the same steps 4..6, started there
    assert resumed == [(1, [[1, 2], [3]]), (2, [[3, 4]])]
