"""Cross-pretraining (pretrain.data): a real in-process trial pretrains on one source and
fine-tunes on another, the splits and the checks follow, and sources that do not fit are refused."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from smsweep.checks import check_all, describe
from smsweep.cli import main
from smsweep.engines.trainloop import run_in_process
from smsweep.errors import SpecError
from smsweep.method.data import Source, SyntheticSource, TexturesSource
from smsweep.method.data.pretraining import open_pretrain_source, trial_splits
from smsweep.spec.load import validate_spec
from tests.test_robustness import tiny
from tests.test_sweep import write_spec

CROSS = {"source": "textures", "num_images": 30, "image_size": 32, "num_classes": 5}


@dataclass
class Recording:
    """A source that notes which images were loaded (in-process trials: one list)."""

    inner: Source
    loaded: list[int] = field(default_factory=list)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.inner.class_names

    def __len__(self) -> int:
        return len(self.inner)

    def has_mask(self, i: int) -> bool:
        return self.inner.has_mask(i)

    def load(self, i: int):
        self.loaded.append(i)
        return self.inner.load(i)

    def name(self, i: int) -> str:
        return self.inner.name(i)

    def official_split(self, i: int):
        return self.inner.official_split(i)


def test_pretraining_batches_and_scoring_read_the_other_source(tmp_path):
    spec = validate_spec(
        tiny(
            pretrain={"data": CROSS, "partitions": 3},
            masking={"strategy": "selective", "samples": 2},
            robustness={"enabled": False},
        )
    )
    assert spec.tracked()["pretrain.source"] == "cross"
    assert spec.tracked()["pretrain.data.source"] == "textures"
    finetuning = Recording(SyntheticSource(20, 32, num_classes=4, seed=spec.seed))
    pretraining = Recording(open_pretrain_source(spec))
    splits = trial_splits(spec, finetuning.inner, pretraining.inner)
    # Every image of the pretraining source pretrains; the fine-tuning split is as before.
    assert sorted(splits.pretrain) == list(range(30))
    assert trial_splits(validate_spec(tiny()), finetuning.inner).val == splits.val
    reports = run_in_process(spec, tmp_path, source=finetuning, pretrain_source=pretraining)
    # Pretraining (batches, galleries, selective scoring of partitions 1 and 2) read textures only;
    # fine-tuning and validation read the synthetic train and val images only.
    assert set(pretraining.loaded) == set(range(30))
    assert set(finetuning.loaded) <= set(splits.train) | set(splits.val)
    assert [r.metrics["scored_images"] for r in reports if "scored_images" in r.metrics] == [
        len(part) for part in splits.pretrain_partitions[1:]
    ]
    pretraining_image = pretraining.inner.load(splits.pretrain_partitions[0][0])[0]
    assert not any(
        np.array_equal(pretraining_image, finetuning.inner.load(i)[0]) for i in range(20)
    )
    assert reports[-1].phase == "finetune" and reports[-1].done


def test_a_generated_pretraining_source_of_the_same_kind_draws_new_images():
    spec = validate_spec(tiny(pretrain={"data": {"num_images": 20, "image_size": 32}}))
    own = SyntheticSource(20, 32, num_classes=5, seed=spec.seed)
    other = open_pretrain_source(spec)
    assert isinstance(other, SyntheticSource) and other.seed != spec.seed
    assert not np.array_equal(own.load(0)[0], other.load(0)[0])
    assert open_pretrain_source(validate_spec(tiny())) is None  # self-pretraining


def test_validate_names_the_pretraining_source(tmp_path):
    raw = tiny(pretrain={"data": CROSS})
    checked = check_all(write_spec(tmp_path, raw), [], capacity=(2, 0))
    assert isinstance(checked.source, SyntheticSource)
    assert "pretraining: cross, on textures (30 images)" in describe(checked)
    checked = check_all(write_spec(tmp_path, tiny()), [], capacity=(2, 0))
    assert "pretraining: self, on the 14 non-validation images of data" in describe(checked)


@pytest.mark.parametrize(
    ("cross", "expected"),
    [
        ({**CROSS, "image_size": 64}, "set pretrain.data.image_size: 32"),
        ({**CROSS, "num_images": 4}, "raise pretrain.data.num_images or lower"),
        ({"source": "folder", "image_size": 32}, "pretrain.data.path is required"),
        ({"source": "voc", "path": "x", "image_size": 32}, "set pretrain.data.num_classes: 21"),
        ({**CROSS, "sorce": "textures"}, "pretrain.data.source"),
    ],
)
def test_pretraining_sources_that_do_not_fit_are_refused_naming_the_fix(cross, expected):
    with pytest.raises(SpecError, match=expected.replace(".", r"\.")):
        validate_spec(tiny(pretrain={"data": cross, "partitions": 5}))


def test_a_pretraining_source_that_does_not_fit_exits_2(tmp_path, capsys):
    path = write_spec(tmp_path, tiny(pretrain={"data": {**CROSS, "image_size": 64}}))
    assert main(["validate", str(path)]) == 2
    assert "set pretrain.data.image_size: 32" in capsys.readouterr().err


def test_a_missing_pretraining_folder_exits_2(tmp_path, capsys):
    cross = {"source": "folder", "path": str(tmp_path / "nowhere"), "image_size": 32}
    path = write_spec(tmp_path, tiny(pretrain={"data": cross}))
    assert main(["validate", str(path)]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_textures_and_synthetic_both_give_three_channels():
    """What `channels` compatibility means here: every source loads RGB (S, S, 3)."""
    for source in (TexturesSource(2, 32), SyntheticSource(2, 32)):
        assert source.load(0)[0].shape == (32, 32, 3)
