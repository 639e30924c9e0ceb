"""Fine-tune repeats (`finetune.repeats`) and the frozen-encoder probe (`finetune.freeze_encoder`):
tiny trials in this process (no Ray), real U-Nets on the CPU."""

from __future__ import annotations

import itertools
import math
import shutil
import statistics

import pytest
import torch
from torch import nn

from smsweep.checks import check_metric
from smsweep.engines.trainloop import run_in_process
from smsweep.errors import SpecError
from smsweep.method import build
from smsweep.method.finetune import recalibrate_batchnorm
from smsweep.method.pretrain import derived_seed
from smsweep.trial.context import HEAD, repeat_seed
from smsweep.trial.state import STATE_FILE
from tests.test_trial import tiny_spec

IN_PROCESS = {"scoring_actors": 0, "train_workers": 0}
RANDOM = {"strategy": "random", "samples": 1}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One torch thread, before the module's trials run: the same sums in every test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def flat_reports(spec, directory) -> list[dict]:
    return [report.flat() for report in run_in_process(spec, directory)]


@pytest.fixture(scope="module")
def one_and_three(tmp_path_factory) -> tuple[list[dict], list[dict]]:
    """The same trial fine-tuned once and three times."""
    runs = []
    for repeats in (1, 3):
        spec = tiny_spec(resources=IN_PROCESS, masking=RANDOM, finetune={"repeats": repeats})
        runs.append(flat_reports(spec, tmp_path_factory.mktemp(f"repeats{repeats}")))
    return runs[0], runs[1]


def test_three_fine_tunes_of_one_pretraining_report_their_mean_and_spread(one_and_three):
    single, triple = one_and_three
    pretraining = [r["partition"] for r in triple if r["phase"] == "pretrain"]
    assert pretraining == [0, 1, 2]  # pretraining is paid once
    finetune = [r for r in triple if r["phase"] == "finetune"]
    assert [r["epoch"] for r in finetune] == [0, 1] and finetune[-1]["done"]
    for report in finetune:
        scores = [report[f"finetune/{f}/miou"] for f in range(3)]
        assert report["miou"] == pytest.approx(statistics.mean(scores))
        assert report["finetune/miou_sd"] == pytest.approx(statistics.stdev(scores))
        assert report["plan/finetune_repeats"] == 3
        assert "finetune/3/miou" not in report
        assert 0.0 <= report["pixel_accuracy"] <= 1.0
    final = finetune[-1]
    assert len({final[f"finetune/{f}/miou"] for f in range(3)}) > 1, "no fine-tune luck?"
    assert final["finetune/miou_sd"] > 0
    # per-class IoU is averaged too; the steps are each fine-tune's
    assert final["finetune_steps"] == final["plan/finetune_steps"]
    ious = [key for key in final if key.startswith("iou/")]
    assert ious and all(0.0 <= final[key] <= 1.0 for key in ious if not math.isnan(final[key]))
    # Fine-tune 0 of the three is the trial fine-tuned once, bit for bit.
    alone = [r for r in single if r["phase"] == "finetune"]
    assert [r["finetune/0/miou"] for r in finetune] == [r["miou"] for r in alone]


def test_one_fine_tune_reports_as_before(one_and_three):
    single, triple = one_and_three
    assert not any(key.startswith("finetune/") for r in single for key in r)
    assert "plan/finetune_repeats" not in single[-1]
    for alone, shared in zip(single, triple, strict=False):  # pretraining: the same
        if alone["phase"] == "pretrain":
            untimed = {k: v for k, v in alone.items() if "seconds" not in k}
            assert untimed == {k: v for k, v in shared.items() if "seconds" not in k}


def test_a_trial_killed_between_repeated_validations_resumes_to_the_same_report(
    one_and_three, tmp_path
):
    _, triple = one_and_three
    spec = tiny_spec(resources=IN_PROCESS, masking=RANDOM, finetune={"repeats": 3})
    flat_reports(spec, tmp_path)
    # A kill after validation 0's checkpoint leaves the checkpoints up to it (the newest two).
    newest = sorted(tmp_path.glob("checkpoint_*"))[-1]
    shutil.rmtree(newest)
    saved = torch.load(sorted(tmp_path.glob("checkpoint_*"))[-1] / STATE_FILE, weights_only=True)
    assert saved["epoch"] == 0 and len(saved["finetunes"]) == 2  # fine-tunes 1 and 2, parked
    resumed = flat_reports(spec, tmp_path)
    assert [(r["phase"], r["epoch"]) for r in resumed] == [("finetune", 1)]
    numbers = [k for k, v in triple[-1].items() if isinstance(v, float) and "seconds" not in k]
    differ = [k for k in numbers if not _same(resumed[-1][k], triple[-1][k])]
    assert not differ, f"the resumed trial reports other numbers: {differ}"


