"""model.precision and the trial's data loading: what auto resolves to, what bf16 autocast
changes (the forwards) and what it leaves in float32 (weights, optimizer steps, losses, loss
maps), a whole in-process trial in bf16, and DataLoader workers that change no batch. Real tiny
U-Nets on the CPU, no Ray."""

from __future__ import annotations

import math

import pytest
import torch

from smsweep.engines.trainloop import run_in_process
from smsweep.method import build
from smsweep.method.finetune import finetune_epoch
from smsweep.method.masking.scorer import _patch_losses
from smsweep.method.precision import FLOAT32, Precision, resolve_precision
from smsweep.method.pretrain import pretrain_step
from smsweep.method.scoring import score_block
from smsweep.spec.config import SweepSpec
from smsweep.spec.load import validate_spec
from smsweep.trial.context import loader_settings
from smsweep.trial.state import STATE_FILE

CPU = torch.device("cpu")
BF16 = Precision(bf16_autocast=True)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def tiny_spec(**sections) -> SweepSpec:
    raw = {
        "name": "tiny",
        "seed": 5,
        "data": {"image_size": 32, "num_classes": 3, "num_images": 24, "val_fraction": 0.25},
        "model": {"encoder": "resnet18", "encoder_depth": 3, "decoder_channels": [16, 8, 4]},
        "pretrain": {"partitions": 2, "steps_per_partition": 2, "batch_size": 4},
        "masking": {"strategy": "selective", "ratio": 0.5, "patch_size": 8, "samples": 2},
        "finetune": {"steps": 4, "evaluations": 2, "batch_size": 4},
        "resources": {"train_workers": 0, "cpus_per_trial": 1, "scoring_actors": 0},
    }
    for section, values in sections.items():
        raw[section] = {**raw.get(section, {}), **values}
    return validate_spec(raw)


def output_dtypes(model: torch.nn.Module) -> list[torch.dtype]:
    """The dtype of every output of `model` from now on (a forward hook)."""
    seen: list[torch.dtype] = []
    model.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    return seen


def test_auto_is_float32_on_the_cpu_and_bf16_autocasts_anywhere():
    assert resolve_precision("auto", CPU, channels_last=True) == Precision(False, True)
    assert resolve_precision("fp32", CPU, channels_last=False) == FLOAT32
    assert resolve_precision("bf16", CPU, channels_last=False) == BF16
    assert (
        str(resolve_precision("bf16", CPU, channels_last=True)) == "bf16 autocast + channels_last"
    )
    assert str(FLOAT32) == "float32"
    with pytest.raises(ValueError, match="choose one of: auto, fp32, bf16"):
        resolve_precision("fp16", CPU, channels_last=False)


