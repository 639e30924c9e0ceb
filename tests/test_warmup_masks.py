"""pretrain.warmup_masks: partition 0's own masks, so the partition-0 cache key holds none of
the searched masking keys; only what changes the model's shape or partition 0's steps."""

from __future__ import annotations

import pytest

from smsweep.errors import SpecError
from smsweep.trial import partition0
from tests.test_trial import tiny_spec


def name(**sections) -> str:
    return partition0.key(tiny_spec(**sections), seed=1, precision="fp32", device="cpu")


def test_the_key_holds_no_searched_masking_key():
    base = name()
    for masking in (
        {"ratio": 0.7},
        {"patch_size": 4},
        {"fill": "zero"},
        {"strategy": "block", "refresh": "partition"},
        {"samples": 4, "sampling": "complementary", "ssim_weight": 0.5},
        {"strategy": "mixed", "mixed": {"patch_size": 16, "ratio": 0.3}},
    ):
        assert name(masking=masking) == base, masking


def test_the_key_holds_the_warm_up_the_token_and_the_seed():
    base = name()
    assert name(pretrain={"warmup_masks": {"ratio": 0.6}}) != base
    assert name(pretrain={"warmup_masks": {"patch_size": 4}}) != base
    assert name(pretrain={"warmup_masks": {"fill": "blur"}}) != base
    assert name(masking={"token_stage": 2}) != base  # the model has a token
    assert name(masking={"fill": "token"}) != name(masking={"token_stage": 2}) != base
    assert partition0.key(tiny_spec(), seed=2, precision="fp32", device="cpu") != base


def test_contrastive_hard_negatives_keep_the_patch_size_in_the_key():
    contrastive = {"objective": "contrastive"}
    base = name(pretrain=contrastive, masking={"strategy": "random"})
    other = name(pretrain=contrastive, masking={"strategy": "random", "patch_size": 4})
    assert other != base  # hard negatives are drawn in partition 0 too, at masking.patch_size
    assert name(pretrain=contrastive, masking={"strategy": "random", "ratio": 0.7}) == base


def test_a_warm_up_patch_size_that_does_not_divide_the_image_is_named_with_its_fix():
    with pytest.raises(SpecError, match=r"pretrain\.warmup_masks\.patch_size 12 .*divide"):
        tiny_spec(pretrain={"warmup_masks": {"patch_size": 12}})


def test_a_warm_up_patch_size_off_the_token_stride_is_named_with_its_fix():
    deep = {"encoder_depth": 5, "decoder_channels": [32, 16, 8, 8, 8]}
    with pytest.raises(SpecError, match=r"pretrain\.warmup_masks\.patch_size 8 .*stride 16"):
        tiny_spec(model=deep, masking={"token_stage": 4, "patch_size": 16})
    spec = tiny_spec(
        model=deep,
        masking={"token_stage": 4, "patch_size": 16},
        pretrain={"warmup_masks": {"patch_size": 16}},
    )
    assert spec.pretrain.warmup_masks.patch_size == 16