def _same(one: float, other: float) -> bool:
    """Equal bit for bit, NaN included."""
    return one == other or (math.isnan(one) and math.isnan(other))


def test_a_frozen_encoder_keeps_its_weights_and_statistics(tmp_path):
    """The probe: the encoder (a local file) comes out as it went in, BatchNorm buffers
    included (precise_bn on), while the decoder and the head train."""
    none = {"strategy": "none"}
    spec = tiny_spec(resources=IN_PROCESS, masking=none, finetune={"epochs": 1})
    torch.manual_seed(7)
    encoder = build.segmentation_model(spec).encoder.state_dict()
    weights = tmp_path / "encoder.pth"
    torch.save(encoder, weights)
    spec = tiny_spec(
        resources=IN_PROCESS,
        masking=none,
        model={"encoder_weights": str(weights)},
        finetune={"epochs": 1, "freeze_encoder": True, "precise_bn": True},
    )
    reports = flat_reports(spec, tmp_path / "run")
    assert reports[-1]["done"] and 0.0 <= reports[-1]["miou"] <= 1.0
    checkpoint = sorted((tmp_path / "run").glob("checkpoint_*"))[-1]
    tuned = torch.load(checkpoint / STATE_FILE, weights_only=True)["model"]
    for key, value in encoder.items():  # weights, running statistics, batch counts
        assert torch.equal(tuned[f"encoder.{key}"], value), key
    torch.manual_seed(derived_seed(repeat_seed(spec), HEAD))
    initial = build.segmentation_model(spec).state_dict()
    trained = [k for k in initial if k.startswith(("decoder.", "segmentation_head."))]
    changed = [k for k in trained if not torch.equal(initial[k], tuned[k])]
    assert any(k.endswith("weight") and k.startswith("decoder.") for k in changed)
    assert any(k.startswith("segmentation_head.") for k in changed)


def test_precise_batchnorm_leaves_a_frozen_part_alone():
    frozen = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))  # an encoder, say
    model = nn.Sequential(frozen, nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batches = [(torch.rand(2, 3, 5, 5, generator=torch.Generator().manual_seed(0)) * 3, None)]
    assert recalibrate_batchnorm(model, batches, frozen=frozen) == 1
    after = model.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before if k.startswith("0."))
    assert not torch.equal(after["2.running_mean"], before["2.running_mean"])
    assert model.training and frozen.training  # the modes as they were


def test_a_probe_cannot_train_the_encoder_with_mrm():
    with pytest.raises(SpecError, match=r"finetune\.freeze_encoder"):
        tiny_spec(finetune={"freeze_encoder": True}, mrm={"enabled": True})


def test_repeats_are_bounded():
    with pytest.raises(SpecError, match="repeats"):
        tiny_spec(finetune={"repeats": 0})


def test_a_tail_score_averages_the_last_validations_and_survives_a_resume(tmp_path):
    """search.score: tail with tail 2: each validation's `tail/miou` is the mean of its miou and
    the one before; resumed after a kill, the last report's tail is the same."""
    spec = tiny_spec(
        resources=IN_PROCESS,
        masking={"strategy": "none"},
        finetune={"epochs": 3, "evaluations": 3},
        search={"score": "tail", "tail": 2},
    )
    assert spec.search.score_metric == "tail/miou"
    reports = [r for r in flat_reports(spec, tmp_path) if r["phase"] == "finetune"]
    scores = [r["miou"] for r in reports]
    tails = [r["tail/miou"] for r in reports]
    assert tails[0] == pytest.approx(scores[0])
    assert tails[1:] == pytest.approx([(a + b) / 2 for a, b in itertools.pairwise(scores)])
    shutil.rmtree(sorted(tmp_path.glob("checkpoint_*"))[-1])  # killed before the last report
    resumed = flat_reports(spec, tmp_path)
    assert [r["epoch"] for r in resumed] == [2]
    assert resumed[-1]["tail/miou"] == tails[-1]


