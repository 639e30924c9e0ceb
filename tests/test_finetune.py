"""smsweep.method.finetune: mIoU / IoU / pixel accuracy from a confusion matrix, the confusion
matrix itself (label 255 ignored), the pretrained -> segmentation weight transfer, and the
fine-tuning epoch (the loss goes down; a non-finite loss stops it). Real tiny U-Nets on CPU, no
Ray.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from smsweep.method import build
from smsweep.method.finetune import (
    confusion_matrix,
    finetune_epoch,
    label_counts,
    recalibrate_batchnorm,
    segmentation_metrics,
    transfer_weights,
    trivial_metrics,
)
from smsweep.method.models import tiny_unet
from smsweep.spec.load import load_spec

QUICKSTART = Path(__file__).resolve().parents[1] / "sweeps" / "quickstart.yaml"


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def spec_with(*overrides: str):
    return load_spec(QUICKSTART, ["search.space={}", "data.image_size=32", *overrides])


class FixedLogits(nn.Module):
    """A 'model' whose argmax is `predictions` (B, H, W) whatever the input."""

    def __init__(self, predictions: torch.Tensor, num_classes: int) -> None:
        super().__init__()
        self.logits = F.one_hot(predictions, num_classes).permute(0, 3, 1, 2).float()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits[: images.shape[0]]


def test_metrics_from_a_hand_made_confusion_matrix():
    confusion = torch.tensor(  # rows = label, columns = prediction; "rare" never occurs
        [[5, 1, 0, 0], [2, 3, 0, 0], [0, 1, 4, 0], [0, 0, 0, 0]]
    )
    metrics = segmentation_metrics(confusion, ["bg", "a", "b", "rare"])
    # union = row + column - diagonal: bg 6+7-5=8, a 5+5-3=7, b 5+4-4=5
    assert metrics["iou/bg"] == pytest.approx(5 / 8)
    assert metrics["iou/a"] == pytest.approx(3 / 7)
    assert metrics["iou/b"] == pytest.approx(4 / 5)
    assert math.isnan(metrics["iou/rare"])
    assert metrics["miou"] == pytest.approx((5 / 8 + 3 / 7 + 4 / 5) / 3)
    assert metrics["pixel_accuracy"] == pytest.approx(12 / 16)
    assert set(metrics) == {"miou", "pixel_accuracy", "iou/bg", "iou/a", "iou/b", "iou/rare"}


def test_a_class_only_predicted_counts_with_iou_zero():
    confusion = torch.tensor([[3, 1], [0, 0]])  # class 1 is predicted once, never labelled
    metrics = segmentation_metrics(confusion, ["bg", "fg"])
    assert metrics["iou/fg"] == 0.0 and metrics["iou/bg"] == pytest.approx(3 / 4)
    assert metrics["miou"] == pytest.approx(3 / 8)
    assert metrics["pixel_accuracy"] == pytest.approx(3 / 4)


def test_empty_confusion_gives_nan_metrics():
    metrics = segmentation_metrics(torch.zeros(2, 2, dtype=torch.int64), ["bg", "fg"])
    assert all(math.isnan(value) for value in metrics.values())


def test_confusion_matrix_ignores_255_and_sums_batches():
    predictions = torch.tensor([[[0, 1, 2], [2, 2, 0]]])  # (1, 2, 3)
    labels = torch.tensor([[[0, 1, 255], [2, 0, 255]]])
    model = FixedLogits(predictions, 3).train()
    batch = (torch.zeros(1, 3, 2, 3), labels)
    confusion = confusion_matrix(model, [batch, batch], num_classes=3)
    expected = torch.tensor([[1, 0, 1], [0, 1, 0], [0, 0, 1]]) * 2
    assert confusion.dtype == torch.int64 and torch.equal(confusion, expected)
    assert model.training  # mode restored


def test_transfer_copies_encoder_and_decoder_and_reports_head_and_token():
    spec = spec_with("masking.fill=token")
    torch.manual_seed(0)
    pretrained = build.reconstruction_model(spec).state_dict()
    target = build.segmentation_model(spec)
    head_before = {k: v.clone() for k, v in target.state_dict().items() if "head" in k}
    transfer = transfer_weights(pretrained, target)
    state = target.state_dict()
    body = [k for k in state if not k.startswith("segmentation_head.")]
    assert transfer.loaded == len(body) > 0
    for key in body:
        assert torch.equal(state[key], pretrained[f"unet.{key}"]), key
    assert (
        set(transfer.replaced)
        == set(head_before)
        == {
            "segmentation_head.0.weight",
            "segmentation_head.0.bias",
        }
    )
    assert state["segmentation_head.0.weight"].shape[0] == spec.data.num_classes
    for key, value in head_before.items():
        assert torch.equal(state[key], value)  # the head keeps its own initialisation
    assert transfer.skipped == ("token",)
    assert "not transferred: token" in transfer.summary()


def test_transfer_refuses_another_decoder():
    pretrained = build.reconstruction_model(spec_with()).state_dict()  # decoder [32, 16, 8]
    other = build.segmentation_model(spec_with("model.decoder_channels=[32, 16, 16]"))
    named = r"shape mismatch \['decoder\.blocks\.2\..*decoder_channels"
    with pytest.raises(ValueError, match=named):
        transfer_weights(pretrained, other)


def test_transfer_refuses_missing_stages():
    pretrained = build.reconstruction_model(spec_with()).state_dict()  # depth 3
    deeper = build.segmentation_model(
        spec_with("model.encoder_depth=4", "model.decoder_channels=[32, 16, 8, 8]")
    )
    with pytest.raises(ValueError, match=r"missing \['encoder\.layer3\."):
        transfer_weights(pretrained, deeper)


def tiny_batch(labels_value: int | None = None):
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 32, 32, generator=generator)
    labels = (images[:, 0] > 0.5).long() + (images[:, 1] > 0.5).long()  # 3 classes from pixels
    if labels_value is not None:
        labels = torch.full_like(labels, labels_value)
    return images, labels


def test_finetune_epochs_lower_the_loss():
    torch.manual_seed(0)
    model = tiny_unet(classes=3, activation=None)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    batch = tiny_batch()
    losses = [finetune_epoch(model, [batch], optimizer) for _ in range(6)]
    assert all(math.isfinite(loss) for loss in losses)
    assert losses[-1] < 0.8 * losses[0], losses


def test_nan_loss_raises_before_stepping():
    torch.manual_seed(0)
    model = tiny_unet(classes=3, activation=None)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = {k: v.clone() for k, v in model.state_dict().items() if v.is_floating_point()}
    images, labels = tiny_batch()
    images[0, :, 0, 0] = math.nan
    with pytest.raises(FloatingPointError, match=r"lower finetune\.lr"):
        finetune_epoch(model, [(images, labels)], optimizer)
    for key, value in before.items():
        if "running" not in key:  # BatchNorm statistics see the NaN in the forward
            assert torch.equal(model.state_dict()[key], value), key


def test_all_ignored_labels_raise_a_clear_error():
    model = tiny_unet(classes=3, activation=None)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(FloatingPointError, match="no labelled pixel"):
        finetune_epoch(model, [tiny_batch(labels_value=255)], optimizer)


def test_the_trivial_predictor_scores_the_majority_class_everywhere():
    train = [torch.tensor([[[0, 0, 1], [0, 2, 255]]])]  # class 0 is the majority
    counts = label_counts(train, 3)
    assert counts.tolist() == [3, 1, 1]  # 255 ignored
    val_counts = torch.tensor([60, 30, 10])
    floor = trivial_metrics(val_counts, counts, ("background", "a", "b"))
    # IoU: background 60/100, a 0, b 0 -> mIoU 0.2; pixel accuracy 0.6
    assert floor == {"floor/miou": pytest.approx(0.2), "floor/pixel_accuracy": pytest.approx(0.6)}
    # the same as scoring a model that predicts class 0 everywhere
    labels = (
        torch.cat([torch.zeros(60), torch.ones(30), torch.full((10,), 2)]).long().view(1, 10, 10)
    )
    model = FixedLogits(torch.zeros(1, 10, 10, dtype=torch.long), 3)
    measured = segmentation_metrics(confusion_matrix(model, [(labels.float(), labels)], 3), "xyz")
    assert measured["miou"] == pytest.approx(floor["floor/miou"])


def test_precise_batchnorm_statistics_are_the_plain_average_over_the_batches():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.ReLU())
    generator = torch.Generator().manual_seed(0)
    batches = [(torch.rand(2, 3, 5, 5, generator=generator) * k, None) for k in (1, 2, 3)]
    model.train()
    for images, _ in batches * 4:  # the usual exponential average, 12 updates
        model(images)
    model.eval()
    norm = model[1]
    drifted = norm.running_mean.clone()
    assert recalibrate_batchnorm(model, batches) == 1
    assert not model.training and norm.momentum == 0.1  # mode and momentum restored
    with torch.no_grad():
        features = torch.cat([model[0](images) for images, _ in batches])  # (6, 4, 5, 5)
    expected_mean = features.mean(dim=(0, 2, 3))
    # each batch's mean, averaged (batches of equal size: the overall mean)
    assert torch.allclose(norm.running_mean, expected_mean, atol=1e-6)
    assert not torch.allclose(norm.running_mean, drifted, atol=1e-4)
    again = norm.running_var.clone()
    recalibrate_batchnorm(model, batches)
    assert torch.equal(norm.running_var, again)  # a function of the weights and images only
