"""One trial on a real local Ray: Train worker, scoring actors, checkpoints, resume, fine-tune."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import pytest
import ray
import ray._private.state
import torch

from smsweep import faults
from smsweep.engines.scoring_actors import ActorScorer
from smsweep.engines.train import TrialFailed, run_trial
from smsweep.errors import SpecError
from smsweep.method import build
from smsweep.method.data import make_splits, open_source
from smsweep.method.pretrain import MaskTable, derived_seed
from smsweep.method.scoring import score_in_process
from smsweep.spec.config import SweepSpec
from smsweep.spec.load import validate_spec
from smsweep.trial.context import SCORING
from smsweep.trial.reports import RESULT_FILE
from smsweep.trial.state import META_FILE, STATE_FILE

PARTITIONS = 3


def tiny_spec(**sections) -> SweepSpec:
    raw = {
        "name": "tiny",
        "seed": 3,
        "data": {"image_size": 32, "num_classes": 4, "num_images": 24, "val_fraction": 0.25},
        "model": {"encoder": "resnet18", "encoder_depth": 3, "decoder_channels": [16, 8, 4]},
        "pretrain": {"partitions": PARTITIONS, "epochs_per_partition": 1, "batch_size": 8},
        "masking": {"strategy": "selective", "ratio": 0.5, "patch_size": 8, "samples": 2},
        "finetune": {"epochs": 2, "batch_size": 8},
        "resources": {
            "cpus_per_trial": 0.5,
            "train_workers": 1,
            "cpus_per_worker": 1,
            "scoring_actors": 2,
            "cpus_per_actor": 0.25,
        },
    }
    for section, values in sections.items():
        raw[section] = {**raw.get(section, {}), **values}
    return validate_spec(raw)


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """Ray, this process and every Ray process read their test-only faults from one file (empty
    unless a test is `injecting`)."""
    plan = tmp_path_factory.mktemp("faults") / "faults.json"
    os.environ[faults.ENV] = f"@{plan}"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield plan
    ray.shutdown()
    del os.environ[faults.ENV]


@contextlib.contextmanager
def injecting(plan: Path, **chosen):
    """The test-only faults `chosen` for every process, for the duration of the block."""
    plan.write_text(json.dumps(chosen))
    try:
        yield
    finally:
        plan.unlink()


def train_controllers() -> int:
    """Ray Train V2 starts one TrainController actor per fit: counting them counts fits."""
    actors = ray._private.state.actors().values()
    return sum(actor["ActorClassName"] == "TrainController" for actor in actors)


def final_weights(checkpoint: str) -> dict[str, torch.Tensor]:
    return torch.load(Path(checkpoint) / STATE_FILE, weights_only=True)["model"]


@pytest.fixture(scope="module")
def uninterrupted(local_ray, tmp_path_factory):
    storage = tmp_path_factory.mktemp("storage")
    fits_before = train_controllers()
    outcome = run_trial(tiny_spec(), storage_path=storage, run_name="whole")
    return outcome, train_controllers() - fits_before


@pytest.mark.slow
def test_one_trial_end_to_end(uninterrupted):
    outcome, fits = uninterrupted
    assert fits == 1 and outcome.trainer_fits == 1
    pretrain = [r.flat() for r in outcome.reports if r.phase == "pretrain"]
    assert [r["partition"] for r in pretrain] == list(range(PARTITIONS))
    assert "scored_by_actors" not in pretrain[0]  # partition 0: random masks, nothing to score
    # Partition 0 trains 1 step here: this process scores until an actor has started.
    assert all(r["scoring_actors"] == 2 and r["scoring_seconds"] > 0 for r in pretrain[1:])
    assert all(r["scored_by_actors"] or r["scored_blocks_in_process"] for r in pretrain[1:])
    assert all(r["recon_loss"] > 0 and "diag/boundary_fraction" in r for r in pretrain)
    finetune = [r.flat() for r in outcome.reports if r.phase == "finetune"]
    assert [r["epoch"] for r in finetune] == [0, 1]
    final = outcome.metrics
    assert final["done"] and 0.0 <= final["miou"] <= 1.0
    assert 0.0 <= final["pixel_accuracy"] <= 1.0
    class_names = open_source(tiny_spec().data, seed=3).class_names
    assert {f"iou/{name}" for name in class_names} <= set(final)
    assert "new head: segmentation_head" in final["transfer"]
    assert [p.name for p in outcome.galleries] == [
        f"partition_{i:03d}.png" for i in range(PARTITIONS)
    ]
    assert final["compute_seconds"] < final["cost/seconds"] < outcome.wall_seconds
    # 0.5 CPU for the trial + 1 worker x 1 + 2 selective-scoring actors x 0.25 = 2 CPUs held
    assert final["cost/device_seconds"] == pytest.approx(2.0 * final["cost/seconds"])
    assert 0 < final["cost/scoring_share"] < 1


@pytest.mark.slow
def test_a_finished_trial_is_replayed_not_run_again(uninterrupted):
    reference, _ = uninterrupted
    storage = Path(reference.checkpoint).parents[1]
    fits_before = train_controllers()
    again = run_trial(tiny_spec(), storage_path=storage, run_name="whole")
    assert train_controllers() == fits_before and again.trainer_fits == 0
    assert len(again.reports) == 1 and again.replayed and again.metrics["replayed"]
    assert again.metrics["miou"] == reference.metrics["miou"]


@pytest.mark.slow
def test_stopped_trial_resumes_to_the_same_weights(local_ray, uninterrupted, tmp_path):
    reference, _ = uninterrupted
    spec = tiny_spec(tracking={"keep_checkpoints": 2})  # both partitions' checkpoints
    with (
        pytest.raises(TrialFailed, match="raise_after_partition=1") as failed,
        injecting(local_ray, raise_after_partition=1),
    ):
        run_trial(spec, storage_path=tmp_path, run_name="stopped")
    assert not failed.value.non_finite
    # what the first attempt reported, kept with its checkpoints (Train names them by time)
    stored = sorted(c for c in (tmp_path / "stopped").glob("checkpoint_*") if c.is_dir())
    first_attempt = [json.loads((c / META_FILE).read_text())["metrics"] for c in stored]
    # Determinism: same spec and seed, same partitions, masks (diagnostics) and losses.
    same = ("recon_loss", "diag/boundary_fraction", "diag/mask_share/background")
    for again, before in zip(first_attempt, reference.reports[:2], strict=True):
        assert {k: again[k] for k in same} == {k: before.metrics[k] for k in same}
    resumed = run_trial(spec, storage_path=tmp_path, run_name="stopped")
    partitions = [r.step for r in resumed.reports if r.phase == "pretrain"]
    assert partitions == [2], "the resumed fit must start after the last checkpoint"
    expected, got = final_weights(reference.checkpoint), final_weights(resumed.checkpoint)
    assert expected.keys() == got.keys()
    different = [key for key in expected if not torch.equal(expected[key], got[key])]
    assert not different, f"resumed weights differ from the uninterrupted run: {different[:5]}"
    assert resumed.metrics["miou"] == reference.metrics["miou"]


IN_PROCESS = {"train_workers": 0, "cpus_per_trial": 1}


@pytest.mark.slow
def test_a_trial_with_no_train_workers_trains_in_its_own_process_and_resumes(local_ray, tmp_path):
    """train_workers: 0: no fit at all, the same reports, checkpoints and galleries; stopped
    after partition 1 and run again, it continues there and ends with the same weights."""
    spec = tiny_spec(resources=IN_PROCESS)
    fits_before = train_controllers()
    whole = run_trial(spec, storage_path=tmp_path, run_name="here")
    assert train_controllers() == fits_before and whole.trainer_fits == 0
    pretrain = [r.flat() for r in whole.reports if r.phase == "pretrain"]
    assert [r["partition"] for r in pretrain] == list(range(PARTITIONS))
    assert all(r["scoring_actors"] == 2 for r in pretrain[1:])  # actors still score
    assert [r.step for r in whole.reports if r.phase == "finetune"] == [0, 1]
    assert whole.metrics["done"] and len(whole.galleries) == PARTITIONS
    assert whole.metrics["finetune_steps"] == 6 and pretrain[-1]["pretrain_steps"] == 3
    scoring = sum(r["scoring_seconds"] for r in pretrain[1:])
    assert whole.metrics["cost/scoring_share"] == pytest.approx(
        scoring / whole.metrics["compute_seconds"]
    )
    # 1 CPU for the trial that trains + 2 scoring actors x 0.25
    assert whole.metrics["cost/device_seconds"] == pytest.approx(
        1.5 * whole.metrics["cost/seconds"]
    )
    with (
        pytest.raises(TrialFailed, match="raise_after_partition=1"),
        injecting(local_ray, raise_after_partition=1),
    ):
        run_trial(spec, storage_path=tmp_path, run_name="stopped")
    resumed = run_trial(spec, storage_path=tmp_path, run_name="stopped")
    partitions = [r.step for r in resumed.reports if r.phase == "pretrain"]
    assert partitions == [2]
    expected, got = final_weights(whole.checkpoint), final_weights(resumed.checkpoint)
    assert all(torch.equal(expected[key], got[key]) for key in expected)
    replayed = run_trial(spec, storage_path=tmp_path, run_name="stopped")
    assert replayed.metrics["replayed"] and replayed.metrics["miou"] == whole.metrics["miou"]
    # Killed after its last checkpoint, before its result file: the loop reports it again.
    (tmp_path / "stopped" / RESULT_FILE).unlink()
    again = run_trial(spec, storage_path=tmp_path, run_name="stopped")
    assert [r.phase for r in again.reports] == ["finetune"] and again.trainer_fits == 0
    assert again.metrics["replayed"] and again.metrics["miou"] == whole.metrics["miou"]
    assert (tmp_path / "stopped" / RESULT_FILE).is_file()


@pytest.mark.slow
def test_actor_scoring_gives_the_in_process_masks(local_ray):
    spec = tiny_spec()
    source = open_source(spec.data, seed=spec.seed)
    splits = make_splits(
        source, seed=3, partitions=PARTITIONS, val_fraction=0.25, label_fraction=1.0
    )
    indices = splits.pretrain_partitions[1] + splits.pretrain_partitions[2]  # > one block
    seeds = [derived_seed(spec.seed, SCORING, i) for i in indices]
    torch.manual_seed(0)
    model = build.reconstruction_model(spec)
    strategy = build.masking_strategy(spec)
    local = score_in_process(strategy, model, source, indices, seeds, spec.data.image_size)
    scorer = ActorScorer(spec, source)
    try:
        scorer.wait_started()
        remote = scorer.score(model, indices, seeds)
    finally:
        scorer.close()
    assert remote.by_actors and remote.blocks_in_process == 0 and not local.by_actors
    assert torch.equal(remote.scores, local.scores)  # other blocks, other processes
    as_masks = [MaskTable.from_scores(indices, s.scores, 0.5, 8) for s in (local, remote)]
    assert as_masks[0].same_as(as_masks[1])
    other = [derived_seed(spec.seed + 1, SCORING, i) for i in indices]
    reseeded = score_in_process(strategy, model, source, indices, other, spec.data.image_size)
    assert not MaskTable.from_scores(indices, reseeded.scores, 0.5, 8).same_as(as_masks[0])


@pytest.mark.slow
def test_a_scoring_actor_that_dies_is_replaced_and_the_masks_do_not_change(local_ray):
    spec = tiny_spec()
    source = open_source(spec.data, seed=spec.seed)
    indices = list(range(len(source)))  # 24 images: two blocks, one per actor
    seeds = [derived_seed(spec.seed, SCORING, i) for i in indices]
    torch.manual_seed(0)
    model = build.reconstruction_model(spec)
    local = score_in_process(
        build.masking_strategy(spec), model, source, indices, seeds, spec.data.image_size
    )
    exits = local_ray.parent / "exits"
    exits.mkdir()
    # the first two actors to score die at once; their replacements live
    with injecting(local_ray, actor_exit_after_blocks=0, actor_exits=2, exits_dir=str(exits)):
        scorer = ActorScorer(spec, source)
        try:
            scorer.wait_started()
            remote = scorer.score(model, indices, seeds)
        finally:
            scorer.close()
    assert remote.actor_restarts == 2
    torch.testing.assert_close(remote.scores, local.scores, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_until_an_actor_has_started_the_caller_scores_with_the_actors_scores(local_ray):
    """Actors that never finish starting: every block is scored in this process, with the
    scores the actors give (a partition 0 from the cache leaves them no time to start)."""
    spec = tiny_spec()
    source = open_source(spec.data, seed=spec.seed)
    indices = list(range(len(source)))  # two blocks, one per actor
    seeds = [derived_seed(spec.seed, SCORING, i) for i in indices]
    torch.manual_seed(0)
    model = build.reconstruction_model(spec)
    local = score_in_process(
        build.masking_strategy(spec), model, source, indices, seeds, spec.data.image_size
    )
    marker = local_ray.parent / "starting"
    with injecting(local_ray, pause_at="scoring:start", marker=str(marker)):
        scorer = ActorScorer(spec, source)
        try:
            here = scorer.score(model, indices, seeds)
        finally:
            scorer.close()
    assert here.blocks_in_process == 2 and not here.by_actors
    assert torch.equal(here.scores, local.scores)


def test_a_trial_that_cannot_fit_is_refused_before_launch(local_ray, tmp_path):
    spec = tiny_spec(resources={"train_workers": 3})
    with pytest.raises(SpecError, match=r"lower resources\.train_workers"):
        run_trial(spec, storage_path=tmp_path / "storage", run_name="too-big")
    assert not (tmp_path / "storage").exists()


@pytest.mark.slow
def test_two_ddp_workers_with_in_process_scoring(local_ray, tmp_path):
    """Rank 0 scores in-process and broadcasts the masks; both ranks train on equal shards."""
    spec = tiny_spec(
        resources={"train_workers": 2, "cpus_per_worker": 0.5, "scoring_actors": 0},
        finetune={"epochs": 1},
    )
    outcome = run_trial(spec, storage_path=tmp_path, run_name="ddp")
    pretrain = [r.flat() for r in outcome.reports if r.phase == "pretrain"]
    assert [r["partition"] for r in pretrain] == list(range(PARTITIONS))
    assert all(r["scored_by_actors"] == 0 for r in pretrain[1:])
    assert 0.0 <= outcome.metrics["miou"] <= 1.0


@pytest.mark.slow
def test_scratch_baseline_starts_from_a_local_encoder_file(local_ray, tmp_path):
    """Strategy `none`: no pretraining; the encoder comes from the given file, untouched."""
    spec = tiny_spec(masking={"strategy": "none"}, finetune={"epochs": 1, "lr": 1e-12})
    weights = tmp_path / "encoder.pth"
    torch.manual_seed(5)
    encoder = build.segmentation_model(spec).encoder.state_dict()
    torch.save(encoder, weights)
    spec = tiny_spec(
        masking={"strategy": "none"},
        model={"encoder_weights": str(weights)},
        finetune={"epochs": 1, "lr": 1e-12},
    )
    outcome = run_trial(spec, storage_path=tmp_path / "storage", run_name="scratch")
    assert [r.phase for r in outcome.reports] == ["finetune"]
    assert outcome.metrics["transfer"] == "no pretraining"
    tuned = final_weights(outcome.checkpoint)
    conv = "encoder.conv1.weight"  # lr ~0: still the file's weights after one epoch
    torch.testing.assert_close(tuned[conv], encoder["conv1.weight"], rtol=0, atol=1e-6)
