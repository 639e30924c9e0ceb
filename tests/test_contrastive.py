"""The contrastive pretraining objective: masks on the query branch only, hard negatives in the
loss, the high-pass fill, a trial whose encoder fine-tuning receives, and a real sweep that runs
it (and MRM) as controls."""

from __future__ import annotations

import pytest
import torch

from smsweep.cli import main
from smsweep.engines.trainloop import run_in_process
from smsweep.errors import SpecError
from smsweep.method import build
from smsweep.method.contrastive import Contrastive, contrastive_step, info_nce
from smsweep.method.masking import RandomMasking
from smsweep.method.masking.fills import HighPassFill
from smsweep.spec.load import validate_spec
from tests.test_arms import _arm_sweep
from tests.test_sweep import mlflow_runs, write_spec
from tests.test_trial import tiny_spec

IN_PROCESS = {"scoring_actors": 0, "train_workers": 0, "cpus_per_trial": 1}
MARK = 7.0  # what the recording fill writes into masked pixels: no image pixel has it


class MarkingFill:
    """Masked pixels become MARK, so a test can see which inputs were masked."""

    draws = False

    def __call__(self, images, pixel_mask, generator=None):
        return torch.where(pixel_mask, torch.full_like(images, MARK), images)


def _learner(**contrastive):
    spec = tiny_spec(
        pretrain={"objective": "contrastive", "contrastive": contrastive},
        masking={"strategy": "saliency"},
    )
    torch.manual_seed(0)
    model = Contrastive(build.reconstruction_model(spec), spec.pretrain.contrastive)
    return spec, model


def _recorded(model: Contrastive) -> dict[str, list[torch.Tensor]]:
    """The inputs of the query and key encoders, step by step."""
    seen: dict[str, list[torch.Tensor]] = {"query": [], "key": []}
    query, key = model.query, model.key
    model.query = lambda images: seen["query"].append(images) or query(images)
    model.key = lambda images: seen["key"].append(images) or key(images)
    return seen


@pytest.mark.parametrize("hard", [False, True])
def test_masks_touch_the_query_branch_only_and_hard_negatives_the_key_encoder(hard):
    spec, model = _learner(hard_negatives=hard, queue=16, dim=16)
    seen = _recorded(model)
    optimizer = torch.optim.AdamW(p for p in model.parameters() if p.requires_grad)
    saliency = model  # any module with .encoder: the saliency strategies read its features
    contrastive_step(
        model,
        torch.rand(4, 3, 32, 32),
        RandomMasking(8, 0.5),
        fill=MarkingFill(),
        optimizer=optimizer,
        generator=torch.Generator().manual_seed(1),
        saliency=saliency,
        hard=build.hard_negative_masking(spec),
    )
    [query] = seen["query"]
    marked = (query == MARK).float().mean().item()
    assert marked == pytest.approx(0.5)  # half of the query view is masked
    key_view = seen["key"][0]
    assert not (key_view == MARK).any(), "the key branch must see an unmasked view"
    assert len(seen["key"]) == (2 if hard else 1)
    if hard:  # the hard negative: the key view with 80 % of its patches masked
        assert (seen["key"][1] == MARK).float().mean().item() == pytest.approx(0.8, abs=0.07)
    assert int(model.queue_at) == 4  # the keys were queued


def test_a_hard_negative_is_a_column_of_the_loss():
    torch.manual_seed(0)
    query = torch.nn.functional.normalize(torch.randn(3, 8), dim=1)
    key = torch.nn.functional.normalize(torch.randn(3, 8), dim=1)
    queue = torch.nn.functional.normalize(torch.randn(5, 8), dim=1)
    plain, logits = info_nce(query, key, queue, None, 0.2)
    assert logits.shape == (3, 6)
    with_hard, logits = info_nce(query, key, queue, query.clone(), 0.2)  # as close as can be
    assert logits.shape == (3, 7) and logits[:, -1] == pytest.approx(torch.full((3,), 5.0))
    assert with_hard > plain


def test_the_high_pass_fill_keeps_detail_not_shading():
    flat = torch.full((1, 3, 16, 16), 0.3)
    everywhere = torch.ones(1, 1, 16, 16, dtype=torch.bool)
    assert torch.allclose(HighPassFill()(flat, everywhere), flat)  # nothing but the mean
    images = torch.rand(2, 3, 16, 16)
    half = torch.zeros(2, 1, 16, 16, dtype=torch.bool)
    half[..., :8] = True
    filled = HighPassFill()(images, half)
    assert torch.equal(filled[..., 8:], images[..., 8:]) and not torch.equal(filled, images)


def test_a_contrastive_trial_hands_its_encoder_to_fine_tuning(tmp_path):
    spec = tiny_spec(
        pretrain={"objective": "contrastive", "contrastive": {"queue": 32, "dim": 16}},
        masking={"strategy": "saliency", "fill": "highpass"},
        resources=IN_PROCESS,
    )
    reports = [r.flat() for r in run_in_process(spec, tmp_path)]
    pretrain = [r for r in reports if r["phase"] == "pretrain"]
    assert all("recon_loss" not in r and r["contrastive_loss"] > 0 for r in pretrain)
    finetune = [r for r in reports if r["phase"] == "finetune"]
    assert finetune[-1]["done"] and "new head: segmentation_head" in finetune[-1]["transfer"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"masking": {"strategy": "selective"}},
            "selective cannot mask for pretrain.objective",
        ),
        ({"masking": {"fill": "token"}}, "without the reconstruction model's mask token"),
        ({"masking": {"refresh": "partition"}}, "use masking.refresh: auto"),
    ],
)
def test_what_the_contrastive_objective_cannot_do_is_refused(changes, message):
    with pytest.raises(SpecError, match=message):
        validate_spec({"pretrain": {"objective": "contrastive"}, **changes})


@pytest.mark.slow
def test_a_sweep_with_contrastive_and_mrm_controls(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw = _arm_sweep()
    raw["search"] |= {"num_samples": 1, "repeats": 1, "sampler": "tpe"}
    raw["search"]["space"] = {"masking.ratio": {"choice": [0.5]}}
    raw["search"]["controls"] = [
        {"name": "mrm", "set": {"mrm.enabled": True, "mrm.dim": 16}},
        {
            "name": "contrastive",
            "set": {
                "pretrain.objective": "contrastive",
                "pretrain.contrastive.queue": 32,
                "masking.fill": "highpass",
            },
        },
    ]
    assert main(["run", str(write_spec(tmp_path, raw)), "--storage", "runs"]) == 0
    _, children = mlflow_runs(tmp_path)
    by_arm = {run.data.tags["smsweep.configuration"]: run.data for run in children}
    assert by_arm["control:mrm"].params["mrm.enabled"] == "True"
    assert "mrm_loss" in by_arm["control:mrm"].metrics
    assert "mrm_loss" not in by_arm["config-1"].metrics
    contrastive = by_arm["control:contrastive"]
    assert contrastive.params["pretrain.objective"] == "contrastive"
    assert "contrastive_loss" in contrastive.metrics and "recon_loss" not in contrastive.metrics
    assert all("miou" in data.metrics for data in by_arm.values())
