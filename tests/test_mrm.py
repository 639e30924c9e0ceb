"""MRM (masked representation modeling) during fine-tuning: the Rebuilder trains with the U-Net,
masks the share of latent positions asked, and is gone from what a trial validates and exports."""

from __future__ import annotations

import shutil

import pytest
import torch

from smsweep.engines.session import LocalSession
from smsweep.engines.trainloop import run_in_process
from smsweep.errors import SpecError
from smsweep.method import build, mrm
from smsweep.spec.load import validate_spec
from smsweep.trial.state import STATE_FILE
from tests.test_trial import tiny_spec

IN_PROCESS = {"scoring_actors": 0, "train_workers": 0, "cpus_per_trial": 1}


def test_the_rebuilder_masks_the_ratio_and_learns_with_the_unet():
    spec = tiny_spec(mrm={"enabled": True, "ratio": 0.4, "dim": 16})
    torch.manual_seed(0)
    model = mrm.with_rebuilder(build.segmentation_model(spec), spec.mrm)
    images = torch.rand(2, 3, 32, 32)
    latent = model.unet.encoder(images)[model.stage]  # the deepest stage: 4 x 4 positions
    masked = model.rebuilder.mask(latent)
    assert masked.shape == (2, 1, 4, 4)
    assert masked.sum(dim=(1, 2, 3)).tolist() == [round(0.4 * 16)] * 2
    logits, loss = model.train()(images)
    assert logits.shape == (2, 4, 32, 32) and loss.ndim == 0 and loss > 0
    loss.backward()
    assert model.rebuilder.token.grad is not None and model.rebuilder.token.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(images), model.unet(images))  # inference: the U-Net alone


def test_a_trial_with_mrm_exports_a_plain_unet_and_resumes_to_the_same_numbers(tmp_path):
    spec = tiny_spec(mrm={"enabled": True, "dim": 16}, resources=IN_PROCESS)
    reports = [r.flat() for r in run_in_process(spec, tmp_path)]
    finetune = [r for r in reports if r["phase"] == "finetune"]
    assert all(r["mrm_loss"] > 0 for r in finetune) and finetune[-1]["done"]
    final = LocalSession(tmp_path).checkpoints()[-1]
    weights = torch.load(final.path / STATE_FILE, weights_only=True)["model"]
    assert not any("rebuilder" in key for key in weights)
    plain = build.segmentation_model(spec)
    plain.load_state_dict(weights, strict=True)  # a plain smp U-Net, no extra parameter
    # Killed after the first validation's checkpoint: the resumed trial draws the same MRM masks
    # (the global generator is the checkpoint's, not the one building the model leaves behind).
    shutil.rmtree(final.path)
    resumed = [r.flat() for r in run_in_process(spec, tmp_path)]
    assert [r["epoch"] for r in resumed] == [finetune[-1]["epoch"]]
    numbers = [k for k, v in finetune[-1].items() if isinstance(v, float) and "seconds" not in k]
    measured = [k for k in numbers if not k.startswith("cost/")]  # cost: timing shares
    assert [resumed[-1][k] for k in measured] == [finetune[-1][k] for k in measured]


def test_mrm_keys_are_checked():
    with pytest.raises(SpecError, match=r"mrm\.stage 4 is deeper than model\.encoder_depth 3"):
        validate_spec({**tiny_spec().model_dump(), "mrm": {"stage": 4}})
    with pytest.raises(SpecError, match=r"mrm\.ratio"):
        validate_spec({"mrm": {"ratio": 1.0}})
    searched = validate_spec({"search": {"space": {"mrm.enabled": {"choice": [True, False]}}}})
    assert "mrm.enabled" in searched.search.space
