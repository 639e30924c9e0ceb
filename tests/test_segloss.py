"""Fine-tuning losses and class weights (`finetune.loss`, `finetune.class_weights`): every loss,
weighted or not, trains a real tiny U-Net; the weights follow the train split's class shares."""

from __future__ import annotations

from typing import get_args

import pytest
import torch

from smsweep.engines.trainloop import run_in_process
from smsweep.errors import SpecError
from smsweep.method import build
from smsweep.method.segloss import LOSSES, inverse_frequency, rare_class_order, segmentation_loss
from smsweep.spec.load import validate_spec
from smsweep.spec.schema import FinetuneConfig
from tests.test_trial import tiny_spec


def test_the_schema_offers_exactly_the_losses_there_are():
    assert set(get_args(FinetuneConfig.model_fields["loss"].annotation)) == set(LOSSES)


def test_inverse_frequency_weighs_a_rare_class_up_and_an_absent_one_at_zero():
    weights = inverse_frequency([900, 90, 10, 0])
    assert weights[3] == 0 and weights[2] > weights[1] > weights[0]
    assert weights[:3].mean().item() == pytest.approx(1.0)
    assert weights[2] / weights[0] == pytest.approx(90.0)


def _batch():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 32, 32, generator=generator)
    labels = torch.zeros(2, 32, 32, dtype=torch.long)
    labels[:, 8:16, 8:16] = 1
    labels[:, 20:24, 20:24] = 3  # rare
    labels[0, :2] = 255  # ignored
    return images, labels


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "inverse_frequency"])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_each_loss_trains_a_tiny_unet(name, weighted):
    if name == "lovasz" and weighted:
        with pytest.raises(ValueError, match="no class weights"):
            segmentation_loss(name, torch.ones(4))
        return
    torch.manual_seed(0)
    model = build.segmentation_model(tiny_spec())
    images, labels = _batch()
    counts = torch.bincount(labels[labels != 255].flatten(), minlength=4)
    loss_fn = segmentation_loss(name, inverse_frequency(counts) if weighted else None)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        loss = loss_fn(model(images).float(), labels)
        assert loss.dim() == 0 and torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert losses[-1] < losses[0], losses


def test_lovasz_with_class_weights_is_refused_with_the_fix():
    with pytest.raises(SpecError, match="lovasz takes no class weights"):
        validate_spec({"finetune": {"loss": "lovasz", "class_weights": "inverse_frequency"}})


def test_a_trial_fine_tunes_with_a_weighted_dice_loss(tmp_path):
    """Its validations fall mid-pass (7 steps of 3 a pass, 2 validations): the loss serves every
    pass of a stretch between validations."""
    spec = tiny_spec(
        masking={"strategy": "none"},
        finetune={
            "epochs": None,
            "steps": 7,
            "evaluations": 2,
            "loss": "ce_dice",
            "class_weights": "inverse_frequency",
        },
        resources={"scoring_actors": 0, "train_workers": 0},
    )
    reports = [r.flat() for r in run_in_process(spec, tmp_path)]
    assert reports[-1]["done"] and 0.0 <= reports[-1]["miou"] <= 1.0
    plain = tiny_spec(
        masking={"strategy": "none"}, resources={"scoring_actors": 0, "train_workers": 0}
    )
    unweighted = [r.flat() for r in run_in_process(plain, tmp_path / "plain")]
    assert reports[0]["finetune_loss"] != unweighted[0]["finetune_loss"]  # the loss took effect


def test_rare_class_sampling_draws_the_images_of_a_rare_class_more_often():
    presence = torch.zeros(100, 3, dtype=torch.bool)
    presence[:, 0] = True  # background everywhere
    presence[:50, 1] = True
    presence[99, 2] = True  # one image holds the rare class
    shares = torch.tensor([0.7, 0.299, 0.001])
    draws = torch.cat(
        [
            rare_class_order(presence, shares, 0.01, torch.Generator().manual_seed(s))
            for s in range(20)
        ]
    )
    assert draws.min() >= 0 and draws.max() < 100 and len(draws) == 2000
    assert (
        draws == 99
    ).float().mean() > 0.9  # one image in a hundred: its class dominates at T=0.01
    again = rare_class_order(presence, shares, 0.01, torch.Generator().manual_seed(3))
    assert torch.equal(
        again, rare_class_order(presence, shares, 0.01, torch.Generator().manual_seed(3))
    )
    # a large temperature samples the classes almost evenly
    flat = rare_class_order(presence, shares, 10.0, torch.Generator().manual_seed(0))
    assert (flat == 99).float().mean() < 0.5


def test_a_trial_fine_tunes_with_rare_class_sampling(tmp_path):
    spec = tiny_spec(
        masking={"strategy": "none"},
        finetune={"rare_class_sampling": 0.01},
        resources={"scoring_actors": 0, "train_workers": 0},
    )
    reports = [r.flat() for r in run_in_process(spec, tmp_path)]
    assert reports[-1]["done"] and 0.0 <= reports[-1]["miou"] <= 1.0