def test_bf16_pretraining_and_fine_tuning_steps_autocast_and_update_float32_weights():
    spec = tiny_spec()
    torch.manual_seed(0)
    model = build.reconstruction_model(spec)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    dtypes = output_dtypes(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images = torch.rand(2, 3, 32, 32)
    strategy = build.warmup_strategy(spec)
    mask = strategy(images, torch.Generator().manual_seed(0))
    loss = pretrain_step(
        model,
        images,
        mask,
        fill=build.input_fill(spec),
        loss=build.pretrain_loss(spec),
        optimizer=optimizer,
        generator=torch.Generator().manual_seed(1),
        precision=BF16,
    )
    assert dtypes == [torch.bfloat16] and math.isfinite(loss)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert any(not torch.equal(before[key], value) for key, value in model.state_dict().items())

    segmenter = build.segmentation_model(spec)
    dtypes = output_dtypes(segmenter)
    weights = [p.detach().clone() for p in segmenter.parameters()]
    optimizer = torch.optim.AdamW(segmenter.parameters(), lr=1e-3)
    labels = torch.randint(0, 3, (2, 32, 32))
    loss = finetune_epoch(segmenter, [(images, labels)], optimizer, precision=BF16)
    assert dtypes == [torch.bfloat16] and math.isfinite(loss)
    assert all(p.dtype == torch.float32 for p in segmenter.parameters())
    assert any(not torch.equal(w, p) for w, p in zip(weights, segmenter.parameters(), strict=True))


def test_under_bf16_the_scorer_forwards_in_bf16_and_its_loss_maps_are_float32():
    spec = tiny_spec()
    torch.manual_seed(0)
    model = build.reconstruction_model(spec).eval()
    dtypes = output_dtypes(model)
    images = torch.rand(3, 3, 32, 32)
    strategy = build.masking_strategy(spec)
    scores = score_block(strategy, model, images, [1, 2, 3], BF16)
    assert set(dtypes) == {torch.bfloat16} and scores.dtype == torch.float32
    reference = score_block(strategy, model, images, [1, 2, 3], FLOAT32)
    assert torch.allclose(scores, reference, atol=0.05)  # bf16 forwards, float32 maps
    # The loss map of a bf16 reconstruction is computed from its float32 cast.
    with torch.no_grad(), BF16.context(CPU):
        reconstruction = model(images)
    assert reconstruction.dtype == torch.bfloat16
    losses = _patch_losses(reconstruction, images, 8, (1.0, 1.0), compiled=False)
    assert all(loss.dtype == torch.float32 for loss in losses)


def test_an_in_process_trial_in_bf16_finishes_with_finite_metrics(tmp_path):
    spec = tiny_spec(model={"precision": "bf16"})
    reports = [r.flat() for r in run_in_process(spec, tmp_path)]
    assert [r["phase"] for r in reports] == ["pretrain"] * 2 + ["finetune"] * 2
    assert {r["precision"] for r in reports} == {"bf16 autocast + channels_last"}
    assert reports[1]["scored_images"] > 0  # partition 1: masks scored in bf16
    assert all(math.isfinite(r["recon_loss"]) for r in reports[:2])
    final = reports[-1]
    assert final["done"] and math.isfinite(final["miou"]) and math.isfinite(final["finetune_loss"])


def test_loaders_pin_memory_only_for_a_cuda_device():
    resources = tiny_spec().resources
    assert loader_settings(resources, CPU) == {"num_workers": 0, "pin_memory": False}
    assert loader_settings(resources, torch.device("cuda"))["pin_memory"]
    off = tiny_spec(resources={"pin_memory": False, "data_workers": 2}).resources
    assert loader_settings(off, torch.device("cuda")) == {"num_workers": 2, "pin_memory": False}
    assert not loader_settings(resources.model_copy(update={"pin_memory": True}), CPU)["pin_memory"]


def test_two_data_workers_train_exactly_as_loading_in_process(tmp_path):
    """Augmented fine-tuning, shuffled pretraining, precise BN and validation, with their images
    loaded by 2 worker processes: the same losses, metrics and weights, bit for bit."""
    runs = {}
    for workers in (0, 2):
        spec = tiny_spec(
            masking={"strategy": "random"},
            data={"augment": True},
            resources={"data_workers": workers},
        )
        directory = tmp_path / f"workers_{workers}"
        reports = [r.flat() for r in run_in_process(spec, directory)]
        last = sorted(directory.glob("checkpoint_*"))[-1]
        weights = torch.load(last / STATE_FILE, weights_only=True)["model"]
        runs[workers] = (reports, weights)
    (serial, serial_weights), (parallel, parallel_weights) = runs[0], runs[2]
    timing = ("compute_seconds", "scoring_seconds", "scoring_ms_per_image")
    strip = [
        {k: v for k, v in r.items() if k not in timing and not k.startswith("cost/")}
        for r in (*serial, *parallel)
    ]
    assert strip[: len(serial)] == strip[len(serial) :]
    assert all(torch.equal(serial_weights[key], parallel_weights[key]) for key in serial_weights)
