"""Robustness by factor: each shift alone (seeded, changes the images, masks follow moved pixels),
the robust metrics of a real in-process trial and of a real sweep, and the spec rules around
them."""

from __future__ import annotations

import math
import re

import pytest
import torch

from smsweep import report
from smsweep.cli import main
from smsweep.engines import tracking
from smsweep.engines.trainloop import run_in_process
from smsweep.errors import SpecError
from smsweep.method import robustness
from smsweep.method.data import IGNORE_INDEX, SyntheticSource
from smsweep.method.data.datasets import SegmentationDataset
from smsweep.method.data.transforms import eval_transform
from smsweep.spec.load import validate_spec
from smsweep.spec.names import FACTORS, ROBUST_MEAN, ROBUST_PREFIX
from tests.test_sweep import mlflow_runs, tiny_sweep, write_spec

SIZE = 32
DRAWS = set(FACTORS) - {"blur"}  # blur has nothing to draw: the same for every seed


def tiny(**sections) -> dict:
    """An in-process trial of a few seconds (no Ray)."""
    raw = {
        "seed": 2,
        "data": {"image_size": SIZE, "num_classes": 4, "num_images": 20, "val_fraction": 0.3},
        "model": {"encoder_depth": 3, "decoder_channels": [16, 8, 4]},
        "pretrain": {"partitions": 2, "steps_per_partition": 2, "batch_size": 4},
        "masking": {"strategy": "random", "patch_size": 8},
        "finetune": {"steps": 4, "batch_size": 4, "evaluations": 2},
        "robustness": {"enabled": True},
        "resources": {"train_workers": 0, "cpus_per_trial": 1, "scoring_actors": 0},
    }
    for section, values in sections.items():
        raw[section] = {**raw.get(section, {}), **values}
    return raw


def batch(count: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    source = SyntheticSource(count, SIZE, num_classes=4, seed=5)
    view = SegmentationDataset(source, range(count), eval_transform(SIZE))
    images, masks = zip(*(view[i] for i in range(count)), strict=True)
    return torch.stack(images), torch.stack(masks)


def shift(factor: str, seed: int, images, masks, severity: float = 0.5):
    generator = torch.Generator().manual_seed(seed)
    return robustness.SHIFTS[factor](images.clone(), masks.clone(), severity, generator)


def test_one_shift_per_factor_of_the_spec():
    assert tuple(robustness.SHIFTS) == FACTORS


@pytest.mark.parametrize("factor", FACTORS)
def test_a_shift_is_deterministic_from_its_seed_and_changes_the_images(factor):
    images, masks = batch()
    first_images, first_masks = shift(factor, 1, images, masks)
    again_images, again_masks = shift(factor, 1, images, masks)
    assert torch.equal(first_images, again_images) and torch.equal(first_masks, again_masks)
    other_images, _ = shift(factor, 2, images, masks)
    assert torch.equal(first_images, other_images) != (factor in DRAWS)
    assert first_images.shape == images.shape and first_images.dtype == images.dtype
    assert first_images.min() >= 0 and first_images.max() <= 1
    changed = (first_images - images).abs().mean(dim=(1, 2, 3))
    assert (changed > 0.005).all(), f"{factor} leaves an image as it was: {changed}"
    if factor != "scale":  # only scale moves pixels; the others keep every label
        assert torch.equal(first_masks, masks)


def test_stronger_severity_changes_the_images_more():
    images, masks = batch()
    for factor in FACTORS:
        mild, _ = shift(factor, 1, images, masks, severity=0.2)
        strong, _ = shift(factor, 1, images, masks, severity=0.9)
        assert (strong - images).abs().mean() > (mild - images).abs().mean(), factor


def test_scale_moves_the_mask_with_the_image():
    _, masks = batch(8)
    # An image that is its own label map: each class a flat grey level.
    images = (masks.clamp(max=4).float() / 4)[:, None].repeat(1, 3, 1, 1)
    shifted, moved = shift("scale", 3, images, masks, severity=0.6)
    assert not torch.equal(moved, masks)
    labelled = moved != IGNORE_INDEX
    agree = (shifted[:, 0] * 4).round().long()[labelled] == moved[labelled]
    assert agree.float().mean() > 0.95  # bilinear images blur class borders a little
    zoomed_out = (~labelled).flatten(1).any(dim=1)
    assert zoomed_out.any() and (~zoomed_out).any(), "both directions drawn in 8 images"
    assert shifted[:, 0][~labelled].abs().max() == 0, "padding is black and ignored"


def test_robust_metrics_of_a_perfect_model_follow_the_shifts():
    """A model that reads the label off the grey level (clean mIoU 1): noise of std 0.16 on
    levels 0.25 apart confuses it, a zoom (x2 or /2) much less; the mean is the factors' mean."""
    _, masks = batch(4)
    masks = masks.clamp(max=2)  # the rare class (a few pixels) joins class 2
    images = (masks.float() / 4)[:, None].repeat(1, 3, 1, 1)

    class Oracle(torch.nn.Module):
        def forward(self, x):
            ids = (x[:, 0] * 4).round().long().clamp(0, 3)
            return torch.nn.functional.one_hot(ids, 4).permute(0, 3, 1, 2).float()

    metrics = robustness.robust_metrics(
        Oracle(),
        lambda: [(images, masks)],
        ("a", "b", "c", "d"),
        factors=("noise", "scale", "blur"),
        severity=1.0,
        seed=0,
    )
    assert set(metrics) == {ROBUST_PREFIX + f for f in ("noise", "scale", "blur")} | {ROBUST_MEAN}
    assert metrics[ROBUST_PREFIX + "noise"] < 0.5
    # The mask moved with the pixels: only the class borders, blended by the zoom, are wrong.
    assert metrics[ROBUST_PREFIX + "scale"] > 0.7
    factors = [metrics[ROBUST_PREFIX + f] for f in ("noise", "scale", "blur")]
    assert math.isclose(metrics[ROBUST_MEAN], sum(factors) / 3)


def test_a_trial_logs_robust_metrics_after_its_last_validation(tmp_path):
    spec = validate_spec(tiny())
    reports = run_in_process(spec, tmp_path)
    first, last = [r.metrics for r in reports if r.phase == "finetune"]
    assert not any(key.startswith("robust/") for key in first), "only after fine-tuning"
    robust = {k: v for k, v in last.items() if k.startswith("robust/")}
    assert set(robust) == {ROBUST_PREFIX + f for f in FACTORS} | {ROBUST_MEAN}
    assert all(0 <= value <= 1 for value in robust.values())
    values = [robust[ROBUST_PREFIX + f] for f in FACTORS]
    assert math.isclose(robust[ROBUST_MEAN], sum(values) / len(values))
    assert last["robust_seconds"] > 0


def test_robust_search_metric_is_measured_at_every_validation(tmp_path):
    raw = tiny(
        robustness={"factors": ["occlusion", "noise"]},
        search={"metric": "robust/miou_mean", "score": "best"},
    )
    reports = run_in_process(validate_spec(raw), tmp_path)
    finetune = [r.metrics for r in reports if r.phase == "finetune"]
    assert all(ROBUST_MEAN in m and "best/robust/miou_mean" in m for m in finetune)
    assert finetune[-1]["best/robust/miou_mean"] == max(m[ROBUST_MEAN] for m in finetune)
    assert ROBUST_PREFIX + "blur" not in finetune[-1]  # only the factors asked for


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"robustness": {"enabled": False}, "search": {"metric": "robust/miou_mean"}},
            "robustness.enabled: true",
        ),
        (
            {
                "robustness": {"enabled": True, "factors": ["blur"]},
                "search": {"metric": "robust/miou/noise"},
            },
            "use one of robust/miou_mean, robust/miou/blur",
        ),
        ({"robustness": {"factors": ["fog"]}}, "robustness.factors"),
        ({"robustness": {"severity": 0}}, "robustness.severity"),
    ],
)
def test_robustness_keys_that_cannot_work_are_refused_naming_the_fix(change, expected):
    with pytest.raises(SpecError, match=expected.replace(".", r"\.")):
        validate_spec(tiny(**change))