@pytest.fixture(scope="module")
def probed(tmp_path_factory) -> tuple[list[dict], object]:
    """The single fine-tune of `one_and_three`, with a probe beside it (and its directory)."""
    directory = tmp_path_factory.mktemp("probe")
    spec = tiny_spec(resources=IN_PROCESS, masking=RANDOM, finetune={"probe": True})
    return flat_reports(spec, directory), directory


def test_a_probe_reports_beside_the_fine_tune_and_changes_none_of_its_numbers(
    one_and_three, probed
):
    single, _ = one_and_three
    reports, _ = probed
    finetune = [r for r in reports if r["phase"] == "finetune"]
    assert [r["epoch"] for r in finetune] == [0, 1]
    alone_finetune = [r for r in single if r["phase"] == "finetune"]
    for with_probe, alone in zip(finetune, alone_finetune, strict=True):
        assert 0.0 <= with_probe["probe/miou"] <= 1.0
        assert with_probe["probe/finetune_loss"] > 0
        assert {k for k in with_probe if k.startswith("probe/iou/")} == {
            f"probe/{k}" for k in alone if k.startswith("iou/")
        }
        for key, value in alone.items():
            if isinstance(value, float) and "seconds" not in key:
                assert _same(with_probe[key], value), key
    # a probe is not the fine-tune: its own seeds and a frozen encoder give other numbers
    assert finetune[-1]["probe/miou"] != finetune[-1]["miou"]


def test_a_probe_keeps_the_pretrained_encoder_and_resumes_where_it_was(probed, tmp_path):
    reports, directory = probed
    checkpoints = sorted(directory.glob("checkpoint_*"))  # after validations 0 and 1
    after_first = torch.load(checkpoints[-2] / STATE_FILE, weights_only=True)
    assert after_first["epoch"] == 0
    probe, tuned = after_first["probe"]["model"], after_first["model"]
    decoder = [key for key in probe if key.startswith("decoder.")]
    assert any(not torch.equal(probe[k], tuned[k]) for k in decoder)  # a model of its own
    assert "probe" not in torch.load(checkpoints[-1] / STATE_FILE, weights_only=True)
    # killed before the last report: the resumed probe ends where the uninterrupted one did
    copy = tmp_path / "copy"
    shutil.copytree(directory, copy)
    shutil.rmtree(sorted(copy.glob("checkpoint_*"))[-1])
    spec = tiny_spec(resources=IN_PROCESS, masking=RANDOM, finetune={"probe": True})
    resumed = flat_reports(spec, copy)
    assert [r["epoch"] for r in resumed] == [1]
    probe_numbers = [k for k in reports[-1] if k.startswith("probe/")]
    assert [resumed[-1][k] for k in probe_numbers] == [reports[-1][k] for k in probe_numbers]


def test_a_probe_trains_on_the_encoder_it_was_given(tmp_path):
    """An encoder from a local file: after a validation the probe's encoder is that file's,
    BatchNorm buffers included, while the fine-tune's has trained."""
    none = {"strategy": "none"}
    torch.manual_seed(11)
    encoder = build.segmentation_model(tiny_spec(masking=none)).encoder.state_dict()
    torch.save(encoder, tmp_path / "encoder.pth")
    spec = tiny_spec(
        resources=IN_PROCESS,
        masking=none,
        model={"encoder_weights": str(tmp_path / "encoder.pth")},
        finetune={"probe": True},
    )
    flat_reports(spec, tmp_path / "run")
    saved = torch.load(
        sorted((tmp_path / "run").glob("checkpoint_*"))[-2] / STATE_FILE, weights_only=True
    )
    probe, tuned = saved["probe"]["model"], saved["model"]
    for key, value in encoder.items():
        assert torch.equal(probe[f"encoder.{key}"], value), key
    assert any(not torch.equal(tuned[f"encoder.{key}"], value) for key, value in encoder.items())


def test_a_probe_metric_needs_the_probe_and_a_probe_needs_a_trained_encoder():
    with pytest.raises(SpecError, match=r"probe/miou is measured only with finetune\.probe"):
        tiny_spec(search={"metric": "probe/miou"})
    probed = tiny_spec(search={"metric": "probe/iou/disk"}, finetune={"probe": True})
    check_metric(probed, ("background", "disk"))  # a metric the trials report: no error
    with pytest.raises(SpecError, match="is not reported by a trial"):
        check_metric(tiny_spec(search={"metric": "probe/iou/star"}, finetune={"probe": True}), ())
    with pytest.raises(SpecError, match=r"finetune\.probe .* finetune\.freeze_encoder"):
        tiny_spec(finetune={"probe": True, "freeze_encoder": True})
