"""smsweep.method.build: spec names -> strategies, fills, token stages, models and losses.

Specs come from sweeps/quickstart.yaml with `KEY=VALUE` overrides (as `--set` does); the models
are real (small) U-Nets run on 32x32 CPU inputs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from smsweep.errors import SpecError
from smsweep.method import build
from smsweep.method.losses import FocalFrequencyLoss, MSSSIML1Loss
from smsweep.method.masking import (
    BlockMasking,
    HardSaliencyMasking,
    MixedMasking,
    NoMasking,
    RandomMasking,
    SaliencyMasking,
    SelectiveMasking,
)
from smsweep.method.masking.fills import MeanFill, NoiseFill, ZeroFill
from smsweep.method.models import MaskedUnet
from smsweep.spec.load import load_spec
from smsweep.spec.registry import STRATEGIES

QUICKSTART = Path(__file__).resolve().parents[1] / "sweeps" / "quickstart.yaml"
EXPECTED_CLASS = {
    "none": NoMasking,
    "random": RandomMasking,
    "block": BlockMasking,
    "selective": SelectiveMasking,
    "saliency": SaliencyMasking,
    "saliency_hard": HardSaliencyMasking,
    "mixed": MixedMasking,
}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def spec_with(*overrides: str):
    """The quickstart spec, no search space, 32 px images, plus `overrides`."""
    return load_spec(QUICKSTART, ["search.space={}", "data.image_size=32", *overrides])


@pytest.mark.parametrize("name", STRATEGIES)
def test_masking_strategy_class_per_name(name):  # a new name without a class: KeyError
    strategy = build.masking_strategy(spec_with(f"masking.strategy={name}"))
    assert type(strategy) is EXPECTED_CLASS[name]
    assert strategy.configs[0][0] == 8  # quickstart patch_size


def test_selective_gets_every_scoring_setting():
    settings = "strategy=selective samples=2 sampling=complementary fill=noise ssim_weight=0.25"
    spec = spec_with(*(f"masking.{kv}" for kv in f"{settings} l1_weight=2.0 ratio=0.6".split()))
    strategy = build.masking_strategy(spec)
    assert (strategy.patch_size, strategy.ratio) == (8, 0.6)
    assert (strategy.samples, strategy.sampling) == (2, "complementary")
    assert (strategy.ssim_weight, strategy.l1_weight) == (0.25, 2.0)
    assert isinstance(strategy.fill, NoiseFill)


def test_mixed_configs_and_probability():
    mixed = "strategy=mixed mixed.patch_size=16 mixed.ratio=0.7 mixed.probability=0.25"
    spec = spec_with(*(f"masking.{kv}" for kv in mixed.split()))
    strategy = build.masking_strategy(spec)
    assert strategy.configs == ((8, 0.5), (16, 0.7))
    assert strategy.second_probability == 0.25


def test_a_mixed_patch_size_off_the_token_stride_is_refused():
    overrides = ["masking.strategy=mixed", "masking.token_stage=3", "masking.mixed.patch_size=4"]
    with pytest.raises(SpecError, match=r"patch_size\W+4 .*stride 8"):
        build.reconstruction_model(spec_with(*overrides))  # at load or, today, at build


@pytest.mark.parametrize("name", ["saliency", "saliency_hard"])
@pytest.mark.parametrize("largest", [True, False])
def test_saliency_largest_component(name, largest):
    spec = spec_with(f"masking.strategy={name}", f"masking.largest_component={largest}")
    assert build.masking_strategy(spec).largest_component is largest


def test_token_fill_is_zeros_at_the_input_and_a_learnable_token_at_stage_0():
    spec = spec_with("masking.strategy=selective", "masking.fill=token")
    assert isinstance(build.input_fill(spec), ZeroFill)
    assert build.mask_stage(spec) == 0
    assert isinstance(build.masking_strategy(spec).fill, ZeroFill)  # scoring sees the same input
    model = build.reconstruction_model(spec)
    assert model.mask_stage == 0 and isinstance(model.token, torch.nn.Parameter)
    assert model.token.shape == (1, 3, 1, 1) and model.token.requires_grad
    assert "token" in model.state_dict()


def test_token_stage_with_mean_fill():
    spec = spec_with("masking.fill=mean", "masking.token_stage=2")
    assert isinstance(build.input_fill(spec), MeanFill)
    assert build.mask_stage(spec) == 2
    model = build.reconstruction_model(spec)
    assert model.token.shape == (1, model.unet.encoder.out_channels[2], 1, 1)
    mask = torch.zeros(2, 1, 32, 32, dtype=torch.bool)
    mask[:, :, :8, :8] = True
    assert model(torch.rand(2, 3, 32, 32), mask).shape == (2, 3, 32, 32)


def test_mean_fill_without_token_stage_has_no_token():
    spec = spec_with("masking.fill=mean")
    assert build.mask_stage(spec) is None
    assert build.reconstruction_model(spec).token is None


def test_reconstruction_model_outputs_rgb_in_unit_range():
    torch.manual_seed(0)
    model = build.reconstruction_model(spec_with()).eval()
    assert isinstance(model, MaskedUnet)
    out = model(torch.rand(2, 3, 32, 32), None)
    assert out.shape == (2, 3, 32, 32)
    assert out.min() >= 0 and out.max() <= 1


def test_segmentation_model_outputs_one_logit_per_class():
    torch.manual_seed(0)
    spec = spec_with("data.num_classes=6")
    out = build.segmentation_model(spec).eval()(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 6, 32, 32)
    assert out.min() < 0  # logits, no sigmoid


def test_warmup_strategy_is_random_at_the_warm_up_sizes_whatever_masking_says():
    searched = ("masking.strategy=saliency", "masking.ratio=0.7", "masking.patch_size=4")
    warmup = build.warmup_strategy(spec_with(*searched))
    assert type(warmup) is RandomMasking and warmup.configs == ((8, 0.5),)
    own = spec_with(*searched, "pretrain.warmup_masks={ratio: 0.6, patch_size: 16, fill: zero}")
    assert build.warmup_strategy(own).configs == ((16, 0.6),)
    assert isinstance(build.warmup_fill(own), ZeroFill)
    assert isinstance(build.input_fill(own), MeanFill)  # later partitions: masking.fill


def test_pretrain_loss_weighted_terms():
    spec = spec_with("pretrain.loss={msssim_l1: 1.0, focal_frequency: 0.1}")
    loss = build.pretrain_loss(spec)
    assert set(loss.terms) == {"msssim_l1", "focal_frequency"}
    assert loss.terms["msssim_l1"][0] == 1.0 and isinstance(
        loss.terms["msssim_l1"][1], MSSSIML1Loss
    )
    weight, term = loss.terms["focal_frequency"]
    assert weight == 0.1 and isinstance(term, FocalFrequencyLoss)
    generator = torch.Generator().manual_seed(0)
    prediction, target = torch.rand(2, 3, 32, 32, generator=generator), torch.rand(2, 3, 32, 32)
    mask = torch.ones(2, 1, 32, 32, dtype=torch.bool)
    parts = loss.components(prediction, target, mask)
    expected = parts["msssim_l1"] + 0.1 * parts["focal_frequency"]
    assert torch.allclose(loss(prediction, target, mask), expected)


def test_pretrain_loss_single_name():
    loss = build.pretrain_loss(spec_with("pretrain.loss=masked_l1"))
    assert list(loss.terms) == ["masked_l1"] and loss.terms["masked_l1"][0] == 1.0


@pytest.mark.parametrize(
    ("strategy", "refresh", "expected"),
    [
        ("random", "auto", "batch"),
        ("block", "partition", "partition"),
        ("mixed", "batch", "batch"),
        ("selective", "auto", "partition"),
        ("saliency", "partition", "partition"),
    ],
)
def test_mask_refresh(strategy, refresh, expected):
    spec = spec_with(f"masking.strategy={strategy}", f"masking.refresh={refresh}")
    assert build.mask_refresh(spec) == expected


@pytest.mark.parametrize("strategy", ["selective", "saliency", "saliency_hard"])
def test_refresh_batch_is_refused_for_masks_scored_from_the_model(strategy):
    with pytest.raises(SpecError, match=f"not one of {strategy}'s refresh modes"):
        spec_with(f"masking.strategy={strategy}", "masking.refresh=batch")


def test_the_registry_says_which_strategies_need_the_model_and_its_classes_agree():
    from smsweep.method.masking import STRATEGIES as CLASSES
    from smsweep.spec import registry

    assert registry.model_based() == ["selective", "saliency", "saliency_hard"]
    for name, cls in CLASSES.items():
        assert cls.name == name  # the entry builds the class that carries its name
        assert registry.strategy(name).needs_model == (name in registry.model_based())