@pytest.mark.slow
def test_a_sweep_ranks_by_robustness_and_pretrains_across_sources(tmp_path, monkeypatch, capsys):
    """One real sweep (local Ray, Tune, Optuna's grid, MLflow): search.metric robust/miou_mean
    ranks the trials, the report shows the trials x factors table, and pretrain.data (textures,
    more images than the synthetic fine-tuning set) is what the scoring actor reads."""
    monkeypatch.chdir(tmp_path)
    raw = tiny_sweep(
        num_samples=2,
        in_process=True,
        sampler="grid",
        metric="robust/miou_mean",
        space={"masking.strategy": {"choice": ["random", "selective"]}},
    )
    raw["pretrain"]["data"] = {"source": "textures", "num_images": 40, "image_size": 32}
    raw["robustness"] = {"enabled": True, "factors": ["occlusion", "colour", "scale", "texture"]}
    assert main(["run", str(write_spec(tmp_path, raw)), "--storage", "runs"]) == 0
    out = capsys.readouterr().out
    parents, children = mlflow_runs(tmp_path)
    assert len(children) == 2 and all(run.info.status == "FINISHED" for run in children)
    for run in children:
        assert run.data.params["pretrain.source"] == "cross"
        assert run.data.params["pretrain.data.source"] == "textures"
        assert 0 <= run.data.metrics[ROBUST_MEAN] <= 1
        assert ROBUST_PREFIX + "texture" in run.data.metrics
        assert ROBUST_PREFIX + "blur" not in run.data.metrics
    selective = next(r for r in children if r.data.params["masking.strategy"] == "selective")
    scored = selective.data.metrics  # partition 1 of textures: 20 images, in 2 blocks
    assert scored["scored_images"] == 20
    assert scored["scored_by_actors"] or scored["scored_blocks_in_process"] == 2
    best = max(children, key=lambda run: run.data.metrics[ROBUST_MEAN])
    assert parents[0].data.tags["smsweep.best_trial"] == best.data.tags[tracking.TRIAL_ID]
    assert parents[0].data.metrics["best_robust/miou_mean"] == best.data.metrics[ROBUST_MEAN]
    assert "robust/miou_mean" in out
    page = report.build_report(tmp_path / "runs" / "tiny").read_text()
    table = re.search(r'data-kind="robustness">(.*?)</section>', page, re.S).group(1)
    assert "<th>texture</th>" in table and "<th>blur</th>" not in table
    for run in children:
        assert run.data.tags[tracking.TRIAL_ID] in table
